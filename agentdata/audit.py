"""The audit log: one record per query, on every channel, however it ends.

    {"time": ..., "token_id": "4f1c...", "token_name": "eu-analyst", "channel": "flightsql",
     "sql": "SELECT ...", "sql_hash": "<sha256 of the full text>", "tables_read": ["demo.orders"],
     "tables_written": [], "rows": 12, "bytes": 480, "duration_s": 0.004,
     "outcome": "ok" | "<error code>", "engine": "duckdb"}

The engine (`agentdata.engine`) writes a record when a query ends: after its stream
was read to the end or closed, when it was refused (the refusal's code), failed, timed
out (`deadline_exceeded`), was cancelled (`cancelled`) or stopped by revocation
(`unauthenticated`). A call nested in another (a write `open_stream` runs) is part of
the outer record; a refused GetFlightInfo / prepare is its own.

Records live in the meta store (`audit_log`), which agent SQL cannot reach. Writing
one must not slow queries down: `record` only appends to an in-memory buffer, and a
background thread inserts what gathered in one transaction every `_FLUSH_EVERY_S`
(readers flush first, so a listing sees every query that ended before it).
Retention: the maintenance rule `audit` deletes records older than
`audit_retention_s`.

The channel comes from the adapter (`channel("mcp")` around its engine calls; Flight
is the default); a job's delegated credential (an export reading its query) is
channel `export`.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agentdata import metrics, returning
from agentdata.errors import AgentdataError
from agentdata.meta import MetaStore
from agentdata.sqlguard import CheckedStatement, Kind

if TYPE_CHECKING:
    from agentdata.tokens import Principal

log = logging.getLogger(__name__)

CHANNELS = ("flight", "flightsql", "mcp", "rest", "export")

_CHANNEL: contextvars.ContextVar[str] = contextvars.ContextVar(
    "agentdata_channel", default="flight"
)
#: The record of the call being audited: nested engine calls are part of it.
_CURRENT: contextvars.ContextVar[QueryAudit | None] = contextvars.ContextVar(
    "agentdata_audited", default=None
)

_FLUSH_EVERY_S = 0.2
_MAX_BUFFER = 100_000

_COLUMNS = (
    "time",
    "token_id",
    "token_name",
    "channel",
    "sql",
    "sql_hash",
    "tables_read",
    "tables_written",
    "rows",
    "bytes",
    "duration_s",
    "outcome",
    "engine",
)


@contextmanager
def channel(name: str) -> Iterator[None]:
    """Attribute engine calls made inside to channel `name`."""
    token = _CHANNEL.set(name)
    try:
        yield
    finally:
        _CHANNEL.reset(token)


def current_channel(job_id: str | None) -> str:
    """The channel of the call in progress (a job's credential: `export`)."""
    return "export" if job_id is not None else _CHANNEL.get()


def note_statement(stmt: CheckedStatement) -> None:
    """Tell the record in the making which tables its statement reads or writes (the
    engine calls this once a statement passed the guard)."""
    current = _CURRENT.get()
    if current is None or current.noted:
        return
    current.noted = True
    if stmt.kind is Kind.WRITE:
        target = returning.write_target(stmt.sql, stmt.statement_type)
        current.tables_written = sorted(set(stmt.tables) | ({target} if target else set()))
    else:
        current.tables_read = sorted(stmt.tables)


class QueryAudit:
    """One query's record in the making; written once, however the query ends."""

    def __init__(self, log: AuditLog, principal: Principal, sql: str) -> None:
        self.log = log
        self.principal = principal
        self.sql = sql
        self.channel = current_channel(principal.job_id)
        self.started = time.monotonic()
        self.tables_read: list[str] = []
        self.tables_written: list[str] = []
        self.noted = False
        self.rows = 0
        self.nbytes = 0
        self.outcome = "ok"
        self._watching = False
        self._written = False

    def counts(self, rows: int, nbytes: int) -> None:
        """The stream ended with these totals (the engine's on_finish)."""
        self.rows, self.nbytes = rows, nbytes
        if not self._watching:  # never iterated: nothing else will write the record
            self.write()

    def fail(self, error: BaseException) -> None:
        self.outcome = error.code if isinstance(error, AgentdataError) else "internal"

    def watch(self, batches: Iterator[Any]) -> Iterator[Any]:
        """`batches`, noting an error that ends them; writes the record at the end (the
        engine's own cleanup, and so `counts`, runs before this `finally`)."""
        self._watching = True
        try:
            yield from batches
        except GeneratorExit:
            raise
        except BaseException as e:
            self.fail(e)
            raise
        finally:
            self.write()

    def write(self) -> None:
        if self._written:
            return
        self._written = True
        self.log.record(
            token_id=self.principal.token_id,
            token_name=self.principal.name,
            channel=self.channel,
            sql=self.sql,
            tables_read=self.tables_read,
            tables_written=self.tables_written,
            rows=self.rows,
            nbytes=self.nbytes,
            duration_s=time.monotonic() - self.started,
            outcome=self.outcome,
        )


F = TypeVar("F", bound=Callable[..., Any])


def audited_stream(default_options: Callable[[], Any]) -> Callable[[F], F]:
    """Decorates `Engine.open_stream(principal, sql, options)`: one record per call,
    written when its stream ends (or when it is refused). `default_options` makes the
    options of a call that passed none (the record needs their `on_finish`)."""

    def decorate(method: F) -> F:
        return _audited_stream(method, default_options)

    return decorate


def _audited_stream(method: F, default_options: Callable[[], Any]) -> F:
    @functools.wraps(method)
    def wrapper(engine: Any, principal: Principal, sql: str, options: Any = None) -> Any:
        log: AuditLog | None = engine.audit
        if log is None or _CURRENT.get() is not None:
            return method(engine, principal, sql, options)
        options = options or default_options()
        q = QueryAudit(log, principal, sql)
        then = options.on_finish

        def finished(rows: int, nbytes: int) -> None:
            if then is not None:
                then(rows, nbytes)
            q.counts(rows, nbytes)

        options.on_finish = finished
        token = _CURRENT.set(q)
        try:
            stream = method(engine, principal, sql, options)
        except BaseException as e:
            q.fail(e)
            q.write()
            raise
        finally:
            _CURRENT.reset(token)
        stream.batches = q.watch(stream.batches)
        return stream

    return wrapper  # type: ignore[return-value]


def audited_call(*, refusals_only: bool) -> Callable[[F], F]:
    """Decorates an engine call `(principal, sql, ...)`: one record per call (the rows
    of a write outcome), or with `refusals_only` (a schema asked before a query runs:
    GetFlightInfo, a prepare) a record only when the call fails."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(engine: Any, principal: Principal, sql: Any, *args: Any, **kw: Any) -> Any:
            log: AuditLog | None = engine.audit
            if log is None or _CURRENT.get() is not None:
                return method(engine, principal, sql, *args, **kw)
            q = QueryAudit(log, principal, sql if isinstance(sql, str) else sql.sql)
            token = _CURRENT.set(q)
            try:
                if not isinstance(sql, str):  # a statement the guard checked earlier
                    note_statement(sql)
                result = method(engine, principal, sql, *args, **kw)
            except BaseException as e:
                q.fail(e)
                q.write()
                raise
            finally:
                _CURRENT.reset(token)
            if not refusals_only:
                rows = getattr(result, "rows", None)
                q.rows = int(rows) if isinstance(rows, int) else 0
                q.write()
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class AuditFilter:
    """What `AuditLog.list` selects."""

    token_id: str | None = None
    since: float | None = None
    until: float | None = None
    outcome: str | None = None  # "ok", "error" (anything else) or one error code
    table: str | None = None  # "schema.table", read or written


class AuditLog:
    """Buffered writer and reader of the `audit_log` table."""

    def __init__(self, meta: MetaStore, *, sql_max_chars: int = 4096) -> None:
        self._meta = meta
        self.sql_max_chars = sql_max_chars
        self._buffer: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    # -- writing ---------------------------------------------------------------------
    def record(
        self,
        *,
        token_id: str,
        token_name: str,
        channel: str,
        sql: str,
        tables_read: Iterable[str] = (),
        tables_written: Iterable[str] = (),
        rows: int = 0,
        nbytes: int = 0,
        duration_s: float = 0.0,
        outcome: str = "ok",
        engine: str = "duckdb",
    ) -> None:
        """Queue one record (never raises: auditing must not fail a query)."""
        try:
            row = (
                time.time(),
                token_id,
                token_name,
                channel,
                sql,  # cut, hashed and the table lists encoded by the writer (`flush`)
                tuple(tables_read),
                tuple(tables_written),
                int(rows),
                int(nbytes),
                round(float(duration_s), 6),
                outcome,
                engine,
            )
            with self._lock:
                if len(self._buffer) < _MAX_BUFFER:
                    self._buffer.append(row)
            metrics.TOKEN_QUERIES.labels(token_name, "ok" if outcome == "ok" else "error").inc()
            if rows:
                metrics.TOKEN_ROWS.labels(token_name).inc(rows)
            if outcome != "ok":
                metrics.TOKEN_ERRORS.labels(token_name, outcome).inc()
        except Exception:  # pragma: no cover - a bug here must not fail the query
            log.exception("could not queue an audit record")

    def flush(self) -> int:
        """Write what is buffered now; returns how many records."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        if not rows:
            return 0
        marks = ", ".join("?" * len(_COLUMNS))
        with self._meta.transaction() as tx:
            tx.executemany(
                f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [self._encoded(row) for row in rows],
            )
        return len(rows)

    def _encoded(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A queued record as its table row: the work done off the query's path."""
        at, token_id, token_name, channel, sql, read, written, *rest = row
        return (
            at,
            token_id,
            token_name,
            channel,
            sql[: self.sql_max_chars],
            hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest(),
            json.dumps(sorted(set(read))),
            json.dumps(sorted(set(written))),
            *rest,
        )

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(_FLUSH_EVERY_S)
            try:
                self.flush()
            except Exception:
                log.exception("could not write audit records (will retry)")

    def close(self) -> None:
        """Write what is left and stop the writer thread."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception:
            log.exception("could not write the last audit records")

    # -- reading -----------------------------------------------------------------------
    def list(
        self, where: AuditFilter, *, limit: int = 100, cursor: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Records matching `where`, newest first; (page, cursor of the next page)."""
        self.flush()
        clauses: list[str] = []
        params: list[Any] = []
        if where.token_id is not None:
            clauses.append("token_id = ?")
            params.append(where.token_id)
        if where.since is not None:
            clauses.append("time >= ?")
            params.append(where.since)
        if where.until is not None:
            clauses.append("time < ?")
            params.append(where.until)
        if where.outcome == "error":
            clauses.append("outcome <> 'ok'")
        elif where.outcome is not None:
            clauses.append("outcome = ?")
            params.append(where.outcome)
        if where.table is not None:
            # JSON arrays of lower-case names: match one element exactly.
            clauses.append(
                "(EXISTS (SELECT 1 FROM json_each(tables_read) WHERE value = ?)"
                " OR EXISTS (SELECT 1 FROM json_each(tables_written) WHERE value = ?))"
            )
            params.extend([where.table.lower()] * 2)
        if cursor is not None:
            clauses.append("seq < ?")
            params.append(cursor)
        sql = "SELECT * FROM audit_log"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq DESC LIMIT ?"
        rows = self._meta.all(sql, (*params, limit + 1))
        page = [_entry(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, (int(rows[limit - 1]["seq"]) if more and limit > 0 else None)

    def delete_before(self, cutoff: float) -> int:
        """Delete records older than `cutoff` (retention); returns how many."""
        self.flush()
        return self._meta.execute("DELETE FROM audit_log WHERE time < ?", (cutoff,))


def _entry(r: Any) -> dict[str, Any]:
    return {
        "id": int(r["seq"]),
        "time": r["time"],
        "token_id": r["token_id"],
        "token_name": r["token_name"],
        "channel": r["channel"],
        "sql": r["sql"],
        "sql_hash": r["sql_hash"],
        "tables_read": json.loads(r["tables_read"]),
        "tables_written": json.loads(r["tables_written"]),
        "rows": r["rows"],
        "bytes": r["bytes"],
        "duration_s": r["duration_s"],
        "outcome": r["outcome"],
        "engine": r["engine"],
    }
