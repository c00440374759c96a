"""READ ONLY cursors begun ahead (agentdata.read_cursors): still read only, still
reading the data committed before they are used, never holding a stale clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from agentdata.read_cursors import ReadCursors


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect(str(tmp_path / "db.duckdb"))
    c.execute("CREATE TABLE t AS SELECT 1 AS v")
    yield c
    c.close()


def _ready_count(pool: ReadCursors, want: int, deadline_s: float = 10.0) -> int:
    deadline = time.monotonic() + deadline_s
    while len(pool._ready) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(pool._ready)


def test_a_taken_cursor_cannot_write(con: duckdb.DuckDBPyConnection) -> None:
    pool = ReadCursors(con.cursor, size=2)
    try:
        cur = pool.take()
        with pytest.raises(duckdb.Error, match="(?i)read-only|read only"):
            cur.execute("INSERT INTO t VALUES (2)")
        cur.close()
    finally:
        pool.close()


def test_a_cursor_begun_ahead_reads_what_was_committed_after_it_began(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """The property the pool rests on: DuckDB takes the snapshot at first access."""
    pool = ReadCursors(con.cursor, size=2, max_age_s=60)
    try:
        pool.take().close()  # starts the refiller
        assert _ready_count(pool, 2) == 2
        con.execute("INSERT INTO t VALUES (2)")
        cur = pool.take()
        assert cur.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
        cur.close()
    finally:
        pool.close()


def test_a_ready_cursor_older_than_max_age_is_not_handed_out(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """now() is the transaction's start: an old ready cursor would answer an old time."""
    pool = ReadCursors(con.cursor, size=1, max_age_s=0.05)
    try:
        pool.take().close()
        assert _ready_count(pool, 1) == 1
        time.sleep(0.3)  # let the ready cursor age past max_age_s (the point of the test)
        before = datetime.now(UTC)
        cur = pool.take()
        (now,) = cur.execute("SELECT now()").fetchone()  # type: ignore[misc]
        cur.close()
        assert now >= before.replace(microsecond=before.microsecond // 1000 * 1000)
    finally:
        pool.close()


def test_close_closes_the_ready_cursors_and_ends_the_refiller(
    con: duckdb.DuckDBPyConnection,
) -> None:
    pool = ReadCursors(con.cursor, size=2)
    pool.take().close()
    assert _ready_count(pool, 2) == 2
    ready = [cur for _, cur in pool._ready]
    thread = pool._thread
    pool.close()
    assert thread is not None and not thread.is_alive()
    assert not pool._ready
    for cur in ready:
        with pytest.raises(duckdb.Error):
            cur.execute("SELECT 1")


def test_the_refiller_outlives_a_failure_that_is_not_duckdbs(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """The engine's cursor factory raises its own errors (Unavailable while closing): the
    refiller backs off and goes on, instead of dying (which also failed whatever test was
    running, as an unhandled thread exception)."""
    calls = [0]

    def open_cursor() -> duckdb.DuckDBPyConnection:
        calls[0] += 1
        if calls[0] == 2:  # the refiller's first
            raise RuntimeError("the engine is closing")
        return con.cursor()

    pool = ReadCursors(open_cursor, size=2)
    try:
        pool.take().close()  # made now; the refiller starts, fails once, then fills
        assert _ready_count(pool, 2) == 2
        assert calls[0] == 4
    finally:
        pool.close()
