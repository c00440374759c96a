"""Atomic loads of Arrow streams into tables (DoPut, syncs, Flight SQL ingest).

Recipe, the same for every mode:
1. stage: the incoming stream is copied into a TEMP table on the call's own cursor,
   batch by batch, outside the writer lock (a slow client blocks nobody; a client
   that drops mid-upload fails this step, and only the temp table existed);
2. one row per key: with a key (upsert, reconcile, or a `primary_key`), staged rows
   that repeat a key are folded to the latest one, or refused (`agentdata.duplicates`),
   still outside the lock;
3. apply: under the serialised writer, in ONE transaction on that same cursor, the
   staged rows replace the table (`replace`), are appended (`append`), or are merged
   on a key (`upsert`: delete matching keys, insert all staged rows). Requested
   constraints (`primary_key`, `not_null`) are created with a new table, or brought
   to an existing one, in that transaction (`agentdata.table_constraints`); a load
   that would break one fails there and nothing is written.
Readers that started before the commit finish on the old snapshot (DuckDB MVCC).
Columns are matched by name, so a stream may carry them in any order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

import duckdb
import pyarrow as pa

from agentdata import (
    descriptions,
    duplicates,
    governed_writes,
    schema_evolution,
    table_constraints,
)
from agentdata.duplicates import OnDuplicate
from agentdata.engine import Engine, translate_errors
from agentdata.errors import Cancelled, InvalidArgument, NotFound, PermissionDenied
from agentdata.sqlguard import parse_table_ref, quote_ident
from agentdata.table_constraints import Constraints
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
    """Where and how to load: `schema.table`, mode, the merge key for upsert, and how
    rows sharing a key and constraints are handled."""

    table: str
    mode: IngestMode = IngestMode.APPEND
    key: tuple[str, ...] = ()
    evolve: bool = False  # absorb added / widened columns (see agentdata.schema_evolution)
    snapshot: str | None = None  # set by syncs: the source snapshot this load came from
    #: Among rows sharing a key, keep the one with the greatest value of this column.
    latest_by: str | None = None
    on_duplicate_key: OnDuplicate = "fold"
    constraints: Constraints = field(default_factory=Constraints)
    #: Words for the table and its columns from the source (a sync: Snowflake comments),
    #: kept where no description is set yet (agentdata.descriptions.fill).
    description: str | None = None
    column_descriptions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(
        cls,
        table: str,
        mode: str = "append",
        key: list[str] | None = None,
        *,
        evolve: bool = False,
        snapshot: str | None = None,
        latest_by: str | None = None,
        on_duplicate_key: str | None = None,
        primary_key: list[str] | None = None,
        not_null: list[str] | None = None,
        descriptions: dict[str, object] | None = None,
    ) -> IngestRequest:
        """Validate user input into a request (InvalidArgument on anything off)."""
        try:
            mode_v = IngestMode(mode)
        except ValueError:
            raise InvalidArgument(
                f"mode must be append, replace, upsert or reconcile (got {mode!r})"
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
        if latest_by is not None and (not isinstance(latest_by, str) or not latest_by):
            raise InvalidArgument("latest_by must be a column name")
        policy = on_duplicate_key or "fold"
        if policy not in duplicates.POLICIES:
            raise InvalidArgument(
                f"on_duplicate_key must be {' or '.join(duplicates.POLICIES)} (got {policy!r})"
            )
        constraints = table_constraints.parse(primary_key, not_null)
        parse_table_ref(table)
        described, column_words = _parse_descriptions(descriptions)
        return cls(
            table=table,
            mode=mode_v,
            key=tuple(key or ()),
            evolve=evolve,
            snapshot=snapshot,
            latest_by=latest_by,
            on_duplicate_key=policy,
            constraints=constraints,
            description=described,
            column_descriptions=column_words,
        )

    @property
    def unique_key(self) -> tuple[str, ...]:
        """The key rows are folded on: the merge key, else the requested primary key."""
        return self.key or self.constraints.primary_key or ()


@dataclass(frozen=True)
class IngestResult:
    table: str
    rows: int  # rows uploaded (for reconcile: keys uploaded)
    created: bool
    deleted: int = 0  # rows removed by upsert replacement or reconciliation
    schema_changes: dict[str, list[str]] = field(default_factory=dict)
    #: Uploaded rows dropped because a later row had the same key (one row per key).
    duplicates_folded: int = 0
    #: The table's constraints after the load, when the load asked for some.
    constraints: dict[str, list[str]] | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "table": self.table,
            "rows": self.rows,
            "created": self.created,
            "deleted": self.deleted,
            "schema_changes": self.schema_changes,
            "duplicates_folded": self.duplicates_folded,
        }
        if self.constraints is not None:
            out["constraints"] = self.constraints
        return out


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
    stages = [f"temp.stage_{uuid.uuid4().hex}"]
    cur = engine.cursor()
    try:
        with translate_errors():
            cur.register("incoming", reader)
            cur.execute(
                f"CREATE TEMP TABLE {stages[0].removeprefix('temp.')} AS SELECT * FROM incoming"
            )
            cur.unregister("incoming")
            staged = int(cur.execute(f"SELECT count(*) FROM {stages[0]}").fetchall()[0][0])
            stage_types = _columns(cur, stages[0])
        columns = list(stage_types)
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("the client went away before finishing the upload; nothing was written")
        _require_columns(request, columns)
        folded = 0
        if request.unique_key:
            with translate_errors():
                result = duplicates.fold(
                    cur,
                    stages[0],
                    key=request.unique_key,
                    latest_by=request.latest_by,
                    on_duplicate=request.on_duplicate_key,
                )
            folded = result.count
            if result.stage != stages[0]:
                stages.append(result.stage)
        stage = stages[-1]
        governed_writes.check_ingest(
            cur,
            principal,
            schema,
            table,
            stage,
            plain_append=request.mode is IngestMode.APPEND
            and not request.evolve
            and not request.constraints.requested,
        )
        with _constraint_errors(qualified), engine.writer(cur) as w:
            exists = w.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2",
                [schema, table],
            ).fetchall()[0][0]
            changes: dict[str, list[str]] = {}
            deleted = 0
            wanted = request.constraints
            if request.mode is IngestMode.RECONCILE:
                if not exists:
                    raise NotFound(f"no table {qualified} to reconcile")
                deleted = _count(
                    w,
                    f"DELETE FROM {target} WHERE NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {_match(target, request.key)})",
                )
            elif not exists or request.mode is IngestMode.REPLACE:
                w.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                if wanted.requested:
                    # Constraints need a table defined column by column (CTAS has none).
                    table_constraints.create_filled(
                        w, target, stage_types, wanted, stage, replace=True
                    )
                else:
                    w.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {stage}")
            else:
                widen: dict[str, str] = {}
                if request.evolve:
                    changes, widen = _evolve(w, target, qualified, stage)
                if wanted.requested or widen:
                    constraint_changes = table_constraints.bring_to(
                        w, schema, table, wanted, retype=widen
                    )
                    if constraint_changes:
                        changes = {**changes, "constraints": _flatten(constraint_changes)}
                if request.mode is IngestMode.UPSERT:
                    deleted = _count(
                        w,
                        f"DELETE FROM {target} USING {stage} AS s WHERE {_match(target, request.key)}",
                    )
                w.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {stage}")
            enforced = (
                table_constraints.read(w, schema, table).to_dict()
                if wanted.requested and request.mode is not IngestMode.RECONCILE
                else None
            )
    finally:
        for name in stages:
            try:
                cur.execute(f"DROP TABLE IF EXISTS {name}")
            except duckdb.Error:
                pass
        cur.close()
    engine.touch_tables({qualified}, synced=request.snapshot is not None, snapshot=request.snapshot)
    if request.description or request.column_descriptions:
        descriptions.fill(
            engine.meta,
            qualified,
            table=request.description,
            columns=dict(request.column_descriptions),
        )
    return IngestResult(
        table=qualified,
        rows=staged,
        created=not exists,
        deleted=deleted,
        schema_changes=changes,
        duplicates_folded=folded,
        constraints=enforced,
    )


def _parse_descriptions(
    doc: dict[str, object] | None,
) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """`{"table": "...", "columns": {"name": "..."}}` -> (table words, column words)."""
    if doc is None:
        return None, ()
    if not isinstance(doc, dict) or set(doc) - {"table", "columns"}:
        raise InvalidArgument('descriptions must be {"table": "...", "columns": {"name": "..."}}')
    table = doc.get("table")
    columns = doc.get("columns") or {}
    if table is not None and not isinstance(table, str):
        raise InvalidArgument("descriptions.table must be a string")
    if not isinstance(columns, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise InvalidArgument("descriptions.columns must map column names to strings")
    return table, tuple(sorted(columns.items()))


@contextmanager
def _constraint_errors(qualified: str) -> Iterator[None]:
    """A load refused by one of the table's constraints says so, and that nothing was
    written (the transaction rolled back)."""
    try:
        yield
    except InvalidArgument as e:
        if not isinstance(e.__cause__, duckdb.ConstraintException):
            raise
        # A rebuild's scratch table is the same table to the user.
        message = re.sub(r"__agentdata_rebuild_[0-9a-f]+", qualified.split(".", 1)[1], e.message)
        raise InvalidArgument(
            f"the load into {qualified} breaks a constraint of the table ({message}); "
            "nothing was written",
            detail={"reason": "constraint"},
        ) from e.__cause__


def _require_columns(request: IngestRequest, columns: list[str]) -> None:
    missing_key = [k for k in request.key if k not in columns]
    if missing_key:
        raise InvalidArgument(f"key column(s) not in the uploaded data: {', '.join(missing_key)}")
    if request.latest_by is not None and request.latest_by not in columns:
        raise InvalidArgument(f"latest_by column {request.latest_by!r} is not in the uploaded data")
    if request.mode is not IngestMode.RECONCILE:
        table_constraints.check_columns(request.constraints, columns, "the uploaded data")


def _match(target: str, key: tuple[str, ...]) -> str:
    return " AND ".join(f"{target}.{quote_ident(k)} = s.{quote_ident(k)}" for k in key)


def _count(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = cur.execute(sql).fetchall()
    return int(rows[0][0]) if rows else 0


def _columns(cur: duckdb.DuckDBPyConnection, ref: str) -> dict[str, str]:
    return {r[0]: r[1] for r in cur.execute(f"DESCRIBE {ref}").fetchall()}


def _flatten(changes: dict[str, list[str]]) -> list[str]:
    return [f"{kind}: {', '.join(names)}" for kind, names in changes.items()]


def _evolve(
    cur: duckdb.DuckDBPyConnection, target: str, qualified: str, stage: str
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Add columns inside the load's transaction and say which to widen (column -> new
    type; `table_constraints.bring_to` applies them, rebuilding the table when a key
    column widens); refuse incompatible changes."""
    plan = schema_evolution.plan(_columns(cur, target), _columns(cur, stage))
    if plan.incompatible:
        name, old, new = plan.incompatible[0]
        raise InvalidArgument(
            f"incompatible schema change on {qualified}.{name}: {old} -> {new} (not a widening); "
            "nothing was written",
            detail={
                "column": name,
                "old_type": old,
                "new_type": new,
                "reason": schema_evolution.INCOMPATIBLE_REASON,
            },
        )
    for name, type_ in plan.added:
        cur.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {type_}")
    widen = {name: new for name, _old, new in plan.widened}
    return plan.summary(), widen
