"""The sync planner: what one run does, decided from the spec, the source and the table.

    target = inspect_target(client, "sales.orders")            # through the server
    watermark = committed_max(client, target, "UPDATED_AT")    # ditto, incremental only
    plan = plan_run(spec, source_columns, target, run=7, watermark=watermark)
    plan.since        # Since("UPDATED_AT", <max - lookback>): what to read
    plan.command(…)   # the DoPut command: replace | upsert | append, evolve, key

Decisions, in order:
- **full** (mode `full`, a forced resync, or an incremental sync whose table does not
  exist yet or lacks the cursor column): read everything and `replace` the table
  (staged, then swapped atomically by the server).
- **incremental**: the watermark is `max(cursor)` of the committed table, read through
  the server on every run and never stored anywhere else, so it cannot disagree with
  the data; rows at or after `watermark - lookback` are read and merged on the primary
  key (`upsert`: one transaction), so reading a window twice changes nothing. Without
  a primary key rows are appended, and only those strictly after the watermark are
  kept (re-reading would duplicate them; the lookback is ignored and the result says so).
- **key**: the spec's `primary_key`, else the source table's declared primary key
  (`declared`, from the extractor). The load folds rows sharing it to the one with the
  greatest cursor (`latest_by`; `on_duplicate_key: error` refuses them) and the table
  gets it as its PRIMARY KEY, with the source's NOT NULL columns (see
  `agentdata.duplicates` and `agentdata.table_constraints`, which the server applies).
- **NULL cursors** (`null_cursor`, incremental): `include` (the default with a key)
  reads `cursor >= bound OR cursor IS NULL`, so those rows are re-read and merged every
  run; `skip` leaves them out (`skip_nulls_of`, the first full read too) and `error`
  (the default without a key) fails the run; both count them with a query of their own.
- **deletes**: with `deletes: reconcile`, every `reconcile_every`-th run (counting from
  the first) also streams the source's keys and the server deletes rows whose key is
  gone. A full run needs no reconciliation: the swap already drops them.
- **schema**: each source column is compared with the table's by the rule the server's
  load applies too (`agentdata.schema_evolution.type_change`): new
  columns are added, wider ones widened, narrower ones loaded into the existing wider
  column (cast up, nothing lost), and columns the source dropped are kept and filled
  with NULL (a full run carries them as NULL columns, so the swap keeps them). Any other
  change is incompatible: the run fails naming the column, or with
  `on_incompatible: resync` it becomes a full reload that takes the source's schema.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.flight as fl

from agentdata.errors import InvalidArgument, NotFound
from agentdata.schema_evolution import (
    INCOMPATIBLE_REASON,
    TypeChange,
    normalize_duckdb_type,
    type_change,
)
from agentdata.sqlguard import parse_table_ref, quote_ident
from agentdata.syncs import SyncSpec
from workers.client import ServerClient, error_from_flight
from workers.sync.extract import Since, SourceConstraints, resolve_column
from workers.sync.types import SourceColumn, TargetColumn, arrow_type_of

STEP = "plan"
PutMode = Literal["replace", "upsert", "append"]


class IncompatibleSchema(InvalidArgument):
    """A source column changed type in a way the table cannot absorb."""

    def __init__(self, table: str, column: str, old: str, new: str) -> None:
        super().__init__(
            f"incompatible schema change on {table}.{column}: {old} -> {new} (not a widening); "
            "nothing was written (set on_incompatible: resync to reload the table instead)",
            detail={
                "reason": INCOMPATIBLE_REASON,
                "column": column,
                "old_type": old,
                "new_type": new,
            },
        )
        self.column = column


# -- the committed table, through the server ---------------------------------------------


@dataclass(frozen=True)
class TargetTable:
    """The committed table as the server shows it (nothing if it does not exist)."""

    name: str  # schema.table as the spec writes it
    exists: bool
    #: column name -> DuckDB type (DESCRIBE), in table order.
    columns: dict[str, str] = field(default_factory=dict)
    #: column name -> Arrow type the server streams it as (GetFlightInfo).
    arrow_types: dict[str, pa.DataType] = field(default_factory=dict)
    rows: int | None = None

    def column(self, name: str) -> str | None:
        """The table's spelling of column `name` (DuckDB names are case-insensitive)."""
        lower = name.lower()
        return next((c for c in self.columns if c.lower() == lower), None)


