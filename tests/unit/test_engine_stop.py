"""Stopping a query (cancel, timeout, revocation) holds even when the stop lands between
two statements on the query's cursor, where DuckDB drops an interrupt: the engine keeps
interrupting until the query ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from agentdata.engine import Engine
from agentdata.errors import Cancelled
from agentdata.tokens import Principal, Role
from tests.support.inprocess import open_engine

READER = Principal("r", "reader", Role.READER)

#: Minutes of work on any machine: it only ends early if it is interrupted.
SLOW_SQL = "SELECT count(*) FROM range(200000000) a, range(1000) b WHERE a.range + b.range < 0"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(tmp_path) as eng:
        yield eng


def test_a_stop_before_the_query_starts_still_interrupts_it(engine: Engine) -> None:
    cur = engine._read_cursor()
    rq = engine._start(READER, SLOW_SQL, None, cur)
    # The stop lands while nothing runs on the cursor: DuckDB forgets that interrupt.
    rq.stop(Cancelled("query cancelled by request"))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            cur.execute(SLOW_SQL).fetchall()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)  # a deadline against hanging, not a timing claim
    try:
        assert not thread.is_alive(), "the stopped query ran on"
        assert isinstance(outcome[0], duckdb.InterruptException), outcome
    finally:
        engine._finish(rq)


def test_interrupting_stops_once_the_query_has_ended(engine: Engine) -> None:
    cur = engine._read_cursor()
    rq = engine._start(READER, "SELECT 1", None, cur)
    rq.stop(Cancelled("query cancelled by request"))
    engine._finish(rq)
    assert engine.running_count() == 0
    # Nothing is left scheduled: no timeout, no re-interrupt chain for a finished query.
    deadline = time.monotonic() + 10
    while engine._watchdog._callbacks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._watchdog._callbacks == {}


def test_a_stopped_parked_stream_is_not_interrupted_again_and_again(engine: Engine) -> None:
    """Cancelled while it waits for its DoGet, a parked stream runs nothing: the engine
    does not keep interrupting it (it did, every 50 ms, until the DoGet or the TTL);
    the DoGet then ends at once with the reason."""
    stream = engine.open_stream(READER, "SELECT * FROM range(1000)")
    engine.park(stream)
    assert stream.query_id is not None
    assert engine.cancel(READER, stream.query_id)
    # Nothing left scheduled once the chain sees it parked: no timeout, no re-interrupt.
    deadline = time.monotonic() + 10
    while engine._watchdog._callbacks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._watchdog._callbacks == {}
    engine.unpark(READER, stream)
    with pytest.raises(Cancelled):
        next(iter(stream))
    assert engine.running_count() == 0


class _BusyOnce:
    """The engine's connection, refusing its first close as DuckDB does while a cursor
    made from it is still inside a call."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        if self.closes == 1:
            raise duckdb.ResourceInUseException("a cursor is still in a call")
        self.con.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.con, name)


def test_close_waits_for_cursors_still_in_a_call(engine: Engine) -> None:
    """Closing while a request thread is on its way out of an interrupted call: DuckDB
    refuses once; the engine tries again instead of leaving the database open."""
    busy = _BusyOnce(engine._con)
    engine._con = busy  # type: ignore[assignment]
    engine.close()
    assert busy.closes == 2
    with pytest.raises(duckdb.ConnectionException):
        busy.con.execute("SELECT 1")
