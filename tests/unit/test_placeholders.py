"""The engine lists a statement's placeholders in binding order, without asking
DuckDB's parser when the text cannot hold one."""

from __future__ import annotations

import duckdb
import pytest

from agentdata import engine


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("SELECT * FROM t WHERE id = ?", ["1"]),
        ("SELECT $2, $1", ["1", "2"]),
        ("SELECT $b, $a", ["a", "b"]),
        ("SELECT '?' AS q, '$1' AS d", []),  # in string literals: not placeholders
        ("SELECT 1", []),
        ("SELECT ?; SELECT ?", []),  # not one statement: the check says so
    ],
)
def test_placeholders(sql: str, names: list[str]) -> None:
    assert engine._placeholders(sql) == tuple(names)


def test_a_text_without_question_mark_or_dollar_is_not_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(sql: str) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(duckdb, "extract_statements", refuse)
    assert engine._placeholders("SELECT 42 AS answer -- no placeholders here") == ()
