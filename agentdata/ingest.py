"""Atomic loads of Arrow streams into tables (DoPut, syncs, Flight SQL ingest).

Recipe, the same for every mode:
1. stage: the incoming stream is copied into a TEMP table on the call's own cursor,
   batch by batch, outside the writer lock (a slow client blocks nobody; a client
   that drops mid-upload fails this step, and only the temp table existed);
2. apply: under the serialised writer, in ONE transaction on that same cursor, the
   staged rows replace the table (`replace`), are appended (`append`), or are merged
   on a key (`upsert`: delete matching keys, insert all staged rows).
Readers that started before the commit finish on the old snapshot (DuckDB MVCC).
Columns are matched by name, so a stream may carry them in any order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import duckdb
import pyarrow as pa

from agentdata import schema_evolution
from agentdata.engine import Engine, translate_errors
from agentdata.errors import Cancelled, InvalidArgument, NotFound, PermissionDenied
from agentdata.sqlguard import parse_table_ref, quote_ident
from agentdata.tokens import Principal


class IngestMode(StrEnum):
    APPEND = "append"
    REPLACE = "replace"
    UPSERT = "upsert"
    #: The upload is the full set of keys at the source: delete table rows whose key
    #: is not among them (delete reconciliation for syncs). Nothing is inserted.
    RECONCILE = "reconcile"


@dataclass(frozen=True)
class IngestRequest:
    """Where and how to load: `schema.table`, mode, and the merge key for upsert."""

    table: str
    mode: IngestMode = IngestMode.APPEND
    key: tuple[str, ...] = ()
    evolve: bool = False  # absorb added / widened columns (see agentdata.schema_evolution)
    snapshot: str | None = None  # set by syncs: the source snapshot this load came from

    @classmethod
    def parse(
        cls,
        table: str,
        mode: str = "append",
        key: list[str] | None = None,
        *,
        evolve: bool = False,
        snapshot: str | None = None,
    ) -> IngestRequest:
        """Validate user input into a request (InvalidArgument on anything off)."""
        try:
            mode_v = IngestMode(mode)
        except ValueError:
            raise InvalidArgument(
                f"mode must be append, replace or upsert (got {mode!r})"
            ) from None
        if key is not None and (
            not isinstance(key, list) or not all(isinstance(k, str) and k for k in key)
        ):
            raise InvalidArgument("key must be a list of column names")
        if mode_v in (IngestMode.UPSERT, IngestMode.RECONCILE) and not key:
            raise InvalidArgument(f"{mode_v.value} needs a non-empty 'key' (list of column names)")
        if not isinstance(evolve, bool):
            raise InvalidArgument("evolve must be true or false")
        if snapshot is not None and not isinstance(snapshot, str):
            raise InvalidArgument("snapshot must be a string")
        parse_table_ref(table)
        return cls(table=table, mode=mode_v, key=tuple(key or ()), evolve=evolve, snapshot=snapshot)


@dataclass(frozen=True)
class IngestResult:
    table: str
    rows: int  # rows uploaded (for reconcile: keys uploaded)
    created: bool
    deleted: int = 0  # rows removed by upsert replacement or reconciliation
    schema_changes: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.table,
            "rows": self.rows,
            "created": self.created,
            "deleted": self.deleted,
            "schema_changes": self.schema_changes,
        }


def ingest(
    engine: Engine,
    principal: Principal,
    request: IngestRequest,
    reader: pa.RecordBatchReader,
    *,
    is_cancelled: Callable[[], bool] | None = None,
) -> IngestResult:
    """Load `reader` into `request.table` atomically; returns the rows written.

    `is_cancelled` (the RPC's "client went away") is checked once the stream ends:
    a client that dies mid-upload can look like a clean end of stream to the reader,
    and its partial rows must not be applied.
    """
    principal.require_writer()
    schema, table = parse_table_ref(request.table)
    qualified = f"{schema}.{table}".lower()
    if not principal.can_read_table(qualified):
        raise PermissionDenied(f"token may not access table(s): {qualified}")
    target = f"{quote_ident(schema)}.{quote_ident(table)}"
    stage = f"stage_{uuid.uuid4().hex}"
    cur = engine.cursor()
    try:
        with translate_errors():
            cur.register("incoming", reader)
            cur.execute(f"CREATE TEMP TABLE {stage} AS SELECT * FROM incoming")
            cur.unregister("incoming")
            staged = int(cur.execute(f"SELECT count(*) FROM temp.{stage}").fetchall()[0][0])  # type: ignore[index]
            columns = [r[0] for r in cur.execute(f"DESCRIBE temp.{stage}").fetchall()]
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("the client went away before finishing the upload; nothing was written")
        missing_key = [k for k in request.key if k not in columns]
        if missing_key:
            raise InvalidArgument(
                f"key column(s) not in the uploaded data: {', '.join(missing_key)}"
            )
        with engine.writer(cur) as w:
            exists = w.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2",
                [schema, table],
            ).fetchall()[0][0]
            changes: dict[str, list[str]] = {}
            deleted = 0
            if request.mode is IngestMode.RECONCILE:
                if not exists:
                    raise NotFound(f"no table {qualified} to reconcile")
                deleted = _count(
                    w,
                    f"DELETE FROM {target} WHERE NOT EXISTS (SELECT 1 FROM temp.{stage} AS s WHERE {_match(target, request.key)})",
                )
            elif not exists or request.mode is IngestMode.REPLACE:
                w.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                w.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM temp.{stage}")
            else:
                if request.evolve:
                    changes = _evolve(w, target, qualified, stage)
                if request.mode is IngestMode.UPSERT:
                    deleted = _count(
                        w,
                        f"DELETE FROM {target} USING temp.{stage} AS s WHERE {_match(target, request.key)}",
                    )
                w.execute(f"INSERT INTO {target} BY NAME SELECT * FROM temp.{stage}")
    finally:
        try:
            cur.execute(f"DROP TABLE IF EXISTS temp.{stage}")
        except duckdb.Error:
            pass
        cur.close()
    engine.touch_tables({qualified}, synced=request.snapshot is not None, snapshot=request.snapshot)
    return IngestResult(
        table=qualified, rows=staged, created=not exists, deleted=deleted, schema_changes=changes
    )


def _match(target: str, key: tuple[str, ...]) -> str:
    return " AND ".join(f"{target}.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)


def _count(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = cur.execute(sql).fetchall()
    return int(rows[0][0]) if rows else 0


def _columns(cur: duckdb.DuckDBPyConnection, ref: str) -> dict[str, str]:
    return {r[0]: r[1] for r in cur.execute(f"DESCRIBE {ref}").fetchall()}


def _evolve(
    cur: duckdb.DuckDBPyConnection, target: str, qualified: str, stage: str
) -> dict[str, list[str]]:
    """Add and widen columns inside the load's transaction; refuse incompatible changes."""
    plan = schema_evolution.plan(_columns(cur, target), _columns(cur, f"temp.{stage}"))
    if plan.incompatible:
        name, old, new = plan.incompatible[0]
        raise InvalidArgument(
            f"incompatible schema change on {qualified}.{name}: {old} -> {new} (not a widening); "
            "nothing was written",
            detail={
                "column": name,
                "old_type": old,
                "new_type": new,
                "reason": "incompatible_schema",
            },
        )
    for name, type_ in plan.added:
        cur.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {type_}")
    for name, _old, new in plan.widened:
        cur.execute(f"ALTER TABLE {target} ALTER COLUMN {quote_ident(name)} TYPE {new}")
    return plan.summary()
