"""The engine: the only owner of `data.duckdb`.

Reads run on per-request cursors and stream as Arrow record batches; writes go
through one serialised writer path. Every statement passes `sqlguard.check` first.
DuckDB exceptions are translated into `agentdata.errors` here and nowhere else.

Streaming: `open_stream` returns a `pyarrow.RecordBatchReader` built over DuckDB's
own Arrow reader. Memory is bounded by the batches in flight (batch_rows rows,
sliced to at most max_batch_bytes), never by result size. Each running query is
registered (for `cancel`), watched by a deadline (for timeouts) and closed when
the consumer stops reading.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from agentdata import sqlguard
from agentdata.deadlines import Watchdog
from agentdata.errors import (
    AgentdataError,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from agentdata.memory_guard import MemoryGuard, parse_bytes, rss_bytes
from agentdata.meta import MetaStore
from agentdata.names import validate_name
from agentdata.sqlguard import (
    EXPLAIN_COLUMNS,
    CatalogSnapshot,
    CheckedStatement,
    Guard,
    Kind,
    quote_ident,
)
from agentdata.tokens import Principal
from agentdata.value_bounds import EXHAUSTED_MARKER, ValueBounds

log = logging.getLogger(__name__)

#: Schemas that are DuckDB's own, never listed as data.
SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")

#: Result schema of a write statement.
WRITE_RESULT_SCHEMA = pa.schema([pa.field("rows", pa.int64())])
#: Result schema of any EXPLAIN: known without running it.
EXPLAIN_RESULT_SCHEMA = pa.schema([pa.field(n, pa.string()) for n in EXPLAIN_COLUMNS])


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise DuckDB exceptions as the project's errors (the one place this happens)."""
    try:
        yield
    except AgentdataError:
        raise
    except duckdb.PermissionException as e:
        raise PermissionDenied(_clean(e)) from e
    except duckdb.OutOfMemoryException as e:
        # DuckDB's text names the memory limit and tuning advice: server facts.
        raise ResourceExhausted(
            "the query needs more memory than the server allows; narrow it, or aggregate "
            "before returning large values"
        ) from e
    except duckdb.TransactionException as e:
        raise Conflict(_clean(e)) from e
    except duckdb.InterruptException as e:
        raise Cancelled("query interrupted") from e
    except (duckdb.ConnectionException, duckdb.FatalException) as e:
        raise Unavailable(_clean(e)) from e
    except (duckdb.InternalException, duckdb.InternalError, duckdb.ResourceInUseException) as e:
        raise InternalError(_clean(e)) from e
    except duckdb.Error as e:
        message = _clean(e)
        if EXHAUSTED_MARKER in message:  # a bound from agentdata.value_bounds
            raise ResourceExhausted(message.split(EXHAUSTED_MARKER, 1)[1].strip()) from e
        # Parser, binder, catalog, conversion, constraint, invalid input, ...: the
        # caller's SQL is at fault, and DuckDB's message says how.
        raise InvalidArgument(message) from e


#: Absolute file paths in an engine message (temp files, the database file): never
#: shown to clients.
_PATH = re.compile(r"(?<![\w:])/(?:[\w.+-]+/)+[\w.+-]*")


def _clean(e: BaseException) -> str:
    return _PATH.sub("<path>", str(e).strip())


@dataclass(frozen=True)
class TableInfo:
    """A table or view as listed to a client."""

    schema: str
    name: str
    kind: str  # "TABLE" or "VIEW"
    arrow_schema: pa.Schema
    rows: int | None
    last_modified: float | None
    last_synced: float | None = None
    source_snapshot: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class RunningQuery:
    """A query in flight: who owns it, and how to stop it."""

    query_id: str
    token_id: str
    sql: str
    cursor: duckdb.DuckDBPyConnection
    is_admin: bool = False
    started: float = field(default_factory=time.monotonic)
    stop_reason: AgentdataError | None = None
    #: Watchdog handles (timeout, token expiry), cancelled when the query ends.
    timers: list[int] = field(default_factory=list)
    #: Set once a result stream owns the query (it finishes it when done).
    detached: bool = False

    def stop(self, reason: AgentdataError) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        try:
            self.cursor.interrupt()
        except duckdb.Error:
            pass