def inspect_target(client: ServerClient, target: str) -> TargetTable:
    """Whether `target` exists, its columns and types (a NotFound is "not yet")."""
    schema, table = parse_table_ref(target)
    flight = client.flight()
    try:
        info = flight.get_flight_info(
            fl.FlightDescriptor.for_path(schema, table), client.call_options(60)
        )
    except (fl.FlightError, pa.ArrowException) as e:
        error = error_from_flight(e)
        if isinstance(error, NotFound):
            return TargetTable(target, exists=False)
        raise error from None
    described = query_rows(client, f"DESCRIBE {quote_ident(schema)}.{quote_ident(table)}")
    columns = {str(r["column_name"]): str(r["column_type"]) for r in described}
    return TargetTable(
        target,
        exists=True,
        columns=columns,
        arrow_types={f.name: f.type for f in info.schema},
        rows=info.total_records if info.total_records >= 0 else None,
    )


def committed_max(client: ServerClient, target: TargetTable, column: str) -> Any:
    """`max(column)` of the committed table: the watermark (None for an empty table)."""
    schema, table = parse_table_ref(target.name)
    sql = (
        f"SELECT max({quote_ident(column)}) AS watermark "
        f"FROM {quote_ident(schema)}.{quote_ident(table)}"
    )
    rows = query_rows(client, sql)
    return rows[0]["watermark"] if rows else None


def query_rows(client: ServerClient, sql: str) -> list[dict[str, Any]]:
    """A small query's rows as dicts (used for DESCRIBE and the watermark only)."""
    flight = client.flight()
    try:
        info = flight.get_flight_info(
            fl.FlightDescriptor.for_command(sql.encode()), client.call_options(60)
        )
        table = flight.do_get(info.endpoints[0].ticket, client.call_options(60)).read_all()
    except (fl.FlightError, pa.ArrowException) as e:
        raise error_from_flight(e) from None
    return table.to_pylist()  # type: ignore[no-any-return]


# -- lookback ----------------------------------------------------------------------------

