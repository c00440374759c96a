"""Statement classification and table-name normalisation (DuckDB's parser, no server)."""

from __future__ import annotations

import duckdb
import pytest

from agentdata.errors import InvalidArgument, PermissionDenied
from agentdata.sqlguard import (
    CatalogSnapshot,
    CheckedStatement,
    Guard,
    Kind,
    normalise_table_name,
    parse_table_ref,
    split_identifier,
    statement_kind,
)
from agentdata.tokens import Principal, Role


def check(con: duckdb.DuckDBPyConnection, principal: Principal, sql: str) -> CheckedStatement:
    return Guard().check(con, principal, sql, CatalogSnapshot.read(con))


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", Kind.READ),
        ("  with a as (select 1) select * from a", Kind.READ),
        ("FROM t", Kind.READ),
        ("DESCRIBE t", Kind.READ),
        ("SHOW TABLES", Kind.READ),
        ("SUMMARIZE t", Kind.READ),
        ("EXPLAIN SELECT 1", Kind.READ),
        ("EXPLAIN ANALYZE SELECT 1", Kind.READ),
        ("EXPLAIN ANALYZE DROP SCHEMA s CASCADE", Kind.WRITE),
        ("EXPLAIN (FORMAT json) INSERT INTO t VALUES (1)", Kind.WRITE),
        ("/* c */ EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", Kind.WRITE),
        ("INSERT INTO t VALUES (1)", Kind.WRITE),
        ("CREATE TABLE x AS SELECT 1", Kind.WRITE),
        ("DROP TABLE x", Kind.WRITE),
    ],
)
def test_statement_kinds(sql: str, kind: Kind) -> None:
    assert statement_kind(sql)[0] is kind


@pytest.mark.parametrize(
    "sql",
    [
        "COPY t TO 'x'",
        "ATTACH 'x'",
        "INSTALL httpfs",
        "SET threads=1",
        "PRAGMA version",
        "CALL f()",
        "BEGIN",
    ],
)
def test_forbidden_kinds(sql: str) -> None:
    with pytest.raises(PermissionDenied):
        statement_kind(sql)


@pytest.mark.parametrize("sql", ["", "  ", "SELECT 1; SELECT 2", "SELEC 1"])
def test_invalid(sql: str) -> None:
    with pytest.raises(InvalidArgument):
        statement_kind(sql)


def test_identifiers() -> None:
    assert split_identifier('"a.b".c') == ["a.b", "c"]
    assert split_identifier('s."x""y"') == ["s", 'x"y']
    assert normalise_table_name('S."Secret"') == "s.secret"
    assert normalise_table_name("t") == "main.t"
    assert normalise_table_name("db.s.t") == "s.t"
    assert normalise_table_name("demo.customers AS c") == "demo.customers"
    assert normalise_table_name('"my s"."T x" AS "weird alias"') == "my s.t x"
    assert parse_table_ref("demo.orders") == ("demo", "orders")
    with pytest.raises(InvalidArgument):
        parse_table_ref("a.b.c")


def test_allow_list_sees_through_views_and_ctes() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE SCHEMA s; CREATE TABLE s.secret(a INT); CREATE TABLE s.pub(a INT); CREATE VIEW s.v AS SELECT * FROM s.secret"
    )
    p = Principal("t", "t", Role.READER, tables=("s.pub", "s.v"))
    assert check(con, p, "SELECT * FROM s.pub").tables == frozenset({"s.pub"})
    aliased = "SELECT a.a FROM s.pub a JOIN s.pub AS b ON a.a = b.a"
    assert check(con, p, aliased).tables == frozenset({"s.pub"})
    # A view over a denied table is refused without naming what lies beneath it.
    with pytest.raises(PermissionDenied, match="outside this token's allow-list") as caught:
        check(con, p, "SELECT * FROM s.v")
    assert "secret" not in caught.value.message
    for sql in [
        "WITH x AS (SELECT * FROM s.secret) SELECT * FROM x",
        "SELECT * FROM query_table('s.secret')",
    ]:
        with pytest.raises(PermissionDenied, match="s.secret"):
            check(con, p, sql)
    limited_writer = Principal("w", "w", Role.WRITER, tables=("s.*",))
    with pytest.raises(PermissionDenied, match="free-form"):
        check(con, limited_writer, "INSERT INTO s.pub VALUES (1)")


def test_using_joins_get_a_message_that_says_what_works() -> None:
    """DuckDB 2.0.1's table-name binder fails on every JOIN ... USING (the statement
    itself binds): the refusal says to write the join with ON, and that form passes."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA s; CREATE TABLE s.a(id INT, x INT); CREATE TABLE s.b(id INT)")
    reader = Principal("r", "r", Role.READER)
    with pytest.raises(InvalidArgument, match=r"JOIN \.\.\. USING .* write the join with ON"):
        check(con, reader, "SELECT * FROM s.a JOIN s.b USING (id)")
    on = check(con, reader, "SELECT x FROM s.a JOIN s.b ON a.id = b.id")
    assert on.tables == frozenset({"s.a", "s.b"})
