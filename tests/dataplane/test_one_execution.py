"""One execution per query: GetFlightInfo answers the schema by binding the statement,
and only the DoGet that redeems the ticket runs it."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from agentdata.bound_schema import BoundSchemas
from agentdata.json_columns import json_schema
from tests.support.server import ServerProcess


def test_get_flight_info_binds_without_running(server: ServerProcess, reader_token: str) -> None:
    """A statement that binds (a VARCHAR cast to INTEGER) but fails when it runs: the
    schema comes back, the failure only with the DoGet. Run at GetFlightInfo, as a
    LIMIT 0 probe of a sort would be, it would have failed there."""
    sql = "SELECT CAST(name AS INTEGER) AS n FROM demo.customers ORDER BY name"
    client = server.flight()
    opts = server.options(reader_token)
    try:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        assert info.schema.field("n").type == pa.int32()
        with pytest.raises(pa.ArrowInvalid, match=r"(?i)\[invalid_argument\].*convert"):
            client.do_get(info.endpoints[0].ticket, opts).read_all()
    finally:
        client.close()


def test_the_bound_schema_is_what_the_stream_carries(
    server: ServerProcess, reader_token: str
) -> None:
    """Over many types, the schema GetFlightInfo promised equals the stream's."""
    sql = (
        "SELECT o.*, c.name, [o.id] AS ids, {'k': c.name} AS s, "
        "o.amount::DECIMAL(18,3) AS d, '{\"a\": 1}'::JSON AS j, "
        "INTERVAL 1 DAY AS i, uuid() IS NULL AS u, 1 AS dup, 2 AS dup "
        "FROM demo.orders o JOIN demo.customers c ON c.id = o.customer_id LIMIT 3"
    )
    client = server.flight()
    opts = server.options(reader_token)
    try:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    finally:
        client.close()
    assert table.num_rows == 3
    assert info.schema.equals(table.schema)


DUCK_TYPES = [
    "BOOLEAN",
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL(4,1)",
    "DECIMAL(18,3)",
    "DECIMAL(38,10)",
    "VARCHAR",
    "BLOB",
    "DATE",
    "TIME",
    "TIMETZ",
    "TIMESTAMP",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "TIMESTAMPTZ",
    "INTERVAL",
    "UUID",
    "JSON",
    "BIT",
    "VARCHAR[]",
    "INTEGER[3]",
    "MAP(VARCHAR, INTEGER)",
    'STRUCT("we ird" INTEGER, j JSON)',
    "UNION(a INTEGER, b VARCHAR)",
    "ENUM('x', 'y')",
    "JSON[]",
]


@pytest.mark.parametrize("duck", DUCK_TYPES)
def test_bound_schema_equals_duckdbs_own_conversion(duck: str) -> None:
    """For each DuckDB type, the schema from binding equals the Arrow schema DuckDB
    streams for a real row of that type."""
    cur = duckdb.connect()
    sql = f'SELECT CAST(NULL AS {duck}) AS "c", 1 AS "c"'
    bound = BoundSchemas().of(cur, sql)
    rel = cur.sql(sql)
    streamed = rel.to_arrow_reader(10).schema
    streamed = json_schema(streamed, rel.types) or streamed
    assert bound.equals(streamed), (bound, streamed)
