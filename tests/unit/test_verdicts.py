"""Cached guard verdicts (agentdata.verdicts): a text that differs from a checked one
only inside its numbers reuses the verdict; nothing else does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentdata.engine import Engine, StreamOptions
from agentdata.errors import PermissionDenied, ResourceExhausted
from agentdata.sqlguard import CheckedStatement, Kind
from agentdata.tokens import Principal, Role
from agentdata.verdicts import Verdicts, numeric_shape
from tests.support.inprocess import open_engine

READER = Principal("r", "reader", Role.READER)
LIMITED = Principal("l", "limited", Role.READER, tables=("main.visible",))


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = \x00"),
        ("SELECT 1e-5, .5, 1.e3, 1.", "SELECT \x00, \x00, \x00, \x00"),
        ("SELECT a FROM t LIMIT 10 OFFSET 5", "SELECT a FROM t LIMIT \x00 OFFSET \x00"),
        ("SELECT -3, 1-2", "SELECT -\x00, \x00-\x00"),
    ],
)
def test_plain_numbers_become_holes(sql: str, shape: str) -> None:
    assert numeric_shape(sql) == shape


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $1, 2",  # a parameter's number names which parameter
        "SELECT #2 FROM t",  # a column position
        "SELECT t.1 FROM t",
        "SELECT 0x1F",
        "SELECT 1_000",
        "SELECT 12abc",
        "SELECT 'no numbers here'",
        "SELECT x1 FROM t -- 42",  # in an identifier and a comment: not numbers
        "SELECT 1\x00",
    ],
)
def test_ambiguous_or_absent_numbers_give_no_shape(sql: str) -> None:
    assert numeric_shape(sql) is None


def _read(sql: str, **kw: Any) -> CheckedStatement:
    return CheckedStatement(
        sql=sql, kind=Kind.READ, statement_type="SELECT", tables=frozenset(), **kw
    )


def test_a_verdict_is_shared_by_texts_of_the_same_numeric_shape_only() -> None:
    v = Verdicts()
    v.put("scope", "SELECT * FROM t WHERE id = 1", _read("SELECT * FROM t WHERE id = 1"))
    hit = v.get("scope", "SELECT * FROM t WHERE id = 99")
    assert hit is not None and hit.sql == "SELECT * FROM t WHERE id = 99"
    assert v.get("other scope", "SELECT * FROM t WHERE id = 99") is None
    assert v.get("scope", "SELECT * FROM t WHERE id  = 99") is None  # any other change
    assert v.get("scope", "SELECT * FROM u WHERE id = 99") is None


@pytest.mark.parametrize(
    "stmt",
    [
        _read("SELECT * FROM (SELECT 1) WHERE id = 1"),  # rewritten: carries old numbers
        _read("SELECT * FROM t WHERE id = 1", explain=True),
        _read("SELECT * FROM t WHERE id = 1", probe_sql="SELECT * FROM t WHERE id = NULL"),
        CheckedStatement(
            sql="SELECT * FROM t WHERE id = 1",
            kind=Kind.WRITE,
            statement_type="SELECT",
            tables=frozenset(),
        ),
    ],
)
def test_verdicts_that_depend_on_the_text_are_matched_exactly(stmt: CheckedStatement) -> None:
    v = Verdicts()
    v.put("scope", "SELECT * FROM t WHERE id = 1", stmt)
    assert v.get("scope", "SELECT * FROM t WHERE id = 1") is stmt
    assert v.get("scope", "SELECT * FROM t WHERE id = 2") is None


def test_the_cache_is_bounded() -> None:
    v = Verdicts(max_entries=4)
    for i in range(10):
        v.put("s", f"SELECT '{i}'", _read(f"SELECT '{i}'"))
    assert v.get("s", "SELECT '0'") is None
    assert v.get("s", "SELECT '9'") is not None


# -- through the engine: what the guard would refuse stays refused -------------------
@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with open_engine(
        tmp_path,
        "CREATE TABLE main.visible AS SELECT range AS id FROM range(10)",
        "CREATE TABLE main.hidden AS SELECT range AS id FROM range(10)",
    ) as eng:
        yield eng


def _rows(engine: Engine, principal: Principal, sql: str) -> list[dict[str, Any]]:
    return engine.open_stream(principal, sql, StreamOptions()).to_reader().read_all().to_pylist()


def test_a_numeric_variant_skips_the_guard(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[str] = []
    original = engine.guard.check

    def counting(cur: Any, principal: Principal, sql: str, *args: Any) -> CheckedStatement:
        checks.append(sql)
        return original(cur, principal, sql, *args)

    monkeypatch.setattr(engine.guard, "check", counting)
    assert _rows(engine, READER, "SELECT id FROM main.visible WHERE id = 3") == [{"id": 3}]
    assert _rows(engine, READER, "SELECT id FROM main.visible WHERE id = 7") == [{"id": 7}]
    assert checks == ["SELECT id FROM main.visible WHERE id = 3"]


def test_amplifying_calls_stay_bounded_whatever_their_numbers(engine: Engine) -> None:
    """repeat() is rewritten with a run-time bound, so its verdict is never shared: a
    large count is refused even after a small one passed."""
    assert _rows(engine, READER, "SELECT length(repeat('x', 5)) AS n") == [{"n": 5}]
    with pytest.raises(ResourceExhausted, match="repeat"):
        _rows(engine, READER, "SELECT length(repeat('x', 100000000)) AS n")


def test_a_table_limited_token_is_still_refused_other_tables(engine: Engine) -> None:
    assert _rows(engine, LIMITED, "SELECT id FROM main.visible WHERE id = 1") == [{"id": 1}]
    with pytest.raises(PermissionDenied):
        _rows(engine, LIMITED, "SELECT id FROM main.hidden WHERE id = 1")
    # Parameters are never matched by shape: $2 is not $1.
    with pytest.raises(Exception, match="(?i)param|value"):
        engine.open_stream(
            READER, "SELECT id FROM main.visible WHERE id = $2", StreamOptions(params=[1])
        ).to_reader().read_all()


def test_a_verdict_in_use_outlives_newer_ones() -> None:
    v = Verdicts(max_entries=8)
    v.put("s", "SELECT * FROM t WHERE id = 1", _read("SELECT * FROM t WHERE id = 1"))
    for i in range(20):
        v.put("s", f"SELECT '{i}'", _read(f"SELECT '{i}'"))
        assert v.get("s", f"SELECT * FROM t WHERE id = {i + 2}") is not None
