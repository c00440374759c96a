"""One row per key: what a load does with staged rows that share a key.

    folded = fold(cur, "temp.stage_x", key=("ID",), latest_by="UPDATED_AT", on_duplicate="fold")
    folded.stage      # the staged rows, one per key (a new temp table when any were folded)
    folded.count      # how many rows were dropped

The rule, the same for every load (DoPut upsert/replace/reconcile, syncs): among rows
with the same key, the one kept is the one with the greatest `latest_by` value (a NULL
counts as less than any value), and among equals the one that came last in the upload.
Without `latest_by` that is simply the last one: a later row is a later version. With
`on_duplicate="error"` the load is refused instead, naming one repeated key, and nothing
is written.

It runs on the call's own cursor, before the writer lock is taken: one aggregate over
the staged rows when nothing repeats (the usual case), a window pass when something does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import duckdb

from agentdata.errors import InvalidArgument
from agentdata.names import quote_ident

OnDuplicate = Literal["fold", "error"]
POLICIES: tuple[OnDuplicate, ...] = ("fold", "error")


@dataclass(frozen=True)
class Folded:
    stage: str  # where the load's rows are now, one per key
    count: int  # rows dropped because a later (or newer) row had the same key


def fold(
    cur: duckdb.DuckDBPyConnection,
    stage: str,
    *,
    key: tuple[str, ...],
    latest_by: str | None = None,
    on_duplicate: OnDuplicate = "fold",
    what: str = "the upload",
) -> Folded:
    """Reduce `stage` (a temp table, in upload order) to one row per `key`."""
    keys = ", ".join(quote_ident(k) for k in key)
    total, distinct = cur.execute(
        f"SELECT (SELECT count(*) FROM {stage}),"
        f" (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {stage}))"
    ).fetchall()[0]
    extra = int(total) - int(distinct)
    if extra == 0:
        return Folded(stage, 0)
    if on_duplicate == "error":
        sample = cur.execute(
            f"SELECT {keys}, count(*) AS __n FROM {stage} GROUP BY {keys}"
            f" HAVING count(*) > 1 ORDER BY __n DESC LIMIT 1"
        ).fetchall()[0]
        values = dict(zip(key, sample[:-1], strict=True))
        shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
        raise InvalidArgument(
            f"{what} has {extra} row(s) repeating a key, e.g. {shown} ({sample[-1]} rows); "
            "nothing was written (on_duplicate_key is 'error'; 'fold' keeps the latest row per key)",
            detail={
                "reason": "duplicate_key",
                "key": {k: _show(v) for k, v in values.items()},
                "duplicates": extra,
            },
        )
    order = f"{quote_ident(latest_by)} DESC NULLS LAST, rowid DESC" if latest_by else "rowid DESC"
    folded = f"temp.stage_{uuid.uuid4().hex}"
    # The staged table keeps upload order (insertion order is preserved), so its rowid
    # is the position in the upload: the tie-breaker "last one read".
    cur.execute(
        f"CREATE TEMP TABLE {folded.removeprefix('temp.')} AS SELECT * FROM {stage}"
        f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"
    )
    return Folded(folded, extra)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 200 else text[:200] + "..."
