"""Every DuckDB type a user may meet reaches an ADBC client exactly as DuckDB returns it
(JSON tagged as the arrow.json extension type)."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa

from tests.flightsql.conftest import Connect

TABLE = """
CREATE TABLE {name} (
    i8 TINYINT, i16 SMALLINT, i32 INTEGER, i64 BIGINT, u8 UTINYINT, u64 UBIGINT, h HUGEINT,
    d DECIMAL(18, 4), d38 DECIMAL(38, 10), f FLOAT, x DOUBLE,
    s VARCHAR, b BLOB, ok BOOLEAN,
    dt DATE, t TIME, ts TIMESTAMP, tz TIMESTAMPTZ, iv INTERVAL,
    u UUID, e ENUM('sad', 'ok', 'happy'), l INTEGER[], st STRUCT(a INTEGER, b VARCHAR),
    m MAP(VARCHAR, INTEGER), j JSON
)"""

ROWS = """
INSERT INTO {name} VALUES
 (-128, -32768, -2147483648, -9223372036854775808, 255, 18446744073709551615,
  170141183460469231731687303715884105727,
  12345678901234.5678, 1234567890123456789012345678.0123456789, 1.5, -2.25e300,
  'héllo, "world"' || chr(10) || 'ünïcødé 🦆', '\\x00\\xFF'::BLOB, true,
  DATE '1970-01-01', TIME '23:59:59.999999', TIMESTAMP '2024-02-29 12:34:56.789012',
  TIMESTAMPTZ '2024-03-31 01:30:00+02', INTERVAL '1 year 2 months 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', [1, NULL, 3], {{'a': 1, 'b': 'x'}},
  MAP {{'k1': 1, 'k2': NULL}}, '{{"a": [1, 2, {{"b": null}}]}}'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (0, 0, 0, 0, 0, 0, 0, 0, 0, 'NaN'::FLOAT, 'inf'::DOUBLE, '', ''::BLOB, false,
  DATE '9999-12-31', TIME '00:00:00', TIMESTAMP '1900-01-01 00:00:00',
  TIMESTAMPTZ '1969-12-31 23:59:59+00', INTERVAL '0 seconds',
  '00000000-0000-0000-0000-000000000000', 'sad', [], {{'a': NULL, 'b': NULL}}, MAP {{}}, 'null')
"""

QUERY = "SELECT * FROM {name} ORDER BY i64 NULLS LAST"


def test_every_type_round_trips(connect: Connect, writer_token: str, reader_token: str) -> None:
    # Created through Flight SQL by a writer...
    writer = connect(writer_token).cursor()
    writer.execute("CREATE SCHEMA types")
    writer.execute(TABLE.format(name="types.all_types"))
    writer.execute(ROWS.format(name="types.all_types"))
    assert writer.fetchall() == [(3,)]

    # ...read back through Flight SQL by a reader...
    cur = connect(reader_token).cursor()
    cur.execute(QUERY.format(name="types.all_types"))
    got = cur.fetch_arrow_table()

    # ...equals what DuckDB returns in-process for the same statements.
    local = duckdb.connect()
    local.execute(TABLE.format(name="all_types"))
    local.execute(ROWS.format(name="all_types"))
    expected = local.sql(QUERY.format(name="all_types")).to_arrow_table()

    # JSON travels as the arrow.json extension type (DuckDB's own Arrow output says
    # string); the schema's metadata (freshness) is the server's addition.
    j = expected.schema.get_field_index("j")
    expected = expected.set_column(j, "j", expected.column("j").cast(pa.json_()))
    assert got.schema.remove_metadata() == expected.schema
    assert got.num_rows == 3
    for name in expected.column_names:
        assert _nan_safe(got.column(name).to_pylist()) == _nan_safe(
            expected.column(name).to_pylist()
        ), name
    # The all-NULL row is NULL in every column.
    assert all(v is None for v in got.slice(2, 1).to_pylist()[0].values())


def test_parameters_of_many_types_bind(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    cur.execute(
        "SELECT ?::BIGINT AS i, ?::VARCHAR AS s, ?::DOUBLE AS x, ?::BOOLEAN AS ok, "
        "?::DATE AS dt, ? IS NULL AS missing",
        (2**40, "ünïcødé", 0.5, True, "2024-02-29", None),
    )
    row = cur.fetch_arrow_table().to_pylist()[0]
    assert row["i"] == 2**40
    assert row["s"] == "ünïcødé"
    assert row["x"] == 0.5
    assert row["ok"] is True
    assert str(row["dt"]) == "2024-02-29"
    assert row["missing"] is True


def _nan_safe(values: list) -> list:
    """NaN != NaN; compare it as a marker instead."""
    return ["<NaN>" if isinstance(v, float) and math.isnan(v) else v for v in values]


def test_enum_column_across_many_batches(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    # ENUMs travel as Arrow dictionaries; a result of several batches must keep them.
    writer = connect(writer_token).cursor()
    writer.execute(
        "CREATE TABLE main.moods AS SELECT i, "
        "(['sad', 'ok', 'happy'])[1 + i % 3]::ENUM('sad', 'ok', 'happy') AS mood "
        "FROM range(200000) t(i)"
    )
    cur = connect(reader_token).cursor()
    cur.execute("SELECT mood, count(*) AS n FROM main.moods GROUP BY ALL ORDER BY mood")
    assert cur.fetchall() == [("sad", 66667), ("ok", 66667), ("happy", 66666)]
    cur.execute("SELECT * FROM main.moods")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 200_000
    assert table.column("mood").type.value_type == "string"
    assert table.column("mood").to_pylist()[:4] == ["sad", "ok", "happy", "sad"]


def test_empty_result_with_enum_column(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    cur.execute("SELECT 'ok'::ENUM('sad', 'ok') AS mood FROM range(10) WHERE false")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 0
    assert pa.types.is_dictionary(table.schema.field("mood").type)
