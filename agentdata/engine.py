"""The engine: the only owner of `data.duckdb`.

Reads run on per-request cursors inside READ ONLY transactions and stream as Arrow
record batches; writes go through one serialised writer path. Every statement passes
the guard (`agentdata.sqlguard`) first, on the same cursor and under the same deadline
as the query. DuckDB exceptions are translated into `agentdata.errors` by
`translate_errors`, under which the engine, ingest and federated queries run their
statements; the guard (`sqlguard`) translates the errors of its own parse and bind
checks itself.

Streaming: `open_stream` returns a `pyarrow.RecordBatchReader` built over DuckDB's
own Arrow reader. Memory is bounded by the batches in flight (batch_rows rows,
sliced to at most max_batch_bytes), never by result size. Each running query is
registered (for `cancel`), watched by a deadline (for timeouts) and closed when
the consumer stops reading.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from agentdata import (
    audit,
    cost,
    descriptions,
    governance,
    governed_writes,
    param_batches,
    returning,
    sqlguard,
)
from agentdata.admission import Admission
from agentdata.batches import slice_by_bytes
from agentdata.bound_schema import BoundSchemas
from agentdata.deadlines import Watchdog
from agentdata.duck_stream import arrow_stream
from agentdata.errors import (
    AgentdataError,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from agentdata.freshness import FRESHNESS_KEY, FreshnessCache
from agentdata.freshness import entry as freshness_entry
from agentdata.json_columns import json_schema, with_json_extension
from agentdata.memory_guard import MemoryGuard, parse_bytes, rss_bytes
from agentdata.meta import MetaStore
from agentdata.names import validate_name
from agentdata.param_batches import ParameterBatch
from agentdata.prefetch import Prefetcher
from agentdata.read_cursors import ReadCursors
from agentdata.result_cache import Recorder, ResultCache, Versions, params_key
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
from agentdata.verdicts import Verdicts

if TYPE_CHECKING:
    from agentdata.federation import Federation

log = logging.getLogger(__name__)

#: Query ids for calls that bring none: unique in this process (a random prefix, then
#: a count; ownership, not secrecy, guards `cancel`). uuid4 reads the OS's random
#: source each time, which costs more here than a point query's whole check.
_QUERY_ID_PREFIX = uuid.uuid4().hex[:16]
_QUERY_COUNT = itertools.count(1)


def _new_query_id() -> str:
    return f"{_QUERY_ID_PREFIX}{next(_QUERY_COUNT):016x}"


#: Prefetcher `inline` for a stream with nothing to produce ahead: every item inline.
_NEVER = 1 << 62

#: Schemas that are DuckDB's own, never listed as data.
SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")

#: The results cache invalidates on any write for now: SQL DML does not always name its
#: target table to the binder, so per-table versions could miss one.
_ANY_TABLE = "*"

#: Schema metadata of a result DuckDB computed (federated ones say `snowflake`/`mixed`).
_DUCKDB_RAN = {b"agentdata.engine": b"duckdb"}
#: Result schema of a write statement.
WRITE_RESULT_SCHEMA = pa.schema([pa.field("rows", pa.int64())])
#: Result schema of any EXPLAIN: known without running it.
EXPLAIN_RESULT_SCHEMA = pa.schema([pa.field(n, pa.string()) for n in EXPLAIN_COLUMNS])


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did: rows changed, and for DML with RETURNING the rows it returned."""

    rows: int
    returned: pa.Table | None = None

    def result(self) -> pa.Table:
        """The write's result as every channel streams it: the returned rows, or one
        row `{rows}` with the count of rows changed."""
        if self.returned is not None:
            return self.returned
        return pa.table([pa.array([self.rows], pa.int64())], schema=WRITE_RESULT_SCHEMA)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise DuckDB exceptions as the project's errors: the general mapping, used
    wherever a statement runs (the guard translates its own binding errors itself)."""
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
    return governance.hide_salts(_PATH.sub("<path>", str(e).strip()))


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
    #: What the table holds, in words (agentdata.descriptions); column name -> text.
    description: str | None = None
    column_descriptions: Mapping[str, str] = field(default_factory=dict)
    #: Where the data lives: "duckdb", or "snowflake" for a remote table (federation).
    location: str = "duckdb"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def freshness(self) -> dict[str, Any]:
        """{last_modified, last_synced, source} as every channel shows it."""
        return freshness_entry(self.last_modified, self.last_synced, self.source_snapshot)


#: Keys of query executions (RunningQuery.key), unique for the life of the process.
_EXECUTIONS = itertools.count()


@dataclass
class RunningQuery:
    """A query in flight: who owns it, and how to stop it."""

    #: The id clients name it by (a ticket's). Two executions of one ticket (two DoGets)
    #: share it; the engine tells them apart by `key`.
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
    #: The results cache's table versions from before the query's snapshot was taken.
    versions: tuple[tuple[str, int], ...] = ()
    #: Gives back its admission slots (agentdata.admission), once it ends.
    release: Callable[[], None] | None = None
    #: Called by `stop` too: work elsewhere to stop with it (a Snowflake statement).
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    #: Set once the engine re-interrupts the stopped query until it ends.
    reinterrupting: bool = False
    #: The query's time limit, and the watchdog handle that enforces it (None while the
    #: query waits parked for its consumer: its clock runs only while it can work).
    timeout_s: float = 0.0
    timeout_timer: int | None = None
    #: The DuckDB stream the result reads, closed with the cursor when the query ends
    #: (a reader wrapped over it, as the results cache's recorder, does not close it).
    source: pa.RecordBatchReader | None = None
    #: Waiting for its consumer (Engine.park): nothing of it runs until then.
    parked: bool = False
    #: This execution's own key in the engine's registry.
    key: int = field(default_factory=lambda: next(_EXECUTIONS))

    def raise_if_stopped(self) -> None:
        """Raise why the query was stopped (timeout, cancel, revocation), if it was."""
        if self.stop_reason is not None:
            raise self.stop_reason

    def stop(self, reason: AgentdataError) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        try:
            self.cursor.interrupt()
        except duckdb.Error:
            pass
        for hook in list(self.on_stop):
            with suppress(Exception):
                hook()


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
    #: The execution behind a read's stream (for `Engine.park`/`unpark`); None when the
    #: result is already complete (a write's).
    running: RunningQuery | None = field(default=None, repr=False)

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
    #: A row cap of this call's own, below the token's max_rows (MCP's `max_rows`);
    #: reaching it ends the stream quietly when `truncate` is set.
    max_rows: int | None = None
    #: Refuse writes (INVALID_ARGUMENT) instead of running them: for channels that only read.
    reads_only: bool = False
    #: A batch size cap of this call's own, below the engine's max_batch_bytes (Flight SQL:
    #: its clients refuse gRPC messages over 16 MiB). Batches are sliced once, to the lower.
    max_batch_bytes: int | None = None


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
        result_cache_bytes: int = 64 * 1024 * 1024,
        mask_salt: str = "",
        federation: Federation | None = None,
        audit_log: audit.AuditLog | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.meta = meta
        #: Per-token and server-wide concurrency; None admits everything.
        self.admission = admission
        #: One record per query (agentdata.audit); None turns auditing off.
        self.audit = audit_log
        #: Remote (Snowflake) tables and the router for reads that involve them.
        self.federation = federation
        self.batch_rows = batch_rows
        self.max_batch_bytes = max_batch_bytes
        self.query_timeout_s = query_timeout_s
        governance.register_salt(mask_salt)
        #: Result schemas by binding (GetFlightInfo runs nothing; see agentdata.bound_schema).
        self._schemas = BoundSchemas()
        self.guard = Guard(
            max_sql_bytes=max_sql_bytes,
            bounds=ValueBounds(max_generated_bytes),
            mask_salt=mask_salt,
        )
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
        #: READ ONLY cursors begun ahead of the requests that take them.
        self._read_cursors = ReadCursors(self.cursor)
        #: Executions in flight, by their own key (see RunningQuery.key).
        self._running: dict[int, RunningQuery] = {}
        self._running_lock = threading.Lock()
        self._watchdog = Watchdog()
        self._closed = False
        #: Bumped by every committed write; the guard's catalog snapshot follows it.
        self._generation = 0
        self._snapshot: tuple[int, CatalogSnapshot] | None = None
        #: The guard's verdicts by token scope and text (agentdata.verdicts).
        self._verdicts = Verdicts()
        self.results = ResultCache(result_cache_bytes)
        #: Tables' freshness for stream metadata, read from the meta store once per change.
        self._freshness = FreshnessCache(meta)
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
        """A new cursor inside a READ ONLY transaction: whatever runs on it cannot write
        (DuckDB refuses with "transaction is launched in read-only mode"). Usually one
        begun ahead (agentdata.read_cursors)."""
        if self._closed:
            raise Unavailable("the server is shutting down")
        with translate_errors():
            return self._read_cursors.take()

    # -- checking ------------------------------------------------------------
    @audit.audited_call(refusals_only=True)
    def check(self, principal: Principal, sql: str) -> CheckedStatement:
        """Validate one statement for `principal` without running it (bounded by the
        token's timeout, like a query)."""
        with self._query(principal, sql, None) as (rq, cur):
            return self._check_on(rq, cur, principal, sql)

    def _check_on(
        self, rq: RunningQuery, cur: duckdb.DuckDBPyConnection, principal: Principal, sql: str
    ) -> CheckedStatement:
        scope = self._scope(principal)
        stmt = self._verdicts.get(scope, sql)
        if stmt is None:
            with sqlguard.scrubbed(principal), translate_errors():
                stmt = self.guard.check(
                    cur, principal, sql, self._catalog_snapshot(cur), rq.raise_if_stopped
                )
            self._verdicts.put(scope, sql, stmt)
        if rq.stop_reason is not None:
            raise rq.stop_reason
        audit.note_statement(stmt)
        return stmt

    def _scope(self, principal: Principal) -> tuple[Any, ...]:
        # Governance is part of the scope: tokens with other filters never share a verdict;
        # so is the catalog generation: a committed write may change what a name binds to.
        return (principal.role, principal.tables, principal.governance, self._generation)

    def starts_at_once(self, principal: Principal, sql: str) -> bool:
        """Whether `sql`, already checked for this principal's scope, is a local read
        that does no work before its first row (agentdata.streaming): then opening its
        stream where only its schema is asked for costs nothing more. A statement not
        checked yet is not (the next one of its numeric shape will be)."""
        stmt = self._verdicts.get(self._scope(principal), sql)
        if stmt is None or not stmt.starts_at_once:
            return False
        return self.federation is None or not self.federation.reads_remote(stmt.tables)

    def validate_governance(
        self, row_filters: Any, column_masks: Any
    ) -> governance.Governance | None:
        """A new token's row_filters and column_masks, checked against the database and
        made canonical (see agentdata.governance); InvalidArgument says what is wrong."""
        cur = self._read_cursor()
        try:
            with translate_errors():
                return governance.validate(cur, row_filters, column_masks)
        finally:
            cur.close()

    def _written(self) -> None:
        """A write transaction ended: the catalog snapshot, cached verdicts and cached
        results may all be stale now (a rolled-back one costs a few misses, nothing more)."""
        self._generation += 1
        self.results.bump([_ANY_TABLE])

    def _catalog_snapshot(self, cur: duckdb.DuckDBPyConnection) -> CatalogSnapshot:
        generation = self._generation
        cached = self._snapshot
        if cached is not None and cached[0] == generation:
            return cached[1]
        snapshot = CatalogSnapshot.read(cur)
        self._snapshot = (generation, snapshot)
        return snapshot

    def parameter_schema(self, principal: Principal, sql: str) -> pa.Schema:
        """The statement's placeholders as an Arrow schema: one field per placeholder in
        binding order (named "1", "2", ... or by `$name`), typed as DuckDB's binder infers
        them from their use (`id = ?` takes the column's type); the null type where the
        statement does not say (`SELECT ?`).

        Binding runs nothing: the statement is checked for `principal` first and bound on
        a READ ONLY cursor. DuckDB's Python API offers the inferred types only through
        its binder (`_bind`, duckdb 2.0); without it every field is null-typed.
        """
        names = self.parameter_names(sql)
        if not names:
            return pa.schema([])
        with self._query(principal, sql, None) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            return self._parameter_schema_on(cur, stmt, names)

    def _parameter_schema_on(
        self, cur: duckdb.DuckDBPyConnection, stmt: CheckedStatement, names: list[str]
    ) -> pa.Schema:
        types: dict[str, str] = {}
        bind = getattr(cur, "_bind", None)
        if bind is not None:
            with suppress(duckdb.Error, TypeError, ValueError):
                parameters = bind(stmt.sql, with_writes=True)[2]
                types = {str(n): str(t) for n, t in parameters if str(t) != "UNKNOWN"}
        if not types:
            return pa.schema([pa.field(n, pa.null()) for n in names])
        typed = [n for n in names if n in types]
        try:
            with translate_errors():
                # Cached per list of types (agentdata.bound_schema): no query once seen.
                converted = self._schemas.arrow(cur, typed, [types[n] for n in typed])
        except AgentdataError:  # a type that does not round-trip: say nothing of any
            return pa.schema([pa.field(n, pa.null()) for n in names])
        return pa.schema(
            [converted.field(n) if n in types else pa.field(n, pa.null()) for n in names]
        )

    @audit.audited_call(refusals_only=True)
    def prepare(
        self, principal: Principal, sql: str
    ) -> tuple[CheckedStatement, pa.Schema, pa.Schema]:
        """What a prepared statement needs, from one check on one cursor: the checked
        statement, its result schema with every placeholder bound to NULL (a best
        guess; see `schema_of`) and its parameters' schema (see `parameter_schema`)."""
        names = self.parameter_names(sql)
        nulls: list[Any] | dict[str, Any] | None = None
        if names:
            positional = all(n.isdigit() for n in names)
            nulls = [None] * len(names) if positional else dict.fromkeys(names)
        with self._query(principal, sql, None) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            schema = self._schema_on(cur, principal, stmt, nulls)
            params = self._parameter_schema_on(cur, stmt, names) if names else pa.schema([])
        return stmt, schema, params

    def parameter_names(self, sql: str) -> list[str]:
        """The statement's placeholders in binding order: ["1", "2"] for `?`/`$n`, else names.

        Empty for a statement without placeholders (and for SQL that does not parse:
        `check` reports that properly).
        """
        return list(_placeholders(sql))

    # -- the life of one request ---------------------------------------------------
    @contextmanager
    def _query(
        self, principal: Principal, sql: str, query_id: str | None
    ) -> Iterator[tuple[RunningQuery, duckdb.DuckDBPyConnection]]:
        """A registered, deadline-watched query on a READ ONLY cursor, from the moment
        the request arrives: parsing, checking and binding count against the timeout
        too. Closed on exit unless the caller took ownership (`rq.detached`)."""
        # Table versions as of before the READ ONLY transaction takes its snapshot: a
        # result cached under them can only be older than what they say if a write
        # committed in between, and then the cache refuses it (see agentdata.result_cache).
        versions = self.results.versions([_ANY_TABLE])
        # Fair admission (agentdata.admission): slots are held until the query ends.
        release = self.admission.admit(principal) if self.admission is not None else None
        try:
            cur = self._read_cursor()
            rq = self._start(principal, sql, query_id, cur)
        except BaseException:
            if release is not None:
                release()
            raise
        rq.release = release
        rq.versions = versions
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
            query_id=query_id or _new_query_id(),
            token_id=principal.token_id,
            sql=sql,
            cursor=cur,
            is_admin=principal.is_admin,
        )
        rq.timeout_s = self.query_timeout_s
        if principal.timeout_s:
            rq.timeout_s = min(rq.timeout_s, principal.timeout_s)
        self._arm_timeout(rq)
        if principal.expires_at is not None:
            # An expired token's work stops with it, mid-stream included.
            rq.timers.append(
                self._watchdog.schedule(
                    max(0.0, principal.expires_at - time.time()),
                    lambda: rq.stop(Unauthenticated("token expired")),
                )
            )
        rq.on_stop.append(lambda: self._keep_interrupting(rq))
        self._register(rq)
        return rq

    def _arm_timeout(self, rq: RunningQuery) -> None:
        timeout = rq.timeout_s
        rq.timeout_timer = self._watchdog.schedule(
            timeout, lambda: rq.stop(DeadlineExceeded(f"query exceeded its {timeout:g}s timeout"))
        )
        rq.timers.append(rq.timeout_timer)

    def _keep_interrupting(self, rq: RunningQuery, every_s: float = 0.05) -> None:
        """Interrupt a stopped query again until it ends: DuckDB drops an interrupt that
        lands between two statements on the cursor (say, after the guard's checks and
        before the query starts), and the query would then run to its end."""

        def again() -> None:
            with self._running_lock:
                running = rq.key in self._running
            if not running:
                return
            if rq.parked:
                # Nothing runs until its DoGet, whose stream raises the stop reason
                # before it reads a batch: no interrupt to repeat meanwhile.
                rq.reinterrupting = False
                return
            with suppress(duckdb.Error):
                rq.cursor.interrupt()
            rq.timers.append(self._watchdog.schedule(every_s, again))

        if not rq.reinterrupting:
            rq.reinterrupting = True
            rq.timers.append(self._watchdog.schedule(every_s, again))

    def _finish(self, rq: RunningQuery) -> None:
        for handle in rq.timers:
            self._watchdog.cancel(handle)
        self._unregister(rq)
        if rq.release is not None:
            rq.release()
        # The stream first: while it is open, its cursor's READ ONLY transaction stays
        # active, and a CHECKPOINT is refused until it ends.
        if rq.source is not None:
            with suppress(Exception):
                rq.source.close()
        with suppress(Exception):
            rq.cursor.close()

    @audit.audited_call(refusals_only=True)
    def schema_of(
        self,
        principal: Principal,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> tuple[CheckedStatement, pa.Schema]:
        """The result schema of `sql`, learned without running it: a checked SELECT is
        only bound, in a READ ONLY transaction (see agentdata.bound_schema); EXPLAIN and
        writes have fixed schemas, but for DML with RETURNING (see `_write_schema`).

        A statement with placeholders needs `params` (NULLs give a best guess).
        """
        with self._query(principal, sql, None) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            return stmt, self._schema_on(cur, principal, stmt, params)

    def _schema_on(
        self,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        stmt: CheckedStatement,
        params: Sequence[Any] | Mapping[str, Any] | None,
    ) -> pa.Schema:
        limit = principal.max_rows + 1 if principal.max_rows is not None else None
        self._guard_cost(principal, cur, stmt, params, limit)
        if stmt.explain:
            return EXPLAIN_RESULT_SCHEMA
        if stmt.kind is Kind.WRITE:
            return self._write_schema(principal, stmt, params)
        key = self._cache_key(principal, stmt, params, limit)
        cached = self.results.schema_of(key, [_ANY_TABLE]) if key is not None else None
        if cached is not None:  # a hot query: its result, and so its schema, is at hand
            return cached
        with sqlguard.scrubbed(principal), translate_errors():
            return self._schemas.of(cur, stmt.sql, params)

    # -- reading -------------------------------------------------------------
    @audit.audited_stream(StreamOptions)
    def open_stream(
        self, principal: Principal, sql: str, options: StreamOptions | None = None
    ) -> ResultStream:
        """Run a read statement and return its result as a lazy batch stream.

        Write statements by writers run here too (result: one row, `rows`, or for DML
        with RETURNING the rows it returned). The query
        is stopped by the token's/server's timeout, by its expiry or revocation, by
        `cancel`, by the client going away, and by max_rows (error, or quiet
        truncation when options.truncate).
        """
        options = options or StreamOptions()
        with self._query(principal, sql, options.query_id) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            if stmt.kind is Kind.WRITE and options.reads_only:
                raise InvalidArgument(
                    f"this call runs queries only (SELECT, WITH, ...), not {stmt.statement_type}"
                )
            if stmt.kind is Kind.READ:
                max_rows = _least(principal.max_rows, options.max_rows)
                # One extra row tells "exactly max_rows" from "more than max_rows".
                limit = max_rows + 1 if max_rows is not None and not stmt.explain else None
                self._guard_cost(principal, cur, stmt, options.params, limit)
                federated = (
                    self.federation.open(rq, cur, principal, stmt, options.params, limit)
                    if self.federation is not None
                    else None
                )
                if federated is not None:  # Snowflake runs all or part of it
                    rq.detached = True
                    batches = self._batches(rq, federated, max_rows, options, prefetch=True)
                    if principal.governance is not None:
                        batches = governance.redacting_errors(batches)
                    return ResultStream(federated.schema, batches, rq.query_id, rq)
                cache_key = self._cache_key(principal, stmt, options.params, limit)
                cached = self.results.get(cache_key, [_ANY_TABLE]) if cache_key else None
                if cached is not None:
                    reader = pa.RecordBatchReader.from_batches(cached.schema, cached.batches)
                else:
                    with sqlguard.scrubbed(principal), translate_errors():
                        reader = arrow_stream(
                            cur, stmt.sql, options.params, batch_rows=self.batch_rows, limit=limit
                        )
                    rq.source = reader
                    if cache_key is not None:
                        reader = self._recording(reader, cache_key, rq.versions)
                metadata = {
                    **(reader.schema.metadata or {}),
                    b"agentdata.cache": b"hit" if cached is not None else b"miss",
                    b"agentdata.engine": b"duckdb",
                }
                read = frozenset(t for t in stmt.tables if t.split(".", 1)[0] not in SYSTEM_SCHEMAS)
                if read:
                    metadata[FRESHNESS_KEY] = self._freshness.encoded(read)
                schema = reader.schema.with_metadata(metadata)
                rq.detached = True  # the stream owns it now
                # A cached result is in memory already: nothing to produce ahead.
                batches = self._batches(rq, reader, max_rows, options, prefetch=cached is None)
                if principal.governance is not None:
                    # Rows outside the filter or under a mask must not surface in errors.
                    batches = governance.redacting_errors(batches)
                return ResultStream(schema, batches, rq.query_id, rq)
        # A write: runs under the serialized writer, not on the read-only cursor.
        if stmt.explain:
            table = self._explain_write(stmt).replace_schema_metadata(_DUCKDB_RAN)
            if options.on_finish:
                options.on_finish(table.num_rows, table.nbytes)
            return ResultStream(table.schema, iter(table.to_batches()))
        param_sets = [options.params] if options.params is not None else None
        result = self.run_write(principal, stmt, param_sets=param_sets).result()
        result = result.replace_schema_metadata(_DUCKDB_RAN)
        if options.on_finish:
            options.on_finish(result.num_rows, result.nbytes)
        return ResultStream(result.schema, iter(result.to_batches(self.batch_rows)))

    def _cache_key(
        self,
        principal: Principal,
        stmt: CheckedStatement,
        params: Sequence[Any] | Mapping[str, Any] | None,
        limit: int | None,
    ) -> tuple[Any, ...] | None:
        """The results-cache key of a read, or None if it must not be cached."""
        if not self.results.enabled or not stmt.deterministic or stmt.explain:
            return None
        return (
            principal.role,
            principal.tables,
            principal.governance,
            stmt.sql,
            params_key(params),
            limit,
        )

    def _recording(
        self, reader: pa.RecordBatchReader, key: tuple[Any, ...], versions: Versions
    ) -> pa.RecordBatchReader:
        """`reader`, keeping what passes (up to the cache's entry bound) and caching it
        once the whole result has been read."""
        recorder = Recorder(iter(reader), self.results.max_entry_bytes)

        def batches() -> Iterator[pa.RecordBatch]:
            yield from recorder
            if recorder.kept is not None:
                self.results.put(key, reader.schema, recorder.kept, versions)

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def _batches(
        self,
        rq: RunningQuery,
        reader: pa.RecordBatchReader,
        max_rows: int | None,
        options: StreamOptions,
        *,
        prefetch: bool,
    ) -> Iterator[pa.RecordBatch]:
        counts = [0, 0]  # rows, bytes
        done = threading.Event()
        # DuckDB produces the next batch while this one is being sent (agentdata.prefetch).
        ahead = Prefetcher(
            reader.read_next_batch,
            depth=1,
            name=f"produce-{rq.query_id[:8]}",
            inline=2 if prefetch else _NEVER,
        )

        def cleanup() -> None:
            # Runs once: at the end of iteration, or when the iterator is dropped
            # unstarted (a generator that never ran has no `finally` to run).
            if done.is_set():
                return
            done.set()
            with suppress(Exception):
                rq.cursor.interrupt()  # a producer mid-batch stops at once
            ahead.close()
            with suppress(Exception):
                reader.close()
            self._finish(rq)
            if options.on_finish:
                options.on_finish(counts[0], counts[1])

        gen = self._generate(rq, ahead, max_rows, options, counts, cleanup)
        weakref.finalize(gen, cleanup)
        return gen

    def _generate(
        self,
        rq: RunningQuery,
        batches: Prefetcher[pa.RecordBatch],
        max_rows: int | None,
        options: StreamOptions,
        counts: list[int],
        cleanup: Callable[[], None],
    ) -> Iterator[pa.RecordBatch]:
        max_bytes = min(self.max_batch_bytes, options.max_batch_bytes or self.max_batch_bytes)
        try:
            with translate_errors():
                while True:
                    if options.is_cancelled is not None and options.is_cancelled():
                        rq.stop(Cancelled("client went away"))
                    if rq.stop_reason is not None:
                        raise rq.stop_reason
                    try:
                        batch = next(batches)
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
                            raise ResourceExhausted(max_rows_message(max_rows))
                        batch = batch.slice(0, max_rows - counts[0])
                        options.truncated = True
                        counts[0] += batch.num_rows
                        counts[1] += batch.nbytes
                        if batch.num_rows:
                            yield batch
                        return
                    counts[0] += batch.num_rows
                    for piece in slice_by_bytes(batch, max_bytes):
                        counts[1] += piece.nbytes
                        yield piece
        finally:
            cleanup()

    # -- the cost guard --------------------------------------------------------
    def _guard_cost(
        self,
        principal: Principal,
        cur: duckdb.DuckDBPyConnection,
        stmt: CheckedStatement,
        params: Sequence[Any] | Mapping[str, Any] | None,
        limit: int | None,
    ) -> None:
        """Refuse, before anything runs, a read whose plan DuckDB estimates to handle more
        rows than the token's `max_scan_rows` (see agentdata.cost). Planning happens on
        the request's READ ONLY cursor, under its deadline, like the check."""
        budget = principal.max_scan_rows
        if budget is None or stmt.kind is not Kind.READ or (stmt.explain and not stmt.analyze):
            return  # a plain EXPLAIN runs nothing
        if stmt.explain:  # EXPLAIN ANALYZE runs what it wraps, to the end
            sql, limit = stmt.explained or stmt.sql, None
        else:
            sql = stmt.sql
        with sqlguard.scrubbed(principal), translate_errors():
            estimate = cost.estimate(cur, sql, params, limit=limit)
        if estimate.rows > budget:
            raise ResourceExhausted(
                f"the query is estimated to scan {estimate.rows:,} rows, over this token's "
                f"max_scan_rows budget of {budget:,}; narrow it (filters on indexed or sorted "
                "columns, a LIMIT, aggregates) and see the plan's estimate with EXPLAIN",
                detail={"estimated_rows": estimate.rows, "max_scan_rows": budget},
            )

    @audit.audited_call(refusals_only=False)
    def estimate(
        self, principal: Principal, sql: str
    ) -> tuple[CheckedStatement, cost.PlanEstimate]:
        """A read's plan and the cost guard's estimate of it, without running it
        (checked like any query; writes are refused)."""
        with self._query(principal, sql, None) as (rq, cur):
            stmt = self._check_on(rq, cur, principal, sql)
            if stmt.kind is Kind.WRITE:
                raise InvalidArgument("only queries (SELECT, WITH, ...) can be estimated")
            inner = (stmt.explained or stmt.sql) if stmt.explain else stmt.sql
            with sqlguard.scrubbed(principal), translate_errors():
                return stmt, cost.estimate(cur, inner)

    def query_table(self, principal: Principal, sql: str) -> pa.Table:
        """Run a (small) read and collect it: for metadata and tests, not for data paths."""
        return self.open_stream(principal, sql).to_reader().read_all()

    # -- running queries -----------------------------------------------------
    def _register(self, rq: RunningQuery) -> None:
        with self._running_lock:
            self._running[rq.key] = rq

    def _unregister(self, rq: RunningQuery) -> None:
        with self._running_lock:
            self._running.pop(rq.key, None)

    def cancel(self, principal: Principal, query_id: str) -> bool:
        """Cancel a running query owned by `principal` (admins may cancel any): every
        execution of it, when its ticket is being fetched more than once."""
        with self._running_lock:
            found = [rq for rq in self._running.values() if rq.query_id == query_id]
        if not found:
            return False
        if not principal.is_admin and any(rq.token_id != principal.token_id for rq in found):
            raise PermissionDenied("that query belongs to another token")
        for rq in found:
            rq.stop(Cancelled("query cancelled by request"))
        return True

    def park(self, stream: ResultStream) -> None:
        """A stream opened ahead of its consumer waits to be fetched (a GetFlightInfo that
        started its query). Meanwhile it gives its admission slots back, so a client that
        never fetches cannot lock its token out, and its timeout stops counting (it starts
        again, whole, at `unpark`), so a client slow to fetch is not timed out for the
        time it took. A token's expiry still stops it."""
        rq = stream.running
        if rq is None:
            return
        rq.parked = True
        if rq.timeout_timer is not None:
            self._watchdog.cancel(rq.timeout_timer)
            rq.timeout_timer = None
        if rq.release is not None:
            release, rq.release = rq.release, None
            release()

    def unpark(self, principal: Principal, stream: ResultStream) -> None:
        """A parked stream is about to be read: it takes admission slots again
        (ResourceExhausted when its token is at its limit, as for a new query), and its
        timeout counts from now."""
        rq = stream.running
        if rq is None or rq.key not in self._running:
            return  # ended while parked (stopped, or the server is closing)
        rq.parked = False
        if rq.release is None and self.admission is not None:
            rq.release = self.admission.admit(principal)
        if rq.timeout_timer is None and rq.stop_reason is None:
            self._arm_timeout(rq)

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
                self._written()
                if cursor is None:
                    cur.close()

    def execute_write(
        self,
        principal: Principal,
        stmt: CheckedStatement | str,
        *,
        param_sets: Sequence[Sequence[Any] | Mapping[str, Any]] | ParameterBatch | None = None,
    ) -> int:
        """Run one DDL/DML statement for a writer; returns rows changed (0 for DDL).

        With `param_sets`, the statement runs once per set of placeholder values, all
        in one transaction (all or nothing), and the row counts add up. A
        `ParameterBatch` (a client's bound record batch) for `INSERT ... VALUES (?, ...)`
        runs as one set-based `INSERT ... SELECT` over the batch instead (see
        `agentdata.param_batches`).
        """
        return self.run_write(principal, stmt, param_sets=param_sets).rows

    @audit.audited_call(refusals_only=False)
    def run_write(
        self,
        principal: Principal,
        stmt: CheckedStatement | str,
        *,
        param_sets: Sequence[Sequence[Any] | Mapping[str, Any]] | ParameterBatch | None = None,
    ) -> WriteOutcome:
        """`execute_write`, keeping what DML with RETURNING returned: those rows (of
        every parameter set, in order), whose number is the rows changed."""
        if isinstance(stmt, str):
            stmt = self.check(principal, stmt)
        principal.require_writer()
        sql = stmt.sql
        runs: Sequence[Sequence[Any] | Mapping[str, Any] | None] = [None]
        batch_view: tuple[str, pa.Table] | None = None
        conflicts: str | None = None
        if param_sets is not None and not isinstance(param_sets, ParameterBatch):
            runs = param_sets
        elif isinstance(param_sets, ParameterBatch):
            view = f"__agentdata_params_{uuid.uuid4().hex}"
            plan = param_batches.set_based(stmt.sql, view, param_sets.columns())
            if plan is not None:
                sql, runs, batch_view = plan.sql, [None], (view, param_sets.as_view())
                conflicts = plan.conflicts
            else:
                runs = _row_by_row(param_sets)
        changed = 0
        returned: list[pa.Table] = []
        with self.writer() as cur:
            before = _catalog(cur)
            schemas_before = _schemas(cur)
            if batch_view is not None:
                cur.register(*batch_view)
                if conflicts is not None and cur.execute(conflicts).fetchone() is not None:
                    # Two sets meet on one row: only the row-by-row run says which wins.
                    assert isinstance(param_sets, ParameterBatch)
                    sql, runs = stmt.sql, _row_by_row(param_sets)
            for params in runs:
                if stmt.returning:
                    # The relation API: DuckDB runs the DML now and hands its RETURNING
                    # rows to Arrow without the copy a DB-API result would make.
                    rel = cur.sql(sql, params=params)
                    table = with_json_extension(rel.to_arrow_table(), rel.types)
                    returned.append(table)
                    changed += table.num_rows
                    continue
                res = cur.execute(sql, params)
                try:
                    rows_out = res.fetchall()
                    row = rows_out[0] if rows_out else None
                except duckdb.Error:
                    row = None
                if row and isinstance(row[0], int) and stmt.statement_type in returning.DML:
                    changed += int(row[0])
            if stmt.row_check:  # a governed writer's rows (agentdata.governed_writes)
                governed_writes.require_admitted(returned)
            if batch_view is not None:
                cur.unregister(batch_view[0])
            # Bound tables plus any created by the statement changed now (dropped ones
            # leave the catalog; their stats go with them).
            after = _catalog(cur)
            # New names must be usable names; a bad one rolls the whole statement back.
            for schema in _schemas(cur) - schemas_before:
                validate_name(schema, "schema name")
            for qualified_name in after - before:
                for part in _catalog_parts(cur, qualified_name):
                    validate_name(part, "table name")
        # DML targets too: the binder does not report them (see returning.write_target).
        target = returning.write_target(stmt.sql, stmt.statement_type)
        written = set(stmt.tables) | ({target} if target else set())
        self.touch_tables(written & after | (after - before))
        for gone in before - after:
            # A dropped table's stats and descriptions go with it (a new table of the
            # same name starts undescribed).
            self.meta.execute("DELETE FROM table_stats WHERE name = ?", (gone,))
            self._freshness.changed()
            self.meta.execute("DELETE FROM descriptions WHERE name = ?", (gone,))
        if not stmt.returning or stmt.row_check:
            return WriteOutcome(changed)
        table = pa.concat_tables(returned) if len(returned) > 1 else returned[0]
        return WriteOutcome(changed, table)

    def _write_schema(
        self,
        principal: Principal,
        stmt: CheckedStatement,
        params: Sequence[Any] | Mapping[str, Any] | None,
    ) -> pa.Schema:
        """A write's result schema: `{rows}`, or for DML with RETURNING its returned
        columns, learned without running it where DuckDB allows (see
        `agentdata.returning`): the equivalent `SELECT <list> FROM <target> LIMIT 0`,
        bound in a READ ONLY transaction. Where no such SELECT exists (MERGE), or
        it does not bind, the write itself runs in a transaction that is rolled back,
        under the writer (writers only): that gives its exact columns, or the error the
        write would raise. Sequences it draws from stay advanced (DuckDB's sequences
        are not transactional), as after any failed write."""
        if not stmt.returning or stmt.row_check:
            return WRITE_RESULT_SCHEMA
        probe = returning.schema_probe(stmt.sql, stmt.statement_type)
        if probe is not None:
            # A cursor of its own: binding the write during the check may have aborted
            # the caller's READ ONLY transaction ("cannot write in read-only mode").
            rcur = self._read_cursor()
            try:
                with sqlguard.scrubbed(principal), translate_errors():
                    rel = rcur.sql(probe)
                    schema = rel.to_arrow_table().schema
                return json_schema(schema, rel.types) or schema
            except InvalidArgument:
                pass  # the write itself says what is wrong, below
            finally:
                rcur.close()
        principal.require_writer()
        with self._write_lock:
            wcur = self.cursor()
            try:
                with sqlguard.scrubbed(principal), translate_errors():
                    wcur.execute("BEGIN TRANSACTION")
                    try:
                        rel = wcur.sql(stmt.sql, params=params)
                        schema = rel.to_arrow_table().schema
                        return json_schema(schema, rel.types) or schema
                    finally:
                        wcur.execute("ROLLBACK")
            finally:
                wcur.close()

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
                self._written()
                cur.close()
        return table

    def touch_tables(
        self, names: set[str] | frozenset[str], *, synced: bool = False, snapshot: str | None = None
    ) -> None:
        """Record that tables changed now (ListFlights shows it as last-modified)."""
        now = time.time()
        try:
            self._touch(names, now, synced, snapshot)
        finally:
            self._freshness.changed()

    def _touch(self, names: Iterable[str], now: float, synced: bool, snapshot: str | None) -> None:
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
            described = descriptions.read(self.meta)
            out = []
            for schema, name, kind in rows:
                if schema in SYSTEM_SCHEMAS:
                    continue
                qualified = f"{schema}.{name}".lower()
                if not principal.can_read_table(qualified):
                    continue
                out.append(
                    self._table_info(
                        cur,
                        schema,
                        name,
                        kind,
                        stats.get(qualified),
                        described.get(qualified),
                        principal,
                    )
                )
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
            described = descriptions.read(self.meta, [qualified]).get(qualified)
            return self._table_info(cur, schema_name, table_name, kind, stat, described, principal)
        finally:
            cur.close()

    def catalog_name(self) -> str:
        """The database's catalog name as SQL sees it (`data` for data.duckdb)."""
        cur = self.cursor()
        try:
            with translate_errors():
                return str(cur.execute("SELECT current_database()").fetchall()[0][0])
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

    def column_nullability(self, schema: str, name: str) -> dict[str, bool]:
        """Whether each column of a table or view admits NULL (views: always)."""
        cur = self.cursor()
        try:
            with translate_errors():
                rows = cur.execute(
                    "SELECT column_name, is_nullable FROM duckdb_columns()"
                    " WHERE database_name = current_database() AND schema_name = $1 AND table_name = $2",
                    [schema, name],
                ).fetchall()
        finally:
            cur.close()
        return {r[0]: bool(r[1]) for r in rows}

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
        self,
        cur: duckdb.DuckDBPyConnection,
        schema: str,
        name: str,
        kind: str,
        stat: Any,
        described: descriptions.Described | None = None,
        principal: Principal | None = None,
    ) -> TableInfo:
        ref = f"{quote_ident(schema)}.{quote_ident(name)}"
        # A governed table is counted and typed as the token reads it.
        policy = governance.policy_for(principal, schema, name) if principal else None
        if policy is not None:
            ref = f"({governance.source_sql(cur, schema, name, policy, self.guard.mask_salt)})"
        with translate_errors():
            rel = cur.sql(f"SELECT * FROM {ref}").limit(0)
            arrow_schema = rel.to_arrow_table().schema
            arrow_schema = json_schema(arrow_schema, rel.types) or arrow_schema
            if policy is not None:
                arrow_schema = governance.mark_masked(arrow_schema, policy)
            rows = (
                cur.execute(f"SELECT count(*) FROM {ref}").fetchall()[0][0]
                if kind == "TABLE"
                else None
            )
        info = TableInfo(
            schema=schema,
            name=name,
            kind=kind,
            arrow_schema=arrow_schema,
            rows=rows,
            last_modified=stat["last_modified"] if stat else None,
            last_synced=stat["last_synced"] if stat else None,
            source_snapshot=stat["source_snapshot"] if stat else None,
            description=described.table if described else None,
            # Only columns the table has now (a dropped column's words are not shown).
            column_descriptions={
                c: text
                for c, text in (described.columns if described else {}).items()
                if c in arrow_schema.names
            },
        )
        return self.federation.locate(info) if self.federation is not None else info

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
        self._read_cursors.close()
        self._watchdog.stop()
        if self._memory_guard is not None:
            self._memory_guard.stop()
        if self.federation is not None:
            self.federation.close()
        with self._write_lock:
            self._closed = True
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as e:
                log.warning("checkpoint at shutdown failed: %s", e)
            self._close_connection()

    def _close_connection(self, wait_s: float = 5.0) -> None:
        # DuckDB refuses to close while a cursor made from this connection is inside a
        # call (a request thread whose query was just interrupted, on its way out): try
        # again until the calls are over, rather than leave the database open.
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._con.close()
                return
            except duckdb.ResourceInUseException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> tuple[str, ...]:
    # Every placeholder is written with `?` or `$`: a text with neither has none, and
    # DuckDB's parser (which holds the GIL while it parses) need not be asked. Cached:
    # a Flight SQL prepare asks twice, and clients re-prepare the same texts.
    if "?" not in sql and "$" not in sql:
        return ()
    try:
        statements = duckdb.extract_statements(sql)
    except (duckdb.Error, ValueError):
        return ()
    if len(statements) != 1:
        return ()
    names = list(statements[0].named_parameters)
    if all(n.isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


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


def _row_by_row(batch: ParameterBatch) -> list[Sequence[Any] | Mapping[str, Any]]:
    """A batch's parameter sets for running a statement once per set, refusing more than
    that is worth doing under the writer lock."""
    if len(batch) > param_batches.MAX_ROW_BY_ROW:
        raise PayloadTooLarge(
            f"{len(batch)} parameter sets for a statement that runs row by row "
            f"(at most {param_batches.MAX_ROW_BY_ROW}); INSERT ... VALUES (?, ...), "
            "DELETE ... WHERE and UPDATE ... WHERE run set-based: load bulk data with "
            "ingest (adbc_ingest)"
        )
    return batch.sets()


def max_rows_message(max_rows: int) -> str:
    """What a result over the token's `max_rows` is told: the cap, and how to take the
    first `max_rows` rows instead (truncation) on the channels that offer it."""
    return (
        f"result exceeds this token's max_rows ({max_rows}); narrow the query (a filter, "
        f"an aggregate, LIMIT {max_rows}), or ask for the first {max_rows} rows: as a "
        'Flight command send {"sql": "...", "truncate": true} (the last batch\'s metadata '
        'then says {"truncated": true}); for an export, POST /api/v1/exports with '
        '"truncate": true (agentdata export --truncate)'
    )


def _least(*limits: int | None) -> int | None:
    """The smallest of the limits that are set (None when none is)."""
    present = [x for x in limits if x is not None]
    return min(present) if present else None
