"""The cost guard's estimate, from DuckDB's own plans (no server)."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from agentdata.cost import estimate


@pytest.fixture(scope="module")
def cur() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("CREATE TABLE big AS SELECT range AS id, range % 7 AS k FROM range(100000)")
    con.execute("CREATE TABLE small AS SELECT range AS id FROM range(100)")
    cursor = con.cursor()
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    yield cursor
    con.close()


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT * FROM big", 100_000),
        ("SELECT * FROM big LIMIT 10", 10),  # a streaming LIMIT stops the scan early
        ("SELECT sum(k) FROM big", 100_000),  # an aggregate reads everything
        ("SELECT count(*) FROM big", 1),  # ...but DuckDB answers count(*) from metadata
        ("SELECT * FROM big ORDER BY k LIMIT 10", 200_000),  # top-N: a full scan (twice)
        ("SELECT * FROM big, small", 10_000_000),  # a cross product costs what it makes
        ("SELECT * FROM range(1000000000)", 1_000_000_000),
    ],
)
def test_estimates(cur: duckdb.DuckDBPyConnection, sql: str, rows: int) -> None:
    assert estimate(cur, sql).rows == rows


def test_a_server_row_cap_counts_like_a_limit(cur: duckdb.DuckDBPyConnection) -> None:
    assert estimate(cur, "SELECT * FROM big", limit=101).rows == 101
    assert estimate(cur, "SELECT k, count(*) FROM big GROUP BY k", limit=101).rows == 100_000


def test_the_plan_is_readable(cur: duckdb.DuckDBPyConnection) -> None:
    plan = estimate(cur, "SELECT * FROM big WHERE id = 5 LIMIT 3").plan
    assert "SEQ_SCAN" in plan and "big" in plan and "rows" in plan