_UNITS = {
    **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], 1),
    **dict.fromkeys(["m", "min", "mins", "minute", "minutes"], 60),
    **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], 3600),
    **dict.fromkeys(["d", "day", "days"], 86400),
    **dict.fromkeys(["w", "week", "weeks"], 7 * 86400),
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_CLOCK = re.compile(r"^\s*(\d+):(\d{2})(?::(\d{2}(?:\.\d+)?))?\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """`"1 hour"`, `"15m"`, `"2 days"`, `"01:30:00"` or a number of seconds, as a timedelta."""
    stripped = text.strip().lower()
    try:
        return dt.timedelta(seconds=float(stripped))
    except ValueError:
        pass
    m = _DURATION.match(stripped)
    if m and m.group(2) in _UNITS:
        return dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    m = _CLOCK.match(stripped)
    if m:
        return dt.timedelta(
            hours=int(m.group(1)), minutes=int(m.group(2)), seconds=float(m.group(3) or 0)
        )
    raise InvalidArgument(
        f"lookback {text!r} is not a duration (e.g. '1 hour', '15m', '2 days', '01:30:00')"
    )


def lower_bound(watermark: Any, lookback: str | int | float | None, *, cursor: str) -> Any:
    """The incremental bound: `watermark - lookback`, in the watermark's own type.

    Time cursors take a duration; numeric cursors a number (in the cursor's units);
    other cursors (text) no lookback at all.
    """
    if lookback is None or lookback == "" or lookback == 0:
        return watermark
    if isinstance(watermark, dt.datetime):
        return watermark - _as_duration(lookback)
    if isinstance(watermark, dt.date):
        moment = dt.datetime.combine(watermark, dt.time()) - _as_duration(lookback)
        return moment.date()
    if isinstance(watermark, bool):
        raise InvalidArgument(f"cursor {cursor!r} is BOOLEAN, which cannot be a cursor")
    if isinstance(watermark, int | float | decimal.Decimal):
        amount = _as_number(lookback, cursor)
        if isinstance(watermark, decimal.Decimal):
            return watermark - decimal.Decimal(str(amount))
        if isinstance(watermark, int) and float(amount).is_integer():
            return watermark - int(amount)
        return watermark - amount
    raise InvalidArgument(
        f"cursor {cursor!r} holds {type(watermark).__name__} values: a lookback needs a "
        "time or numeric cursor"
    )


def _as_duration(lookback: str | int | float) -> dt.timedelta:
    if isinstance(lookback, int | float):
        return dt.timedelta(seconds=float(lookback))
    return parse_duration(lookback)


def _as_number(lookback: str | int | float, cursor: str) -> int | float:
    if isinstance(lookback, int | float):
        return lookback
    try:
        number = float(lookback)
    except ValueError:
        raise InvalidArgument(
            f"cursor {cursor!r} is numeric: lookback must be a number, not {lookback!r}"
        ) from None
    return int(number) if number.is_integer() else number


# -- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NullCursor:
    """An incremental sync's rule for rows whose cursor is NULL (`null_cursor`)."""

    column: str
    policy: Literal["include", "skip", "error"]
    #: False when Snowflake declares the cursor NOT NULL: nothing to count then.
    nullable: bool = True


@dataclass(frozen=True)
class Plan:
    """What one run does; `command()` is its DoPut command."""

    mode: Literal["full", "incremental"]
    put_mode: PutMode
    key: tuple[str, ...] = ()
    #: Read rows whose cursor is at or after this bound (None: read everything).
    since: Since | None = None
    #: Append without a key: keep only rows whose cursor is strictly after this value.
    after: Since | None = None
    watermark: Any = None
    reconcile: bool = False
    #: Why a run became a full reload (incompatible schema, missing table, forced).
    resync_reason: str | None = None
    #: Narrower source columns loaded into the table's wider type: name -> Arrow type.
    casts: dict[str, pa.DataType] = field(default_factory=dict)
    #: Full runs: the column order of the new table, and the dropped columns it keeps
    #: (filled with NULL): name -> Arrow type.
    layout: tuple[str, ...] = ()
    keep: dict[str, pa.DataType] = field(default_factory=dict)
    #: Predicted schema changes {"added", "widened", "missing"} (the server reports the
    #: actual ones for merges).
    changes: dict[str, list[str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Where the key came from: the spec's primary_key, or the source table's own.
    key_from: Literal["spec", "source"] | None = None
    #: Among rows sharing a key, the one with the greatest value here wins (the cursor).
    latest_by: str | None = None
    on_duplicate_key: Literal["fold", "error"] = "fold"
    #: Source columns Snowflake declares NOT NULL: NOT NULL in the table too.
    not_null: tuple[str, ...] = ()
    #: Incremental syncs: what happens to rows whose cursor is NULL.
    null_cursor: NullCursor | None = None

    @property
    def evolve(self) -> bool:
        return self.put_mode != "replace"

    @property
    def skip_nulls_of(self) -> str | None:
        """The cursor column whose NULL rows the extraction leaves out (`skip`)."""
        nc = self.null_cursor
        return nc.column if nc is not None and nc.policy == "skip" and nc.nullable else None

    def command(self, table: str, snapshot: str | None) -> dict[str, Any]:
        """The server's DoPut command JSON for the data load: the mode, the key rows
        are folded on (and the table's PRIMARY KEY), its NOT NULL columns."""
        command: dict[str, Any] = {
            "table": table,
            "mode": self.put_mode,
            "evolve": self.evolve,
            "primary_key": list(self.key),
            "not_null": list(self.not_null),
            "on_duplicate_key": self.on_duplicate_key,
        }
        if self.put_mode == "upsert":
            command["key"] = list(self.key)
        if self.latest_by is not None and self.key:
            command["latest_by"] = self.latest_by
        if snapshot:
            command["snapshot"] = snapshot
        return command

    def describe(self) -> dict[str, Any]:
        """The plan as the job result shows it."""
        out: dict[str, Any] = {"mode": self.mode, "load": self.put_mode}
        if self.key:
            out["key"] = list(self.key)
            out["key_from"] = self.key_from
        if self.watermark is not None:
            out["watermark"] = _jsonable(self.watermark)
        if self.since is not None:
            out["since"] = {"column": self.since.column, "value": _jsonable(self.since.value)}
            if self.since.nulls:
                out["since"]["or_null"] = True
        if self.after is not None:
            out["after"] = {"column": self.after.column, "value": _jsonable(self.after.value)}
        out["reconcile"] = self.reconcile
        if self.resync_reason:
            out["resync_reason"] = self.resync_reason
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def plan_run(
    spec: SyncSpec,
    source: Sequence[TargetColumn],
    target: TargetTable,
    *,
    run: int,
    watermark: Any = None,
    force_full: bool = False,
    declared: SourceConstraints | None = None,
) -> Plan:
    """Decide one run (see the module docstring). Raises `IncompatibleSchema` or
    `InvalidArgument` (a cursor or key column the source lacks, a bad lookback, a
    `null_cursor` that cannot apply). `declared` is what Snowflake says of the source
    table (primary key, NOT NULL columns)."""
    declared = declared or SourceConstraints()
    columns = [t.source for t in source]
    names = {c.name for c in columns}
    key = tuple(_resolve(name, columns, spec) for name in spec.primary_key or ())
    key_from: Literal["spec", "source"] | None = "spec" if key else None
    if not key and declared.primary_key and set(declared.primary_key) <= names:
        key, key_from = declared.primary_key, "source"
    cursor = _resolve(spec.cursor, columns, spec) if spec.mode == "incremental" else None
    schema = _compare(spec, source, target)
    not_null = tuple(c.name for c in columns if c.name in declared.not_null or not c.nullable)
    null_cursor = _null_cursor(spec, cursor, key, columns, declared)
    # Rows sharing a key: the latest by the cursor wins (ties: the last read).
    common: dict[str, Any] = {
        "key_from": key_from,
        "latest_by": cursor if key else None,
        "on_duplicate_key": spec.on_duplicate_key,
        "not_null": not_null,
        "null_cursor": null_cursor,
    }

    def full(reason: str | None, notes: tuple[str, ...] = ()) -> Plan:
        if schema.incompatible and reason is None:
            name, old, new = schema.incompatible[0]
            raise IncompatibleSchema(spec.target, name, old, new)
        if schema.incompatible or not target.exists:
            # A fresh table: exactly the source.
            return Plan("full", "replace", key, resync_reason=reason, notes=notes, **common)
        return Plan(
            "full",
            "replace",
            key,
            resync_reason=reason,
            casts=schema.casts,
            layout=schema.layout,
            keep=schema.keep,
            changes=schema.changes,
            notes=notes,
            **common,
        )

    if schema.incompatible and spec.on_incompatible == "resync":
        name, old, new = schema.incompatible[0]
        return full(f"incompatible schema change on {spec.target}.{name}: {old} -> {new}")
    if force_full:
        return full("a full run was requested")
    if spec.mode == "full":
        return full(None)
    assert cursor is not None
    if not target.exists:
        return full("first run: the table does not exist yet")
    if target.column(cursor) is None:
        return full(f"the table has no column {cursor!r} to derive the watermark from")
    if schema.incompatible:
        name, old, new = schema.incompatible[0]
        raise IncompatibleSchema(spec.target, name, old, new)

    notes: list[str] = []
    reconcile = spec.deletes == "reconcile" and run % spec.reconcile_every == 0
    since = after = None
    if watermark is not None:
        if key:
            since = Since(
                cursor,
                lower_bound(watermark, spec.lookback, cursor=cursor),
                # NULL-cursor rows are never after any bound: read them every run.
                nulls=null_cursor is not None
                and null_cursor.policy == "include"
                and null_cursor.nullable,
            )
        else:
            # Re-reading a window would duplicate rows that have no key to merge on.
            since, after = Since(cursor, watermark), Since(cursor, watermark)
            if spec.lookback:
                notes.append("lookback ignored: without a primary_key rows are appended")
    else:
        notes.append("the table is empty: reading the whole source")
    return Plan(
        "incremental",
        "upsert" if key else "append",
        key,
        since=since,
        after=after,
        watermark=watermark,
        reconcile=reconcile,
        casts=schema.casts,
        changes=schema.changes,
        notes=tuple(notes),
        **common,
    )


def _null_cursor(
    spec: SyncSpec,
    cursor: str | None,
    key: tuple[str, ...],
    columns: Sequence[SourceColumn],
    declared: SourceConstraints,
) -> NullCursor | None:
    """The NULL-cursor rule of an incremental spec: its `null_cursor`, by default
    `include` with a key (re-read and merged every run) and `error` without (an append
    could only re-add them each run)."""
    if cursor is None:
        return None
    policy = spec.null_cursor or ("include" if key else "error")
    if policy == "include" and not key:
        raise InvalidArgument(
            f"null_cursor: include re-reads rows whose cursor {cursor} is NULL on every run "
            "and needs a key to merge them on: give a primary_key, or choose skip or error"
        )
    column = next(c for c in columns if c.name == cursor)
    nullable = column.nullable and cursor not in declared.not_null
    return NullCursor(cursor, policy, nullable)


def _resolve(name: str | None, columns: Sequence[SourceColumn], spec: SyncSpec) -> str:
    assert name is not None
    from workers.sync.extract import TerminalSourceError

    try:
        return resolve_column(name, columns, source=spec.source)
    except TerminalSourceError as e:
        raise InvalidArgument(e.message.removeprefix("extract: ")) from None


@dataclass
class _SchemaDiff:
    casts: dict[str, pa.DataType] = field(default_factory=dict)
    keep: dict[str, pa.DataType] = field(default_factory=dict)
    layout: tuple[str, ...] = ()
    incompatible: list[tuple[str, str, str]] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)


def _compare(spec: SyncSpec, source: Sequence[TargetColumn], target: TargetTable) -> _SchemaDiff:
    diff = _SchemaDiff()
    if not target.exists:
        return diff
    added: list[str] = []
    widened: list[str] = []
    seen: set[str] = set()
    by_table_name: dict[str, str] = {}
    for column in source:
        existing = target.column(column.name)
        if existing is None:
            added.append(column.name)
            continue
        seen.add(existing)
        by_table_name[existing] = column.name
        old = target.columns[existing]
        change = type_change(old, column.duckdb_type)
        if change is TypeChange.WIDENING:
            widened.append(column.name)
        elif change is TypeChange.NARROWING:
            arrow = arrow_type_of(old, target.arrow_types.get(existing))
            if arrow is None:
                diff.incompatible.append((existing, old, column.duckdb_type))
            else:
                diff.casts[column.name] = arrow
        elif change is TypeChange.INCOMPATIBLE:
            diff.incompatible.append((existing, normalize_duckdb_type(old), column.duckdb_type))
    missing = [c for c in target.columns if c not in seen]
    for name in missing:
        arrow = arrow_type_of(target.columns[name], target.arrow_types.get(name))
        diff.keep[name] = arrow if arrow is not None else pa.string()
    diff.layout = tuple(by_table_name.get(c, c) for c in target.columns) + tuple(added)
    diff.changes = {"added": added, "widened": widened, "missing": missing}
    return diff


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value
