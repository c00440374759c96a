"""Stream freshness comes from a cache of the meta store, renewed by every change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentdata.engine import Engine, StreamOptions
from agentdata.freshness import read_freshness
from agentdata.tokens import Principal, Role
from tests.support.inprocess import open_engine

READER = Principal("r", "reader", Role.READER)
WRITER = Principal("w", "writer", Role.WRITER)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(tmp_path) as eng:
        eng.run_write(WRITER, "CREATE TABLE main.t AS SELECT 1 AS v")
        yield eng


def _freshness(engine: Engine) -> dict[str, str | None]:
    stream = engine.open_stream(READER, "SELECT v FROM main.t", StreamOptions())
    stream.to_reader().read_all()
    return read_freshness(stream.schema)["main.t"]


def test_a_write_and_a_sync_show_in_the_next_read(engine: Engine) -> None:
    first = _freshness(engine)
    assert first["last_modified"] is not None and first["last_synced"] is None
    assert _freshness(engine) == first  # answered from the cache
    engine.run_write(WRITER, "INSERT INTO main.t VALUES (2)")
    second = _freshness(engine)
    assert second["last_modified"] > first["last_modified"]  # type: ignore[operator]
    engine.touch_tables({"main.t"}, synced=True, snapshot="snap-1")
    third = _freshness(engine)
    assert third["source"] == "snap-1" and third["last_synced"] is not None


def test_a_dropped_and_recreated_table_starts_afresh(engine: Engine) -> None:
    engine.touch_tables({"main.t"}, synced=True, snapshot="snap-1")
    assert _freshness(engine)["source"] == "snap-1"
    engine.run_write(WRITER, "DROP TABLE main.t")
    engine.run_write(WRITER, "CREATE TABLE main.t AS SELECT 1 AS v")
    assert _freshness(engine)["source"] is None
