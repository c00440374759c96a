"""Catalog metadata over Flight SQL: ADBC's get_objects & co, and the raw commands."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as fl
import pytest
from google.protobuf import message

from flight_server.flightsql.messages import pack
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from tests.flightsql.conftest import Connect
from tests.support.server import ServerProcess

DEMO_TABLES = ["customers", "orders", "products"]


def fetch(server: ServerProcess, token: str, command: message.Message) -> pa.Table:
    """GetFlightInfo + DoGet of one Flight SQL command, with plain pyarrow.flight."""
    client = server.flight()
    opts = server.options(token)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(pack(command)), opts)
    table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    assert table.schema == info.schema  # the announced schema is the one delivered
    return table


def _tables_by_schema(objects: list[dict]) -> dict[str, list[str]]:
    (catalog,) = objects
    return {
        s["db_schema_name"]: sorted(t["table_name"] for t in s["db_schema_tables"] or [])
        for s in catalog["catalog_db_schemas"]
    }


def test_get_objects(connect: Connect, reader_token: str) -> None:
    conn = connect(reader_token)
    objects = conn.adbc_get_objects(depth="all", db_schema_filter="demo").read_all().to_pylist()
    assert objects[0]["catalog_name"] == "data"
    assert _tables_by_schema(objects) == {"demo": DEMO_TABLES}
    (demo,) = objects[0]["catalog_db_schemas"]
    products = next(t for t in demo["db_schema_tables"] if t["table_name"] == "products")
    assert products["table_type"] == "TABLE"
    columns = [(c["column_name"], c["ordinal_position"]) for c in products["table_columns"]]
    assert columns == [("id", 1), ("name", 2), ("category", 3), ("price", 4)]
    price = products["table_columns"][3]
    assert price["xdbc_type_name"] == "DECIMAL(10,2)"


def test_get_objects_table_filter(connect: Connect, reader_token: str) -> None:
    conn = connect(reader_token)
    objects = conn.adbc_get_objects(depth="tables", table_name_filter="%der%").read_all()
    assert _tables_by_schema(objects.to_pylist())["demo"] == ["orders"]


def test_get_table_schema(connect: Connect, reader_token: str) -> None:
    conn = connect(reader_token)
    schema = conn.adbc_get_table_schema("orders", db_schema_filter="demo")
    cur = conn.cursor()
    cur.execute("SELECT * FROM demo.orders LIMIT 0")
    expected = cur.fetch_arrow_table().schema
    assert schema.names == expected.names
    assert schema.types == expected.types
    assert schema.field("ordered_at").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == (
        b"TIMESTAMP WITH TIME ZONE"
    )


def test_get_table_types(connect: Connect, reader_token: str) -> None:
    assert connect(reader_token).adbc_get_table_types() == ["TABLE", "VIEW"]


def test_get_info(connect: Connect, reader_token: str) -> None:
    info = connect(reader_token).adbc_get_info()
    assert info["vendor_name"] == "agentdata"
    assert info["vendor_version"] == "0.1.0"
    assert info["vendor_arrow_version"] == pa.__version__


def test_allow_list_limits_listings(
    connect: Connect, server: ServerProcess, customers_only_token: str
) -> None:
    conn = connect(customers_only_token)
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    assert _tables_by_schema(objects) == {"demo": ["customers"]}

    tables = fetch(server, customers_only_token, pb.CommandGetTables())
    assert tables.column("table_name").to_pylist() == ["customers"]
    schemas = fetch(server, customers_only_token, pb.CommandGetDbSchemas())
    assert schemas.column("db_schema_name").to_pylist() == ["demo"]

    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM demo.customers")
    assert cur.fetchall() == [(10_000,)]
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="demo.orders"):
        cur.execute("SELECT * FROM demo.orders")
    # A table outside the allow-list is not even listed: to this token it does not exist.
    with pytest.raises(adbc_driver_manager.Error, match="No table found"):
        conn.adbc_get_table_schema("products", db_schema_filter="demo")


def test_get_tables_filters_and_schemas(server: ServerProcess, reader_token: str) -> None:
    everything = fetch(server, reader_token, pb.CommandGetTables())
    assert everything.schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type"]
    demo = [r for r in everything.to_pylist() if r["db_schema_name"] == "demo"]
    assert [r["table_name"] for r in demo] == DEMO_TABLES

    found = fetch(
        server,
        reader_token,
        pb.CommandGetTables(
            db_schema_filter_pattern="de_o",
            table_name_filter_pattern="%ro%",
            table_types=["TABLE"],
            include_schema=True,
        ),
    )
    assert found.column("table_name").to_pylist() == ["products"]
    assert found.schema.field("table_schema").type == pa.binary()
    products = pa.ipc.read_schema(pa.py_buffer(found.column("table_schema")[0].as_py()))
    assert products.names == ["id", "name", "category", "price"]
    assert products.field("price").type == pa.decimal128(10, 2)

    orders = fetch(server, reader_token, pb.CommandGetTables(table_name_filter_pattern="_rders"))
    assert orders.column("table_name").to_pylist() == ["orders"]
    assert fetch(server, reader_token, pb.CommandGetTables(table_types=["VIEW"])).num_rows == 0
    assert fetch(server, reader_token, pb.CommandGetTables(catalog="elsewhere")).num_rows == 0


def test_get_catalogs_and_schemas(server: ServerProcess, reader_token: str) -> None:
    assert fetch(server, reader_token, pb.CommandGetCatalogs()).to_pylist() == [
        {"catalog_name": "data"}
    ]
    schemas = fetch(server, reader_token, pb.CommandGetDbSchemas(db_schema_filter_pattern="d%"))
    assert schemas.to_pylist() == [{"catalog_name": "data", "db_schema_name": "demo"}]


def test_primary_keys(server: ServerProcess, writer_token: str, reader_token: str) -> None:
    server.execute(writer_token, "CREATE SCHEMA IF NOT EXISTS keys")
    server.execute(
        writer_token, "CREATE TABLE keys.pairs (a INTEGER, b VARCHAR, c DOUBLE, PRIMARY KEY (b, a))"
    )
    keys = fetch(server, reader_token, pb.CommandGetPrimaryKeys(db_schema="keys", table="pairs"))
    assert keys.schema.names == [
        "catalog_name",
        "db_schema_name",
        "table_name",
        "column_name",
        "key_name",
        "key_sequence",
    ]
    assert [(r["column_name"], r["key_sequence"]) for r in keys.to_pylist()] == [
        ("b", 1),
        ("a", 2),
    ]
    assert fetch(server, reader_token, pb.CommandGetPrimaryKeys(table="customers")).num_rows == 0


def _sql_info(server: ServerProcess, token: str, *ids: int) -> dict[int, object]:
    table = fetch(server, token, pb.CommandGetSqlInfo(info=list(ids)))
    names, values = table.column("info_name").to_pylist(), table.column("value").to_pylist()
    return dict(zip(names, values, strict=True))


def test_sql_info_read_only_per_token(
    server: ServerProcess, reader_token: str, writer_token: str
) -> None:
    as_reader = _sql_info(
        server,
        reader_token,
        pb.FLIGHT_SQL_SERVER_NAME,
        pb.FLIGHT_SQL_SERVER_READ_ONLY,
        pb.SQL_DDL_TABLE,
        pb.SQL_IDENTIFIER_QUOTE_CHAR,
    )
    assert as_reader == {
        pb.FLIGHT_SQL_SERVER_NAME: "agentdata",
        pb.FLIGHT_SQL_SERVER_READ_ONLY: True,
        pb.SQL_DDL_TABLE: False,
        pb.SQL_IDENTIFIER_QUOTE_CHAR: '"',
    }
    as_writer = _sql_info(server, writer_token, pb.FLIGHT_SQL_SERVER_READ_ONLY, pb.SQL_DDL_TABLE)
    assert as_writer == {pb.FLIGHT_SQL_SERVER_READ_ONLY: False, pb.SQL_DDL_TABLE: True}


def test_sql_info_everything(server: ServerProcess, reader_token: str) -> None:
    info = _sql_info(server, reader_token)
    assert info[pb.FLIGHT_SQL_SERVER_SQL] is True
    assert info[pb.FLIGHT_SQL_SERVER_TRANSACTION] == pb.SQL_SUPPORTED_TRANSACTION_NONE
    assert "SELECT" in info[pb.SQL_KEYWORDS]  # type: ignore[operator]
    assert "lower" in info[pb.SQL_STRING_FUNCTIONS]  # type: ignore[operator]
    assert info[pb.SQL_SUPPORTED_UNIONS] == 3  # UNION and UNION ALL, as a bitmask


def test_xdbc_type_info(server: ServerProcess, reader_token: str) -> None:
    everything = fetch(server, reader_token, pb.CommandGetXdbcTypeInfo())
    names = everything.column("type_name").to_pylist()
    assert {"BIGINT", "VARCHAR", "DECIMAL", "TIMESTAMP WITH TIME ZONE", "BLOB"} <= set(names)
    data_types = everything.column("data_type").to_pylist()
    assert data_types == sorted(data_types)
    only = fetch(server, reader_token, pb.CommandGetXdbcTypeInfo(data_type=pb.XDBC_VARCHAR))
    assert only.column("type_name").to_pylist() == ["VARCHAR"]


@pytest.mark.parametrize(
    "command",
    [
        pb.CommandGetImportedKeys(table="orders", db_schema="demo"),
        pb.CommandGetExportedKeys(table="customers"),
        pb.CommandGetCrossReference(pk_table="customers", fk_table="orders"),
    ],
    ids=lambda c: c.DESCRIPTOR.name,
)
def test_foreign_key_commands_answer_empty_typed_results(
    server: ServerProcess, reader_token: str, command: message.Message
) -> None:
    """SQLAlchemy dialects and JDBC tools call these to draw relationships: an empty
    result in the spec's schema, announced by GetFlightInfo and GetSchema alike."""
    table = fetch(server, reader_token, command)
    assert table.num_rows == 0
    assert table.schema.names == [
        "pk_catalog_name",
        "pk_db_schema_name",
        "pk_table_name",
        "pk_column_name",
        "fk_catalog_name",
        "fk_db_schema_name",
        "fk_table_name",
        "fk_column_name",
        "key_sequence",
        "fk_key_name",
        "pk_key_name",
        "update_rule",
        "delete_rule",
    ]
    assert table.schema.field("key_sequence").type == pa.int32()
    assert table.schema.field("update_rule").type == pa.uint8()
    assert not table.schema.field("pk_table_name").nullable
    assert table.schema.field("fk_key_name").nullable
    schema = (
        server.flight()
        .get_schema(fl.FlightDescriptor.for_command(pack(command)), server.options(reader_token))
        .schema
    )
    assert schema == table.schema


