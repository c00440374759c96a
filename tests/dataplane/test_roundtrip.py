"""Every DuckDB type a user may meet arrives over Flight exactly as DuckDB returns it in-process."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa
import pyarrow.flight as fl

from tests.support.server import ServerProcess

CREATE = """
CREATE TYPE IF NOT EXISTS mood AS ENUM ('sad', 'ok', 'happy');
"""

TABLE = """
CREATE TABLE {name} (
    i8 TINYINT, i16 SMALLINT, i32 INTEGER, i64 BIGINT, u64 UBIGINT, h HUGEINT,
    d DECIMAL(18, 4), d38 DECIMAL(38, 10), f FLOAT, x DOUBLE,
    s VARCHAR, b BLOB, ok BOOLEAN,
    dt DATE, t TIME, ts TIMESTAMP, tz TIMESTAMPTZ, iv INTERVAL,
    u UUID, e mood, l INTEGER[], st STRUCT(a INTEGER, b VARCHAR), m MAP(VARCHAR, INTEGER), j JSON
)"""

ROWS = """
INSERT INTO {name} VALUES
 (-128, -32768, -2147483648, -9223372036854775808, 18446744073709551615, 170141183460469231731687303715884105727,
  12345678901234.5678, 1234567890123456789012345678.0123456789, 1.5, -2.25e300,
  'héllo, "world"' || chr(10) || 'ünïcødé 🦆', '\\x00\\xFF'::BLOB, true,
  DATE '1970-01-01', TIME '23:59:59.999999', TIMESTAMP '2024-02-29 12:34:56.789012',
  TIMESTAMPTZ '2024-03-31 01:30:00+02', INTERVAL '1 year 2 months 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', [1, NULL, 3], {{'a': 1, 'b': 'x'}},
  MAP {{'k1': 1, 'k2': NULL}}, '{{"a": [1, 2, {{"b": null}}]}}'),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (0, 0, 0, 0, 0, 0, 0, 0, 'NaN'::FLOAT, 'inf'::DOUBLE, '', ''::BLOB, false,
  DATE '9999-12-31', TIME '00:00:00', TIMESTAMP '1900-01-01 00:00:00', TIMESTAMPTZ '1969-12-31 23:59:59+00',
  INTERVAL '0 seconds', '00000000-0000-0000-0000-000000000000', 'sad', [], {{'a': NULL, 'b': NULL}},
  MAP {{}}, 'null')
"""


def test_every_type_round_trips(
    server: ServerProcess, writer_token: str, reader_token: str
) -> None:
    server.execute(writer_token, CREATE.strip().rstrip(";"))
    server.execute(writer_token, TABLE.format(name="main.all_types"))
    assert server.execute(writer_token, ROWS.format(name="main.all_types")) == 3

    got = server.query(reader_token, "SELECT * FROM main.all_types ORDER BY i64 NULLS LAST")

    local = duckdb.connect()
    local.execute(CREATE)
    local.execute(TABLE.format(name="all_types"))
    local.execute(ROWS.format(name="all_types"))
    expected = local.sql("SELECT * FROM all_types ORDER BY i64 NULLS LAST").to_arrow_table()

    # JSON columns travel as the arrow.json extension type (DuckDB's own Arrow export
    # says plain string), so clients know the text is JSON.
    j = expected.schema.get_field_index("j")
    expected_schema = expected.schema.set(j, expected.schema.field(j).with_type(pa.json_()))
    assert got.schema.remove_metadata() == expected_schema
    assert got.num_rows == 3
    for name in expected.column_names:
        assert _nan_safe(got.column(name).to_pylist()) == _nan_safe(
            expected.column(name).to_pylist()
        ), name
    # NULLs survive as NULLs in every column of the all-NULL row.
    null_row = got.slice(2, 1).to_pylist()[0]
    assert all(v is None for v in null_row.values())


def _nan_safe(values: list) -> list:
    """NaN != NaN; compare it as a marker instead."""
    return ["<NaN>" if isinstance(v, float) and math.isnan(v) else v for v in values]


def test_table_by_path_descriptor(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    opts = server.options(reader_token)
    info = client.get_flight_info(fl.FlightDescriptor.for_path("demo", "products"), opts)
    assert info.total_records == 1000
    table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    assert table.num_rows == 1000
    assert table.schema == info.schema
    assert (
        client.get_schema(fl.FlightDescriptor.for_path("demo", "products"), opts).schema
        == info.schema
    )


def test_get_flight_info_reports_schema_without_running(
    server: ServerProcess, reader_token: str
) -> None:
    client = server.flight()
    opts = server.options(reader_token)
    # Would take minutes to run; schema must come back at once.
    sql = "SELECT a.range AS x, 'v' AS s FROM range(100000000) a, range(100000000) b"
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
    assert info.schema.names == ["x", "s"]
    assert info.total_records == -1
    schema = client.get_schema(fl.FlightDescriptor.for_command(sql.encode()), opts).schema
    assert schema.names == ["x", "s"]
