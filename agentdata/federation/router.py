"""Routing a checked read: DuckDB alone, Snowflake alone, or both.

The engine calls `Federation.open` once per read, after the guard approved the
statement (allow-list, functions, read-only) and before anything runs:

- no remote table read: None, and the engine runs the statement in DuckDB as always;
- only remote tables (and no placeholders): the statement is translated whole to
  Snowflake's dialect (`translate.whole_query`) and Snowflake's Arrow chunks are
  streamed back, cast batch by batch to the schema DuckDB binds for the same statement
  on the placeholder tables, so a result has the same column names and types whether
  the table is synced or federated (`agentdata.engine` = `snowflake`);
- local and remote tables (or a statement that does not translate): each remote
  reference becomes a Snowflake scan with projection and filter pushdown
  (`translate.plan_scans`), registered on the request's READ ONLY cursor as an Arrow
  stream, and DuckDB runs the statement over them (`agentdata.engine` = `mixed`); the
  join spills to the temp directory under the memory limit like any other. A remote
  table over `max_unfiltered_rows` that such a query would read without any pushed
  condition is refused before anything is sent, naming the table and a filter.

Limits: `limit` (the token's max_rows + 1) is pushed into a whole query; the engine
applies max_rows, timeouts and cancellation to the stream as for any other, and each
stop also aborts the Snowflake statements (`RunningQuery.on_stop`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from agentdata import metrics, sql_tree, sqlguard
from agentdata.errors import (
    AgentdataError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from agentdata.federation import translate
from agentdata.federation.catalog import Described, RemoteCatalog, RemoteColumn, RemoteTable
from agentdata.federation.snowflake import RemoteQuery, SnowflakePool, SnowflakeSide
from agentdata.json_columns import as_json_extension, json_schema
from agentdata.meta import MetaStore
from agentdata.sqlguard import CheckedStatement, Kind
from agentdata.tokens import Principal

if TYPE_CHECKING:
    from agentdata.engine import Engine, RunningQuery, TableInfo

log = logging.getLogger("agentdata.federation")

ENGINE_KEY = b"agentdata.engine"
QUERY_ID_KEY = b"agentdata.snowflake_query_id"
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")


class Federation:
    """Remote tables and the router; one per engine."""

    def __init__(
        self,
        meta: MetaStore,
        *,
        snowflake: SnowflakeSide | None,
        max_unfiltered_rows: int = 10_000_000,
        batch_rows: int = 65_536,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.catalog = RemoteCatalog(meta)
        self.pool = SnowflakePool(snowflake or _NoSnowflake(), connect_options=connect_options)
        self.max_unfiltered_rows = max_unfiltered_rows
        self.batch_rows = batch_rows

    # -- declaring (admins, through REST) ------------------------------------------------
    def declare(
        self,
        engine: Engine,
        name: str,
        source: str,
        *,
        description: str | None = None,
        created_by: str | None = None,
    ) -> RemoteTable:
        """Declare a remote table (columns and rows from Snowflake's metadata)."""
        return self.catalog.declare(
            engine,
            name,
            self.pool.side.table_source(source),
            self.describe_source,
            description=description,
            created_by=created_by,
        )

    def refresh(self, engine: Engine, name: str) -> RemoteTable:
        """Read a remote table's columns and rows from Snowflake again."""
        return self.catalog.refresh(engine, name, self.describe_source)

    def drop(self, engine: Engine, name: str) -> None:
        self.catalog.drop(engine, name)

    def describe_source(self, source: str) -> Described:
        """A source's columns, typed by the sync mapping, and its row count."""
        metadata, rows = self.pool.describe(source)
        if not metadata:
            raise InvalidArgument(f"source {source!r} has no columns")
        return [RemoteColumn(*c) for c in self.pool.side.columns(metadata)], rows

    def locate(self, info: TableInfo) -> TableInfo:
        """A listed table as clients see it: a remote one is a TABLE in Snowflake."""
        remote = self.catalog.get(info.qualified)
        if remote is None:
            return info
        return replace(
            info,
            kind="TABLE",
            location="snowflake",
            rows=remote.rows,
            description=info.description or remote.description,
        )

    def close(self) -> None:
        self.pool.close()

    # -- routing -------------------------------------------------------------------------
    def reads_remote(self, tables: frozenset[str]) -> bool:
        """Whether a statement reading `tables` involves a remote table."""
        return bool(tables & self.catalog.names())

    def open(
        self,
        rq: RunningQuery,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        stmt: CheckedStatement,
        params: Sequence[Any] | Mapping[str, Any] | None,
        limit: int | None,
    ) -> pa.RecordBatchReader | None:
        """The result of a read that involves remote tables, or None to run it locally."""
        names = self.catalog.names()
        if not names or stmt.kind is not Kind.READ or stmt.explain:
            return None
        read_remote = stmt.tables & names
        if not read_remote:
            return None
        remotes = {t.name: t for t in self.catalog.all()}
        local = {t for t in stmt.tables - names if t.split(".", 1)[0] not in _SYSTEM_SCHEMAS}
        tree = translate.parse(stmt.sql)
        try:
            if not local and params is None and tree is not None:
                referenced = {r.name for _, r in translate.remote_references(tree, remotes)}
                sql = translate.whole_query(tree, remotes, limit)
                if sql is not None and read_remote <= referenced:
                    return self._whole(rq, cur, principal, stmt, sql)
            return self._mixed(rq, cur, principal, stmt, tree, remotes, read_remote, params, limit)
        except AgentdataError as e:
            metrics.REMOTE_ERRORS.labels(e.code).inc()
            raise

    def _whole(
        self,
        rq: RunningQuery,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        stmt: CheckedStatement,
        sql: str,
    ) -> pa.RecordBatchReader:
        schema = _bound_schema(cur, principal, stmt.sql)
        started = time.monotonic()
        remote = RemoteQuery.start(
            self.pool, sql, on_stop=rq.on_stop, stopped=lambda: rq.stop_reason
        )
        metrics.REMOTE_QUERIES.labels("snowflake").inc()
        schema = _tagged(schema, "snowflake", [remote])

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for table in remote.chunks():
                    for raw in table.to_batches(max_chunksize=self.batch_rows):
                        if raw.num_rows:
                            yield conform(raw, schema)
            except AgentdataError as e:
                metrics.REMOTE_ERRORS.labels(e.code).inc()
                raise
            finally:
                self._finished(rq, "snowflake", [remote], started)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _mixed(
        self,
        rq: RunningQuery,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        stmt: CheckedStatement,
        tree: Any,
        remotes: dict[str, RemoteTable],
        read_remote: frozenset[str],
        params: Sequence[Any] | Mapping[str, Any] | None,
        limit: int | None,
    ) -> pa.RecordBatchReader:
        scans: dict[str, translate.Scan] = {}
        if tree is not None:
            scans = translate.plan_scans(tree, remotes, lambda s, t: _columns_of(cur, s, t))
        for name in read_remote:
            scan = scans.setdefault(name, translate.Scan(remotes[name], all_columns=True))
            if not scan.conditions:
                scan.conditions.append(None)
            self._require_bounded(scan)
        duck_sql, placements = _swap_remote_tables(cur, stmt.sql, remotes)
        missing = read_remote - {name for name, _ in placements}
        if missing:
            raise PermissionDenied(
                f"remote table(s) {', '.join(sorted(missing))} are read through a view or "
                "macro here; name remote tables directly in the query"
            )
        started = time.monotonic()
        queries: list[RemoteQuery] = []
        failures: list[AgentdataError] = []
        try:
            for name, view in placements:
                scan = scans[name]
                query = RemoteQuery.start(
                    self.pool, scan.sql(), on_stop=rq.on_stop, stopped=lambda: rq.stop_reason
                )
                queries.append(query)
                metrics.REMOTE_QUERIES.labels("mixed").inc()
                schema = _scan_schema(scan, self.pool.side)
                cur.register(view, _scan_reader(query, schema, self.batch_rows, failures))
            with sqlguard.scrubbed(principal), _duckdb_errors(failures):
                rel = cur.sql(duck_sql, params=params)
                if limit is not None:
                    rel = rel.limit(limit)
                reader = as_json_extension(rel.to_arrow_reader(self.batch_rows), rel.types)
        except BaseException:
            for query in queries:
                query.close()
            raise
        schema = _tagged(reader.schema, "mixed", queries)

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    with _duckdb_errors(failures):
                        try:
                            batch = reader.read_next_batch()
                        except StopIteration:
                            return
                    yield batch.replace_schema_metadata(schema.metadata)
            finally:
                for query in queries:
                    query.close()
                self._finished(rq, "mixed", queries, started)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def _require_bounded(self, scan: translate.Scan) -> None:
        remote = scan.remote
        limit = self.max_unfiltered_rows
        if scan.condition is not None or limit <= 0 or remote.rows is None or remote.rows <= limit:
            return
        raise ResourceExhausted(
            f"remote table {remote.name} has {remote.rows:,} rows in Snowflake, over this "
            f"server's federation_max_unfiltered_rows ({limit:,}), and this query would read "
            f"all of them: add a WHERE condition on {remote.name}'s own columns that Snowflake "
            f"can apply (for example {_filter_hint(remote)}), so only the rows needed cross; "
            "or query it alone, which runs entirely in Snowflake",
            detail={"table": remote.name, "rows": remote.rows, "max_unfiltered_rows": limit},
        )

    def _finished(
        self, rq: RunningQuery, mode: str, queries: list[RemoteQuery], started: float
    ) -> None:
        rows = sum(q.rows for q in queries)
        nbytes = sum(q.bytes for q in queries)
        metrics.REMOTE_ROWS.inc(rows)
        metrics.REMOTE_BYTES.inc(nbytes)
        log.info(
            "remote query %s (%s) for query %s: %d rows, %d bytes from Snowflake in %.3fs",
            ",".join(q.query_id or "?" for q in queries),
            mode,
            rq.query_id,
            rows,
            nbytes,
            time.monotonic() - started,
        )


# -- helpers ------------------------------------------------------------------------------


def _bound_schema(cur: duckdb.DuckDBPyConnection, principal: Principal, sql: str) -> pa.Schema:
    """The schema DuckDB binds for `sql` over the placeholder tables (nothing runs)."""
    from agentdata.engine import translate_errors

    with sqlguard.scrubbed(principal), translate_errors():
        rel = cur.sql(f"SELECT * FROM (\n{sql}\n) LIMIT 0")
        schema = rel.to_arrow_table().schema
        return json_schema(schema, rel.types) or schema


def _tagged(schema: pa.Schema, engine: str, queries: list[RemoteQuery]) -> pa.Schema:
    ids = ",".join(q.query_id for q in queries if q.query_id)
    metadata = {**(schema.metadata or {}), ENGINE_KEY: engine.encode()}
    if ids:
        metadata[QUERY_ID_KEY] = ids.encode()
    return schema.with_metadata(metadata)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with `schema`'s names and types, column by column in order."""
    if batch.num_columns != len(schema):
        raise InvalidArgument(
            f"Snowflake returned {batch.num_columns} columns where {len(schema)} were expected; "
            "if the table changed in Snowflake, an administrator can run "
            "`agentdata remote refresh NAME`"
        )
    arrays = [_cast(batch.column(i), field) for i, field in enumerate(schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _cast(array: pa.Array, field: pa.Field) -> pa.Array:
    goal = field.type
    if array.type == goal:
        return array
    try:
        if isinstance(goal, pa.ExtensionType):  # JSON: Snowflake sends the text
            storage = array.storage if isinstance(array.type, pa.ExtensionType) else array
            return pa.ExtensionArray.from_storage(goal, pc.cast(storage, goal.storage_type))
        if pa.types.is_decimal(goal) and pa.types.is_floating(array.type):
            # Snowflake computed in floating point where DuckDB keeps decimals.
            rounded = pc.round(array, ndigits=goal.scale)
            return pc.cast(rounded, options=pc.CastOptions(goal, allow_decimal_truncate=True))
        return pc.cast(array, options=pc.CastOptions(goal, allow_time_truncate=True))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise InvalidArgument(
            f"column {field.name!r}: Snowflake returned {array.type}, which does not convert "
            f"to {goal} ({e})",
            detail={"column": field.name},
        ) from None


def _scan_schema(scan: translate.Scan, side: SnowflakeSide) -> pa.Schema:
    """A scan's columns with the Arrow types the sync mapping loads them as."""
    types = {c.name: c.duckdb_type for c in scan.remote.columns}
    return pa.schema(
        [pa.field(n, side.arrow_type(types[n]) or pa.string()) for n in scan.selected()]
    )


def _scan_reader(
    query: RemoteQuery, schema: pa.Schema, batch_rows: int, failures: list[AgentdataError]
) -> pa.RecordBatchReader:
    """A remote scan as an Arrow stream DuckDB can read, typed by the sync mapping."""

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for table in query.chunks():
                for raw in table.to_batches(max_chunksize=batch_rows):
                    if raw.num_rows:
                        yield conform(raw, schema)
        except AgentdataError as e:
            # DuckDB reports a failure inside a scan with its own words; keep ours.
            failures.append(e)
            metrics.REMOTE_ERRORS.labels(e.code).inc()
            raise

    # DuckDB may stop reading a side early (an empty join partner): no rows is fine.
    return pa.RecordBatchReader.from_batches(schema, batches())


class _duckdb_errors:  # noqa: N801 - used as a context manager, reads like one
    """DuckDB errors as ours; a remote scan's own failure wins over DuckDB's report."""

    def __init__(self, failures: list[AgentdataError]) -> None:
        self.failures = failures

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, StopIteration):
            return False
        if self.failures:
            raise self.failures[0] from None
        if isinstance(exc, duckdb.Error | pa.ArrowException):
            from agentdata.engine import translate_errors

            with translate_errors():
                if isinstance(exc, duckdb.Error):
                    raise exc
                raise InvalidArgument(str(exc)) from None
        return False


def _columns_of(cur: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str] | None:
    rows = cur.execute(
        "SELECT column_name, data_type FROM duckdb_columns()"
        " WHERE database_name = current_database() AND lower(schema_name) = $1"
        " AND lower(table_name) = $2",
        [schema.lower(), table.lower()],
    ).fetchall()
    return {r[0]: r[1] for r in rows} or None


def _swap_remote_tables(
    cur: duckdb.DuckDBPyConnection, sql: str, remotes: Mapping[str, RemoteTable]
) -> tuple[str, list[tuple[str, str]]]:
    """`sql` with each reference to a remote table replaced by a fresh scan name (on
    DuckDB's own parse tree), and the (remote table, scan name) pairs in order."""
    tree = sql_tree.serialize(cur, sql)
    if tree is None:
        raise InvalidArgument(
            "this statement form cannot read remote tables; write it as a plain SELECT"
        )
    ctes = {
        str(entry.get("key", "")).lower()
        for node in sql_tree.nodes(tree)
        if isinstance(node.get("cte_map"), dict)
        for entry in node["cte_map"].get("map", [])
    }
    placements: list[tuple[str, str]] = []

    def swap(node: sql_tree.Node) -> sql_tree.Node | None:
        if node.get("type") != "BASE_TABLE" or node.get("catalog_name"):
            return None
        schema = str(node.get("schema_name") or "")
        name = str(node.get("table_name") or "")
        if not schema and name.lower() in ctes:
            return None
        key = f"{(schema or 'main').lower()}.{name.lower()}"
        if key not in remotes:
            return None
        view = f"__agentdata_remote_{uuid.uuid4().hex[:16]}"
        placements.append((key, view))
        return {
            **node,
            "schema_name": "",
            "catalog_name": "",
            "table_name": view,
            "alias": node.get("alias") or name,
            "qualified_name": {"path": [view]},
        }

    swapped = sql_tree.replace_nodes(tree, swap)
    return sql_tree.deserialize(cur, swapped), placements


def _filter_hint(remote: RemoteTable) -> str:
    for column in remote.columns:
        if column.duckdb_type.startswith(("DATE", "TIMESTAMP")):
            return f"{column.name} >= DATE '2024-01-01'"
    first = remote.columns[0].name
    return f"{first} = ... or {first} IN (...)"


class _NoSnowflake:
    """The side of a core opened without Snowflake support (in-process tools, tests):
    remote tables can be listed and dropped, not declared or queried."""

    def _refuse(self, *args: Any) -> Any:
        raise Unavailable(
            "this process has no Snowflake support (the server's launcher provides it)",
            detail={"transient": False},
        )

    connect_kwargs = columns = arrow_type = table_source = _refuse
