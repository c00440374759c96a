"""DML with RETURNING: the schema probe states exactly what the write returns (checked
against DuckDB running the write), and JSON columns are tagged `arrow.json`."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from agentdata.json_columns import as_json_extension, json_schema
from agentdata.returning import has_returning, schema_probe


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute('CREATE SCHEMA "my s"')
    c.execute('CREATE TABLE "my s".t (a INTEGER PRIMARY KEY, b VARCHAR, j JSON)')
    c.execute("CREATE TABLE main.data (a INTEGER, d DECIMAL(10, 2))")  # `data` is a keyword
    c.execute("INSERT INTO \"my s\".t VALUES (1, 'x', '{}'), (2, 'y', NULL)")
    c.execute("INSERT INTO main.data VALUES (1, 1.5)")
    yield c
    c.close()


CASES = [
    (
        'UPDATE "my s".t AS z SET b = upper(b) WHERE a IN (SELECT 1) RETURNING z.a, (a + 1) AS y;',
        "UPDATE",
    ),
    ('INSERT INTO "my s".t VALUES (3, NULL, NULL) RETURNING *', "INSERT"),
    ("INSERT OR REPLACE INTO \"my s\".t VALUES (1, 'z', '[1]') RETURNING j, b -- why", "INSERT"),
    (
        "WITH c AS (SELECT 1 AS k) DELETE FROM data USING c WHERE data.a = c.k RETURNING a, d * 2 AS twice",
        "DELETE",
    ),
    ('DELETE FROM "my s".t d WHERE true RETURNING d.*, 42 AS answer', "DELETE"),
]


@pytest.mark.parametrize(("sql", "statement_type"), CASES)
def test_the_probe_states_what_the_write_returns(
    con: duckdb.DuckDBPyConnection, sql: str, statement_type: str
) -> None:
    assert has_returning(sql, statement_type)
    probe = schema_probe(sql, statement_type)
    assert probe is not None and probe.endswith("LIMIT 0")
    stated = con.sql(probe).to_arrow_table().schema
    con.execute("BEGIN")
    try:
        returned = con.sql(sql).to_arrow_table().schema
    finally:
        con.execute("ROLLBACK")
    assert stated == returned


def test_plain_dml_and_merge() -> None:
    assert not has_returning("UPDATE t SET a = 1", "UPDATE")
    assert not has_returning("SELECT 1 AS returning_soon", "SELECT")
    # RETURNING inside a CTE body is not the statement's own.
    inner = "WITH x AS (DELETE FROM t RETURNING a) INSERT INTO u SELECT a FROM x"
    assert not has_returning(inner, "INSERT")
    merge = "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE RETURNING merge_action, *"
    assert has_returning(merge, "MERGE_INTO") and schema_probe(merge, "MERGE_INTO") is None


def test_json_columns_are_tagged_at_any_depth(con: duckdb.DuckDBPyConnection) -> None:
    rel = con.sql(
        "SELECT j, [j] AS l, {'k': j, 'n': 1} AS s, map {'m': j} AS m, a FROM \"my s\".t ORDER BY a"
    )
    table = as_json_extension(rel.to_arrow_reader(100), rel.types).read_all()
    assert table.schema.field("j").type == pa.json_()
    assert table.schema.field("l").type.value_type == pa.json_()
    assert table.schema.field("s").type.field("k").type == pa.json_()
    assert table.schema.field("m").type.item_type == pa.json_()
    assert table.schema.field("a").type == pa.int32()
    assert table.column("j").to_pylist() == ["{}", None]
    plain = con.sql('SELECT a, b FROM "my s".t')
    assert json_schema(plain.to_arrow_table().schema, plain.types) is None
