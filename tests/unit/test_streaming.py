"""Which reads start at no cost (agentdata.streaming), from the parse tree and through
the engine: a one-table read with filters and scalar functions does; anything that
sorts, aggregates, joins, reads a view, a remote table or a governed table does not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from agentdata.engine import Engine, StreamOptions
from agentdata.governance import Governance
from agentdata.streaming import starts_at_once
from agentdata.tokens import Principal, Role
from tests.support.inprocess import open_engine

TABLES = {("main", "t"), ("bench", "pk")}


def _tree(sql: str) -> dict[str, Any]:
    con = duckdb.connect()
    try:
        return json.loads(con.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()[0][0])
    finally:
        con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM bench.pk WHERE id = 5",
        "SELECT * FROM t LIMIT 10",
        "SELECT upper(a), a + 1 FROM t WHERE a IN (1, 2) AND b LIKE 'x%'",
        "SELECT list_transform([1, 2], x -> x + 1) FROM t",
    ],
)
def test_one_table_filters_and_scalar_functions_start_at_once(sql: str) -> None:
    assert starts_at_once(_tree(sql), TABLES, set())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM t",
        "SELECT first(a) FROM t",
        "SELECT a FROM t ORDER BY a",
        "SELECT DISTINCT a FROM t",
        "SELECT a FROM t GROUP BY a",
        "SELECT sum(a) OVER () FROM t",
        "SELECT * FROM t WHERE a IN (SELECT 1)",
        "SELECT * FROM t, t AS u",
        "WITH x AS (SELECT 1) SELECT * FROM t",
        "SELECT * FROM t UNION SELECT * FROM t",
        "SELECT * FROM range(10)",
        "SELECT * FROM v",  # not a table of ours (a view, say)
        "SELECT * FROM t QUALIFY a > 1",
        "SELECT my_macro(a) FROM t",
    ],
)
def test_anything_that_may_work_before_its_first_row_does_not(sql: str) -> None:
    assert not starts_at_once(_tree(sql), TABLES, {"my_macro"})


# -- through the engine --------------------------------------------------------------
READER = Principal("r", "reader", Role.READER)
ADMIN = Principal("a", "admin", Role.ADMIN)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(
        tmp_path,
        "CREATE TABLE main.t AS SELECT range AS a, range % 3 AS b FROM range(10)",
        "CREATE VIEW main.v AS SELECT b, count(*) AS n FROM main.t GROUP BY b",
    ) as eng:
        yield eng


def _checked(engine: Engine, principal: Principal, sql: str) -> bool:
    engine.open_stream(principal, sql, StreamOptions()).to_reader().read_all()
    return engine.starts_at_once(principal, sql)


def test_the_engine_knows_only_after_a_first_check(engine: Engine) -> None:
    sql = "SELECT a FROM main.t WHERE a = 3"
    assert not engine.starts_at_once(READER, sql)  # never checked: bind it this time
    assert _checked(engine, READER, sql)
    assert engine.starts_at_once(READER, "SELECT a FROM main.t WHERE a = 4")  # same shape


def test_a_view_a_governed_table_and_an_admin_never_start_at_once(engine: Engine) -> None:
    assert not _checked(engine, READER, "SELECT * FROM main.v WHERE b = 1")
    governed = replace(
        READER, token_id="g", governance=Governance.from_maps({"main.t": "b = 1"}, None)
    )
    assert not _checked(engine, governed, "SELECT a FROM main.t WHERE a = 3")
    assert not _checked(engine, ADMIN, "SELECT a FROM main.t WHERE a = 3")


def test_a_read_of_a_remote_table_does_not(engine: Engine) -> None:
    class Remote:
        def reads_remote(self, tables: frozenset[str]) -> bool:
            return "main.t" in tables

        def open(self, *args: Any) -> None:
            return None  # run it locally here: only the classification is under test

        def close(self) -> None:
            return None

    engine.federation = Remote()  # type: ignore[assignment]
    assert not _checked(engine, READER, "SELECT a FROM main.t WHERE a = 3")