@dataclass
class ResultStream:
    """A running query's result: its schema and a lazy iterator of batches.

    The iterator raises `agentdata.errors` (never DuckDB's) and releases the cursor
    when exhausted, failed or closed. Adapters wrap it (Flight: GeneratorStream, so
    status codes survive); `to_reader` serves in-process consumers.
    """

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    query_id: str | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.batches

    def to_reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches)

    def close(self) -> None:
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


@dataclass
class StreamOptions:
    """Per-call knobs for `open_stream`."""

    query_id: str | None = None
    truncate: bool = False  # on max_rows: stop quietly (True) or fail RESOURCE_EXHAUSTED
    is_cancelled: Callable[[], bool] | None = None  # e.g. the Flight call context
    on_finish: Callable[[int, int], None] | None = None  # (rows, bytes), once, however it ends
    truncated: bool = False  # set by the stream when it stopped quietly at max_rows
    #: Values for the statement's `?` / `$n` placeholders (a mapping for `$name`).
    params: Sequence[Any] | Mapping[str, Any] | None = None


class Engine:
    """Owns the DuckDB database; all reads and writes go through here."""

    def __init__(
        self,
        db_path: Path,
        meta: MetaStore,
        *,
        memory_limit: str = "2GB",
        threads: int = 0,
        temp_dir: Path | None = None,
        batch_rows: int = 65_536,
        max_batch_bytes: int = 16 * 1024 * 1024,
        query_timeout_s: float = 300.0,
        max_sql_bytes: int = 256 * 1024,
        max_generated_bytes: int = 64 * 1024,
        memory_headroom_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.meta = meta
        self.batch_rows = batch_rows
        self.max_batch_bytes = max_batch_bytes
        self.query_timeout_s = query_timeout_s
        self.guard = Guard(max_sql_bytes=max_sql_bytes, bounds=ValueBounds(max_generated_bytes))
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
        }
        if threads > 0:
            config["threads"] = threads
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = str(temp_dir)
        with translate_errors():
            self._con = duckdb.connect(str(db_path), config=config)
            # Order matters: external access off, then lock, after which no SET works.
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        self._write_lock = threading.Lock()
        self._running: dict[str, RunningQuery] = {}
        self._running_lock = threading.Lock()
        self._watchdog = Watchdog()
        self._closed = False
        #: Bumped by every committed write; the guard's catalog snapshot follows it.
        self._generation = 0
        self._snapshot: tuple[int, CatalogSnapshot] | None = None
        self._memory_guard: MemoryGuard | None = None
        if memory_headroom_bytes > 0:
            base = rss_bytes() + parse_bytes(memory_limit) + memory_headroom_bytes
            self._memory_guard = MemoryGuard(
                lambda: base + self.running_count() * 2 * max_batch_bytes, self._over_memory
            )

    # -- cursors -------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (connection) for one thread's use."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        return self._con.cursor()

    def _read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor inside a READ ONLY transaction: whatever runs on it cannot write
        (DuckDB refuses with "transaction is launched in read-only mode")."""
        cur = self.cursor()
        try:
            with translate_errors():
                cur.execute("BEGIN TRANSACTION READ ONLY")
        except BaseException:
            cur.close()
            raise
        return cur

    # -- checking ------------------------------------------------------------
    def check(self, principal: Principal, sql: str) -> CheckedStatement:
        """Validate one statement for `principal` without running it (bounded by the
        token's timeout, like a query)."""
        with self._query(principal, sql, None) as (rq, cur):
            return self._check_on(rq, cur, principal, sql)

    def _check_on(
        self, rq: RunningQuery, cur: duckdb.DuckDBPyConnection, principal: Principal, sql: str
    ) -> CheckedStatement:
        with sqlguard.scrubbed(principal), translate_errors():
            stmt = self.guard.check(cur, principal, sql, self._catalog_snapshot(cur))
        if rq.stop_reason is not None:
            raise rq.stop_reason
        return stmt

    def _catalog_snapshot(self, cur: duckdb.DuckDBPyConnection) -> CatalogSnapshot:
        generation = self._generation
        cached = self._snapshot
        if cached is not None and cached[0] == generation:
            return cached[1]
        snapshot = CatalogSnapshot.read(cur)
        self._snapshot = (generation, snapshot)
        return snapshot

    def parameter_names(self, sql: str) -> list[str]:
        """The statement's placeholders in binding order: ["1", "2"] for `?`/`$n`, else names.

        Empty for a statement without placeholders (and for SQL that does not parse:
        `check` reports that properly).
        """
        try:
            statements = duckdb.extract_statements(sql)
        except (duckdb.Error, ValueError):
            return []
        if len(statements) != 1:
            return []
        names = list(statements[0].named_parameters)
        if all(n.isdigit() for n in names):
            return sorted(names, key=int)
        return sorted(names)

    # -- the life of one request ---------------------------------------------------
    @contextmanager
    def _query(
        self, principal: Principal, sql: str, query_id: str | None
    ) -> Iterator[tuple[RunningQuery, duckdb.DuckDBPyConnection]]:
        """A registered, deadline-watched query on a READ ONLY cursor, from the moment
        the request arrives: parsing, checking and binding count against the timeout
        too. Closed on exit unless the caller took ownership (`rq.detached`)."""
        cur = self._read_cursor()
        rq = self._start(principal, sql, query_id, cur)
        try:
            yield rq, cur
        except AgentdataError as e:
            raise (rq.stop_reason or e) from None
        finally:
            if not rq.detached:
                self._finish(rq)

    def _start(
        self,
        principal: Principal,
        sql: str,
        query_id: str | None,
        cur: duckdb.DuckDBPyConnection,
    ) -> RunningQuery:
        rq = RunningQuery(
            query_id=query_id or uuid.uuid4().hex,
            token_id=principal.token_id,
            sql=sql,
            cursor=cur,
            is_admin=principal.is_admin,
        )
        timeout = self.query_timeout_s
        if principal.timeout_s:
            timeout = min(timeout, principal.timeout_s)
        rq.timers.append(
            self._watchdog.schedule(
                timeout,
                lambda: rq.stop(DeadlineExceeded(f"query exceeded its {timeout:g}s timeout")),
            )
        )
        if principal.expires_at is not None:
            # An expired token's work stops with it, mid-stream included.
            rq.timers.append(
                self._watchdog.schedule(
                    max(0.0, principal.expires_at - time.time()),
                    lambda: rq.stop(Unauthenticated("token expired")),
                )
            )
        self._register(rq)
        return rq

    def _finish(self, rq: RunningQuery) -> None:
        for handle in rq.timers:
            self._watchdog.cancel(handle)
        self._unregister(rq)
        with suppress(Exception):
            rq.cursor.close()

    def schema_of(
        self,
        principal: Principal,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> tuple[CheckedStatement, pa.Schema]:
        """The result schema of `sql`, learned without running it: a checked SELECT is
        bound inside `SELECT * FROM (...) LIMIT 0` in a READ ONLY transaction (planned
        away, nothing scanned); EXPLAIN and writes have fixed schemas.

        A statement with placeholders needs `params` (NULLs give a best guess).
        """
        with self._query(principal, sql, None) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            if stmt.explain:
                return stmt, EXPLAIN_RESULT_SCHEMA
            if stmt.kind is Kind.WRITE:
                return stmt, WRITE_RESULT_SCHEMA
            with sqlguard.scrubbed(principal), translate_errors():
                probe = f"SELECT * FROM (\n{stmt.sql}\n) LIMIT 0"
                schema = cur.sql(probe, params=params).to_arrow_table().schema
            return stmt, schema

    # -- reading -------------------------------------------------------------
    def open_stream(
        self, principal: Principal, sql: str, options: StreamOptions | None = None
    ) -> ResultStream:
        """Run a read statement and return its result as a lazy batch stream.

        Write statements by writers run here too (result: one row, `rows`). The query
        is stopped by the token's/server's timeout, by its expiry or revocation, by
        `cancel`, by the client going away, and by max_rows (error, or quiet
        truncation when options.truncate).
        """
        options = options or StreamOptions()
        with self._query(principal, sql, options.query_id) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            if stmt.kind is Kind.READ:
                max_rows = principal.max_rows
                with sqlguard.scrubbed(principal), translate_errors():
                    rel = cur.sql(stmt.sql, params=options.params)
                    if max_rows is not None and not stmt.explain:
                        # One extra row tells "exactly max_rows" from "more than max_rows".
                        rel = rel.limit(max_rows + 1)
                    reader = rel.to_arrow_reader(self.batch_rows)
                rq.detached = True  # the stream owns it now
                return ResultStream(
                    reader.schema, self._batches(rq, reader, max_rows, options), rq.query_id
                )
        # A write: runs under the serialized writer, not on the read-only cursor.
        if stmt.explain:
            table = self._explain_write(stmt)
            if options.on_finish:
                options.on_finish(table.num_rows, table.nbytes)
            return ResultStream(table.schema, iter(table.to_batches()))
        param_sets = [options.params] if options.params is not None else None
        rows = self.execute_write(principal, stmt, param_sets=param_sets)
        if options.on_finish:
            options.on_finish(1, 8)
        batch = pa.record_batch([pa.array([rows], pa.int64())], schema=WRITE_RESULT_SCHEMA)
        return ResultStream(WRITE_RESULT_SCHEMA, iter([batch]))

    def _batches(
        self,
        rq: RunningQuery,
        reader: pa.RecordBatchReader,
        max_rows: int | None,
        options: StreamOptions,
    ) -> Iterator[pa.RecordBatch]:
        counts = [0, 0]  # rows, bytes
        done = threading.Event()

        def cleanup() -> None:
            # Runs once: at the end of iteration, or when the iterator is dropped
            # unstarted (a generator that never ran has no `finally` to run).
            if done.is_set():
                return
            done.set()
            with suppress(Exception):
                reader.close()
            self._finish(rq)
            if options.on_finish:
                options.on_finish(counts[0], counts[1])

        gen = self._generate(rq, reader, max_rows, options, counts, cleanup)
        weakref.finalize(gen, cleanup)
        return gen

    def _generate(
        self,
        rq: RunningQuery,
        reader: pa.RecordBatchReader,
        max_rows: int | None,
        options: StreamOptions,
        counts: list[int],
        cleanup: Callable[[], None],
    ) -> Iterator[pa.RecordBatch]:
        try:
            with translate_errors():
                while True:
                    if options.is_cancelled is not None and options.is_cancelled():
                        rq.stop(Cancelled("client went away"))
                    if rq.stop_reason is not None:
                        raise rq.stop_reason
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    except (duckdb.Error, pa.ArrowException, OSError) as e:
                        if rq.stop_reason is not None:
                            raise rq.stop_reason from None
                        if isinstance(e, duckdb.Error):
                            raise
                        # DuckDB errors surface through its Arrow stream as Arrow errors.
                        if "interrupt" in str(e).lower():
                            raise Cancelled("query interrupted") from None
                        raise InvalidArgument(str(e)) from None
                    if max_rows is not None and counts[0] + batch.num_rows > max_rows:
                        if not options.truncate:
                            raise ResourceExhausted(
                                f"result exceeds this token's max_rows ({max_rows}); "
                                "narrow the query, or ask for truncation"
                            )
                        batch = batch.slice(0, max_rows - counts[0])
                        options.truncated = True
                        counts[0] += batch.num_rows
                        counts[1] += batch.nbytes
                        if batch.num_rows:
                            yield batch
                        return
                    counts[0] += batch.num_rows
                    for piece in self._slice_by_bytes(batch):
                        counts[1] += piece.nbytes
                        yield piece
        finally:
            cleanup()

    def _slice_by_bytes(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        size = batch.nbytes
        if size <= self.max_batch_bytes or batch.num_rows <= 1:
            yield batch
            return
        # Zero-copy slices of roughly max_batch_bytes each.
        pieces = -(-size // self.max_batch_bytes)
        step = max(1, -(-batch.num_rows // pieces))
        for start in range(0, batch.num_rows, step):
            yield batch.slice(start, step)

    def query_table(self, principal: Principal, sql: str) -> pa.Table:
        """Run a (small) read and collect it: for metadata and tests, not for data paths."""
        return self.open_stream(principal, sql).to_reader().read_all()

    # -- running queries -----------------------------------------------------
    def _register(self, rq: RunningQuery) -> None:
        with self._running_lock:
            self._running[rq.query_id] = rq

    def _unregister(self, rq: RunningQuery) -> None:
        with self._running_lock:
            if self._running.get(rq.query_id) is rq:
                del self._running[rq.query_id]

    def cancel(self, principal: Principal, query_id: str) -> bool:
        """Cancel a running query owned by `principal` (admins may cancel any)."""
        with self._running_lock:
            rq = self._running.get(query_id)
        if rq is None:
            return False
        if rq.token_id != principal.token_id and not principal.is_admin:
            raise PermissionDenied("that query belongs to another token")
        rq.stop(Cancelled("query cancelled by request"))
        return True

    def running_count(self) -> int:
        with self._running_lock:
            return len(self._running)

    def cancel_all(self, reason: str) -> int:
        """Stop every running query (shutdown)."""
        with self._running_lock:
            running = list(self._running.values())
        for rq in running:
            rq.stop(Unavailable(reason))
        return len(running)

    def stop_token(self, token_id: str, reason: str = "token revoked") -> int:
        """Stop every running query of a token (revocation): streams end with
        UNAUTHENTICATED at their next batch."""
        with self._running_lock:
            running = [rq for rq in self._running.values() if rq.token_id == token_id]
        for rq in running:
            rq.stop(Unauthenticated(reason))
        return len(running)

    def _over_memory(self, rss: int) -> None:
        """The memory guard fired: stop every query not run by an admin."""
        with self._running_lock:
            running = [rq for rq in self._running.values() if not rq.is_admin]
        for rq in running:
            rq.stop(
                ResourceExhausted(
                    "the server's memory is over its bound; this query was stopped "
                    "(narrow it, or aggregate before returning large values)"
                )
            )

    # -- writing -------------------------------------------------------------
    @contextmanager
    def writer(
        self, cursor: duckdb.DuckDBPyConnection | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """The serialised writer: one write transaction at a time, committed or rolled back.

        Pass `cursor` to run the transaction on a cursor that holds TEMP tables (ingest
        stages on its own cursor); otherwise a fresh cursor is used and closed.
        """
        cur = cursor if cursor is not None else self.cursor()
        with self._write_lock:
            try:
                with translate_errors():
                    cur.execute("BEGIN TRANSACTION")
                    try:
                        yield cur
                    except BaseException:
                        cur.execute("ROLLBACK")
                        raise
                    cur.execute("COMMIT")
            finally:
                # Any transaction may have changed the catalog (the guard's snapshot).
                self._generation += 1
                if cursor is None:
                    cur.close()

    def execute_write(
        self,
        principal: Principal,
        stmt: CheckedStatement | str,
        *,
        param_sets: Sequence[Sequence[Any] | Mapping[str, Any]] | None = None,
    ) -> int:
        """Run one DDL/DML statement for a writer; returns rows changed (0 for DDL).

        With `param_sets`, the statement runs once per set of placeholder values, all
        in one transaction (all or nothing), and the row counts add up.
        """
        if isinstance(stmt, str):
            stmt = self.check(principal, stmt)
        principal.require_writer()
        runs: Sequence[Sequence[Any] | Mapping[str, Any] | None] = (
            [None] if param_sets is None else param_sets
        )
        changed = 0
        with self.writer() as cur:
            before = _catalog(cur)
            schemas_before = _schemas(cur)
            for params in runs:
                res = cur.execute(stmt.sql, params)
                try:
                    rows_out = res.fetchall()
                    row = rows_out[0] if rows_out else None
                except duckdb.Error:
                    row = None
                if (
                    row
                    and isinstance(row[0], int)
                    and stmt.statement_type in ("INSERT", "UPDATE", "DELETE", "MERGE_INTO")
                ):
                    changed += int(row[0])
            # Bound tables plus any created by the statement changed now (dropped ones
            # leave the catalog; their stats go with them).
            after = _catalog(cur)
            # New names must be usable names; a bad one rolls the whole statement back.
            for schema in _schemas(cur) - schemas_before:
                validate_name(schema, "schema name")
            for qualified_name in after - before:
                for part in _catalog_parts(cur, qualified_name):
                    validate_name(part, "table name")
        self.touch_tables(set(stmt.tables) & after | (after - before))
        for gone in before - after:
            self.meta.execute("DELETE FROM table_stats WHERE name = ?", (gone,))
        return changed

    def _explain_write(self, stmt: CheckedStatement) -> pa.Table:
        """EXPLAIN of a write, under the serialized writer. Plain EXPLAIN plans and
        rolls back; EXPLAIN ANALYZE (admins only, see sqlguard) runs and commits."""
        with self._write_lock:
            cur = self.cursor()
            try:
                with translate_errors():
                    cur.execute("BEGIN TRANSACTION")
                    try:
                        table = cur.sql(stmt.sql).to_arrow_table()
                    except BaseException:
                        cur.execute("ROLLBACK")
                        raise
                    cur.execute("COMMIT" if stmt.analyze else "ROLLBACK")
            finally:
                self._generation += 1
                cur.close()
        return table

    def touch_tables(
        self, names: set[str] | frozenset[str], *, synced: bool = False, snapshot: str | None = None
    ) -> None:
        """Record that tables changed now (ListFlights shows it as last-modified)."""
        now = time.time()
        for name in names:
            if synced:
                self.meta.execute(
                    "INSERT INTO table_stats (name, last_modified, last_synced, source_snapshot) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET last_modified = excluded.last_modified,"
                    " last_synced = excluded.last_synced, source_snapshot = excluded.source_snapshot",
                    (name, now, now, snapshot),
                )
            else:
                self.meta.execute(
                    "INSERT INTO table_stats (name, last_modified) VALUES (?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET last_modified = excluded.last_modified",
                    (name, now),
                )

    # -- catalog -------------------------------------------------------------
    def list_tables(self, principal: Principal) -> list[TableInfo]:
        """Tables and views the principal may read, with schema, rows and timestamps."""
        cur = self.cursor()
        try:
            with translate_errors():
                rows = cur.execute(
                    "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE NOT internal AND NOT temporary"
                    " UNION ALL SELECT schema_name, view_name, 'VIEW' FROM duckdb_views()"
                    " WHERE NOT internal AND NOT temporary ORDER BY 1, 2"
                ).fetchall()
            stats = {r["name"]: r for r in self.meta.all("SELECT * FROM table_stats")}
            out = []
            for schema, name, kind in rows:
                if schema in SYSTEM_SCHEMAS:
                    continue
                qualified = f"{schema}.{name}".lower()
                if not principal.can_read_table(qualified):
                    continue
                out.append(self._table_info(cur, schema, name, kind, stats.get(qualified)))
            return out
        finally:
            cur.close()

    def table_info(self, principal: Principal, schema: str, name: str) -> TableInfo:
        """One table's info; NOT_FOUND if missing, PERMISSION_DENIED if outside the allow-list."""
        qualified = f"{schema}.{name}".lower()
        if not principal.can_read_table(qualified):
            raise PermissionDenied(f"token may not access table(s): {qualified}")
        cur = self.cursor()
        try:
            with translate_errors():
                found = cur.execute(
                    "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2"
                    " UNION ALL SELECT schema_name, view_name, 'VIEW' FROM duckdb_views()"
                    " WHERE schema_name = $1 AND view_name = $2 AND NOT internal",
                    [schema, name],
                ).fetchall()
            if not found:
                raise NotFound(f"no table {schema}.{name}")
            stat = self.meta.one("SELECT * FROM table_stats WHERE name = ?", (qualified,))
            schema_name, table_name, kind = found[0]
            return self._table_info(cur, schema_name, table_name, kind, stat)
        finally:
            cur.close()

    def catalog_name(self) -> str:
        """The database's catalog name as SQL sees it (`data` for data.duckdb)."""
        cur = self.cursor()
        try:
            with translate_errors():
                return str(cur.execute("SELECT current_database()").fetchall()[0][0])  # type: ignore[index]
        finally:
            cur.close()

    def list_schemas(self, principal: Principal) -> list[str]:
        """Schema names the principal may see: all user schemas, or (for a token limited
        to some tables) only the schemas that hold one of its tables."""
        if principal.tables is not None:
            return sorted({t.schema for t in self.list_tables(principal)})
        cur = self.cursor()
        try:
            with translate_errors():
                rows = cur.execute(
                    "SELECT schema_name FROM duckdb_schemas()"
                    " WHERE database_name = current_database() ORDER BY 1"
                ).fetchall()
        finally:
            cur.close()
        return [r[0] for r in rows if r[0] not in SYSTEM_SCHEMAS]

    def column_types(self, schema: str, name: str) -> dict[str, str]:
        """DuckDB's type name of each column of a table or view (e.g. `DECIMAL(10,2)`)."""
        cur = self.cursor()
        try:
            with translate_errors():
                rows = cur.execute(
                    "SELECT column_name, data_type FROM duckdb_columns()"
                    " WHERE database_name = current_database() AND schema_name = $1 AND table_name = $2",
                    [schema, name],
                ).fetchall()
        finally:
            cur.close()
        return {r[0]: r[1] for r in rows}

    def primary_keys(
        self, principal: Principal, schema: str | None, table: str
    ) -> list[tuple[str, str, str, int]]:
        """(schema, table, column, position from 1) of the primary keys of `table` in
        `schema` (any schema when None), for tables the principal may read."""
        cur = self.cursor()
        try:
            with translate_errors():
                rows = cur.execute(
                    "SELECT schema_name, table_name, constraint_column_names FROM duckdb_constraints()"
                    " WHERE database_name = current_database() AND constraint_type = 'PRIMARY KEY'"
                    " AND table_name = $1 AND ($2::VARCHAR IS NULL OR schema_name = $2)"
                    " ORDER BY schema_name, table_name",
                    [table, schema],
                ).fetchall()
        finally:
            cur.close()
        out: list[tuple[str, str, str, int]] = []
        for schema_name, table_name, columns in rows:
            if not principal.can_read_table(f"{schema_name}.{table_name}"):
                continue
            out.extend(
                (schema_name, table_name, col, i) for i, col in enumerate(columns or [], start=1)
            )
        return out

    def _table_info(
        self, cur: duckdb.DuckDBPyConnection, schema: str, name: str, kind: str, stat: Any
    ) -> TableInfo:
        ref = f"{quote_ident(schema)}.{quote_ident(name)}"
        with translate_errors():
            arrow_schema = cur.sql(f"SELECT * FROM {ref}").limit(0).to_arrow_table().schema
            rows = (
                cur.execute(f"SELECT count(*) FROM {ref}").fetchall()[0][0]
                if kind == "TABLE"
                else None
            )  # type: ignore[index]
        return TableInfo(
            schema=schema,
            name=name,
            kind=kind,
            arrow_schema=arrow_schema,
            rows=rows,
            last_modified=stat["last_modified"] if stat else None,
            last_synced=stat["last_synced"] if stat else None,
            source_snapshot=stat["source_snapshot"] if stat else None,
        )

    # -- lifecycle -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """A cheap liveness probe of the database."""
        cur = self.cursor()
        try:
            with translate_errors():
                cur.execute("SELECT 1").fetchall()
        finally:
            cur.close()
        return {"database": "ok", "running_queries": self.running_count()}

    def close(self) -> None:
        """Stop running queries, checkpoint, close. Idempotent."""
        if self._closed:
            return
        self.cancel_all("the server is shutting down")
        self._watchdog.stop()
        if self._memory_guard is not None:
            self._memory_guard.stop()
        with self._write_lock:
            self._closed = True
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as e:
                log.warning("checkpoint at shutdown failed: %s", e)
            self._con.close()


def _schemas(cur: duckdb.DuckDBPyConnection) -> set[str]:
    rows = cur.execute(
        "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()"
    ).fetchall()
    return {r[0] for r in rows}


def _catalog_parts(cur: duckdb.DuckDBPyConnection, qualified_name: str) -> list[str]:
    """The real (schema, name) of a catalog entry `_catalog` listed (case kept)."""
    rows = cur.execute(
        "SELECT schema_name, table_name FROM duckdb_tables()"
        " WHERE lower(schema_name || '.' || table_name) = $1"
        " UNION ALL SELECT schema_name, view_name FROM duckdb_views()"
        " WHERE NOT internal AND lower(schema_name || '.' || view_name) = $1",
        [qualified_name],
    ).fetchall()
    return [p for row in rows for p in row]


def _catalog(cur: duckdb.DuckDBPyConnection) -> set[str]:
    """Every user table and view, as lower-case "schema.name"."""
    rows = cur.execute(
        "SELECT lower(schema_name || '.' || table_name) FROM duckdb_tables() WHERE NOT temporary"
        " UNION ALL SELECT lower(schema_name || '.' || view_name) FROM duckdb_views() WHERE NOT internal AND NOT temporary"
    ).fetchall()
    return {r[0] for r in rows}
