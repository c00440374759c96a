"""Running pushed-down SELECTs in Snowflake and streaming their Arrow results.

    remote = RemoteQuery.start(pool, "SELECT ...", on_stop=rq.on_stop)  # runs now
    for table in remote.chunks():      # fetch_arrow_batches: chunk by chunk, never all
        ...
    remote.close()                     # the connection goes back to the pool

Connections come from the same credentials the syncs use (`SNOWFLAKE_*` variables or
the secrets file, `workers.sync.credentials`) and are kept in a small pool: a login
costs a round trip or two that a query should not pay each time.

Cancellation: each statement is sent with a request id of ours (the connector's
`requestId` statement parameter), so a stop (timeout, cancel, revoked token, client
gone; `RunningQuery.on_stop`) can ask Snowflake to abort it while `execute` is still
waiting for it. This is the same abort request the connector's own `timeout=` sends.

Errors cross here once (`translate`): the sync extractor's rule sorts them into
transient (`[unavailable]`) and terminal; a terminal SQL error (compilation, missing
object) is the query's fault (`[invalid_argument]`), a refused login the server's
(`[unavailable]`, not transient). Messages never carry URLs, hosts, the account or
user: only Snowflake's own words for SQL errors, and error codes in `detail`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import pyarrow as pa

from agentdata.errors import AgentdataError, InvalidArgument, Unavailable

log = logging.getLogger("agentdata.federation")

#: Connector options federation relies on, whatever the credentials say.
_REQUIRED_OPTIONS: dict[str, Any] = {
    # NUMBER(p,s) as decimal128, not float64 (which loses digits): the sync mapping.
    "arrow_number_to_decimal": True,
}


class SnowflakeSide(Protocol):
    """What federation borrows from the sync stages (`workers.sync`), so that remote and
    synced tables agree: the credentials and the type mapping. The core may not import
    `workers`; the `serve` launcher passes `workers.sync.federation.SyncSnowflakeSide`."""

    def connect_kwargs(self) -> dict[str, Any]:
        """Arguments of `snowflake.connector.connect`, secrets included (never log them)."""
        ...

    def columns(self, metadata: Sequence[Any]) -> list[tuple[str, str, str]]:
        """(exact name, DuckDB type, Snowflake type) of described columns."""
        ...

    def arrow_type(self, duckdb_type: str) -> Any:
        """The Arrow type a column of `duckdb_type` is loaded as."""
        ...

    def table_source(self, source: str) -> str:
        """`source` validated as DB.SCHEMA.TABLE."""
        ...


class SnowflakePool:
    """Idle Snowflake connections, reused across queries (thread-safe)."""

    def __init__(
        self,
        side: SnowflakeSide,
        *,
        max_idle: int = 4,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.side = side
        self._max_idle = max_idle
        self._connect_options = dict(connect_options or {})
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self, *, fresh: bool = False) -> tuple[Any, bool]:
        """(an open connection, whether it was idle in the pool): an idle one, or a new
        login (always with `fresh`)."""
        with self._lock:
            while self._idle and not fresh:
                conn = self._idle.pop()
                if not conn.is_closed():
                    return conn, True
        return self._connect(), False

    def release(self, conn: Any, *, healthy: bool) -> None:
        """Give a connection back; an unhealthy one (after a transient error) is closed."""
        if healthy and not conn.is_closed():
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def _connect(self) -> Any:
        import snowflake.connector

        try:
            kwargs = self.side.connect_kwargs()
        except AgentdataError as e:
            raise Unavailable(
                f"federation needs Snowflake credentials: {e.message}",
                detail={"transient": False},
            ) from None
        session_parameters = {
            # Telemetry posts to Snowflake's own endpoints; a query needs none of it.
            "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            **self._connect_options.get("session_parameters", {}),
        }
        kwargs.update(self._connect_options)
        kwargs.update(_REQUIRED_OPTIONS)
        kwargs["session_parameters"] = session_parameters
        with translate(None):
            return snowflake.connector.connect(**kwargs)

    # -- metadata (declaring and refreshing remote tables) -------------------------------
    def describe(self, source: str) -> tuple[list[Any], int | None]:
        """(connector column metadata, row count) of a table source, reading no rows:
        DESCRIBE-only for the columns, COUNT(*) (answered from Snowflake's metadata) for
        the rows."""
        conn, _ = self.acquire()
        healthy = True
        try:
            with translate(None), contextlib.closing(conn.cursor()) as cur:
                metadata = cur.describe(f"SELECT * FROM {source}")
                cur.execute(f"SELECT COUNT(*) FROM {source}")
                row = cur.fetchone()
            return list(metadata or []), int(row[0]) if row else None
        except Unavailable:
            healthy = False
            raise
        finally:
            self.release(conn, healthy=healthy)


class RemoteQuery:
    """One statement running (or run) in Snowflake, and its result chunks."""

    def __init__(self, pool: SnowflakePool, sql: str) -> None:
        self.pool = pool
        self.sql = sql
        self.request_id = uuid.uuid4()
        self.query_id: str | None = None
        self.rows = 0
        self.bytes = 0
        self._conn, self._reused = pool.acquire()
        self._cursor: Any = None
        self._healthy = True
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        pool: SnowflakePool,
        sql: str,
        *,
        on_stop: list[Callable[[], None]],
        stopped: Callable[[], AgentdataError | None],
    ) -> RemoteQuery:
        """Send `sql` and wait until Snowflake has its result (a stop aborts it there).

        `on_stop` gets this query's cancel; `stopped()` says why the request was
        stopped, if it was: that reason wins over whatever error the abort caused."""
        query = cls(pool, sql)
        on_stop.append(query.cancel)
        try:
            reason = stopped()
            if reason is not None:
                raise reason
            try:
                query._execute()
            except Unavailable:
                if not query._reused or stopped() is not None:
                    raise
                # An idle connection whose session died (Snowflake restarted, the
                # session expired): once more on a fresh login, before giving up.
                query._replace_connection()
                query._execute()
        except BaseException as e:
            query.close()
            reason = stopped()
            if reason is not None and reason is not e:
                raise reason from None
            raise
        return query

    def _execute(self) -> None:
        with translate(self.query_id):
            self._cursor = self._conn.cursor()
        try:
            with translate(self.query_id):
                self._cursor.execute(
                    self.sql, _statement_params={"requestId": str(self.request_id)}
                )
        except Unavailable:
            self._healthy = False
            raise
        finally:
            self.query_id = getattr(self._cursor, "sfqid", None) or self.query_id

    def _replace_connection(self) -> None:
        if self._cursor is not None:
            with contextlib.suppress(Exception):
                self._cursor.close()
        self.pool.release(self._conn, healthy=False)
        self._cursor = None
        self._healthy = True
        self._conn, self._reused = self.pool.acquire(fresh=True)
        self.request_id = uuid.uuid4()

    def chunks(self) -> Iterator[pa.Table]:
        """The result, one Snowflake chunk at a time (as the connector downloads them)."""
        try:
            with translate(self.query_id):
                tables = self._cursor.fetch_arrow_batches(force_microsecond_precision=True)
            while True:
                with translate(self.query_id):
                    table = next(tables, None)
                if table is None:
                    return
                self.rows += table.num_rows
                self.bytes += table.nbytes
                yield table
        except Unavailable:
            self._healthy = False
            raise

    def cancel(self) -> None:
        """Ask Snowflake to abort the statement (from another thread; returns at once)."""
        if self._closed or self._cursor is None:
            return

        def abort() -> None:
            with contextlib.suppress(Exception):
                # The connector's own timeout sends exactly this request.
                self._conn._cancel_query(self.sql, self.request_id)

        threading.Thread(target=abort, name="snowflake-abort", daemon=True).start()

    def close(self) -> None:
        """Release the cursor and return the connection to the pool (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._cursor is not None:
            with contextlib.suppress(Exception):
                self._cursor.close()
        self.pool.release(self._conn, healthy=self._healthy)


# -- errors -----------------------------------------------------------------------------

#: URLs and host:port pairs the connector puts into its messages.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I)
_HOST_PORT = re.compile(r"\b[\w.-]+:\d{2,5}\b")
_SQL_STATES_OF_THE_QUERY = ("42", "22", "0A")  # syntax/access rule, data, unsupported


def _scrub(text: str) -> str:
    return _HOST_PORT.sub("<host>", _URL.sub("<url>", text)).strip()


@contextlib.contextmanager
def translate(query_id: str | None) -> Iterator[None]:
    """Re-raise Snowflake (and socket) exceptions as the project's errors."""
    try:
        yield
    except AgentdataError:
        raise
    except Exception as exc:
        error = to_error(exc, query_id)
        if error is None:
            raise
        raise error from exc


def to_error(exc: BaseException, query_id: str | None = None) -> AgentdataError | None:
    """The project error for a connector exception (None if `exc` is not one)."""
    from agentdata.snowflake_errors import classify

    transient = classify(exc)
    if transient is None:
        return None
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    detail: dict[str, Any] = {"transient": transient, "source": "snowflake"}
    if isinstance(errno, int) and errno >= 0:
        detail["errno"] = errno
    if isinstance(sqlstate, str) and sqlstate != "n/a":
        detail["sqlstate"] = sqlstate
    if query_id:
        detail["snowflake_query_id"] = query_id
    if transient:
        return Unavailable(
            "Snowflake is unreachable or failed for now; try again shortly", detail=detail
        )
    code = detail.get("errno")
    if (isinstance(code, int) and 390000 <= code < 391000) or str(sqlstate).startswith("28"):
        return Unavailable(
            "Snowflake refused the server's credentials; an administrator must fix the "
            "Snowflake settings",
            detail=detail,
        )
    message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    if str(sqlstate).startswith(_SQL_STATES_OF_THE_QUERY) or type(exc).__name__ in (
        "ProgrammingError",
        "DataError",
        "NotSupportedError",
    ):
        return InvalidArgument(f"Snowflake refused the query: {_scrub(message)}", detail=detail)
    return Unavailable(f"Snowflake failed: {_scrub(message)}", detail=detail)