def test_adbc_sees_no_foreign_keys(connect: Connect, reader_token: str) -> None:
    objects = connect(reader_token).adbc_get_objects(depth="all").read_all().to_pylist()
    constraints = [
        c
        for s in objects[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"] or []
        for c in t["table_constraints"] or []
    ]
    assert all(c["constraint_type"] != "FOREIGN KEY" for c in constraints)


@pytest.mark.parametrize(
    "command",
    [pb.CommandStatementSubstraitPlan(plan=pb.SubstraitPlan(plan=b"x", version="0.1"))],
)
def test_unsupported_commands_say_so(
    server: ServerProcess, reader_token: str, command: message.Message
) -> None:
    client = server.flight()
    with pytest.raises(NotImplementedError, match=f"{command.DESCRIPTOR.name} is not supported"):
        client.get_flight_info(
            fl.FlightDescriptor.for_command(pack(command)), server.options(reader_token)
        )


def test_transactions_are_unimplemented(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    action = fl.Action("BeginTransaction", pack(pb.ActionBeginTransactionRequest()))
    with pytest.raises(NotImplementedError, match="transactions are not supported"):
        list(client.do_action(action, server.options(reader_token)))


def test_poll_flight_info_says_it_is_unsupported(connect: Connect, reader_token: str) -> None:
    """ADBC's incremental execution calls PollFlightInfo, which pyarrow's server cannot
    serve: the client gets our UNIMPLEMENTED answer naming what to call instead, and the
    connection stays usable for ordinary queries."""
    conn = connect(reader_token)
    cur = conn.cursor()
    cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
    with pytest.raises(adbc_driver_manager.NotSupportedError) as raised:
        cur.adbc_execute_partitions("SELECT 1")
    assert "[unimplemented] PollFlightInfo is not supported: call GetFlightInfo" in str(
        raised.value
    )
    cur.close()
    with conn.cursor() as plain:
        plain.execute("SELECT 41 + 1")
        assert plain.fetchone() == (42,)
