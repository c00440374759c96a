"""arrow_stream runs a statement once and streams what the relation API would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from agentdata.duck_stream import arrow_stream
from agentdata.json_columns import as_json_extension


@pytest.fixture
def cur() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT range AS id, ('{\"a\": ' || range || '}')::JSON AS j, "
        "[range] AS l, 'x' || range AS s FROM range(1000)"
    )
    yield con.cursor()
    con.close()


def _relation(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Any = None, limit: int | None = None
) -> pa.Table:
    rel = cur.sql(sql, params=params)
    if limit is not None:
        rel = rel.limit(limit)
    return as_json_extension(rel.to_arrow_reader(100), rel.types).read_all()


@pytest.mark.parametrize(
    ("sql", "params", "limit"),
    [
        ("SELECT * FROM t ORDER BY id", None, None),
        ("SELECT * FROM t WHERE id > ? ORDER BY id", [990], None),
        ("SELECT * FROM t WHERE id > $lo ORDER BY id", {"lo": 995}, None),
        ("SELECT * FROM t ORDER BY id DESC -- newest first", None, 3),
        ("SELECT id, j FROM t ORDER BY id", None, 10),
    ],
)
def test_the_same_rows_and_schema_as_the_relation_api(
    cur: duckdb.DuckDBPyConnection, sql: str, params: Any, limit: int | None
) -> None:
    got = arrow_stream(cur, sql, params, batch_rows=100, limit=limit).read_all()
    want = _relation(cur, sql, params, limit)
    assert got.schema.equals(want.schema)
    assert got.equals(want)
    assert got.schema.field("j").type == pa.json_(pa.string())


def test_batches_hold_at_most_batch_rows(cur: duckdb.DuckDBPyConnection) -> None:
    reader = arrow_stream(cur, "SELECT * FROM t", batch_rows=128)
    sizes = [b.num_rows for b in reader]
    assert sum(sizes) == 1000 and max(sizes) <= 128


def test_errors_are_duckdbs(cur: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error):
        arrow_stream(cur, "SELECT * FROM missing", batch_rows=10)
