"""Queries through the ADBC Flight SQL driver (and polars / pandas on top of it)."""

from __future__ import annotations

import json
import threading
import time

import adbc_driver_manager
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from flight_server.flightsql.messages import pack
from flight_server.flightsql.proto import FlightActions_pb2 as actions_pb
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from tests.flightsql.conftest import Connect
from tests.support.server import ServerProcess


def test_bearer_token_query(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    cur.execute("SELECT id, name FROM demo.customers WHERE id <= 3 ORDER BY id")
    assert cur.fetchall() == [(1, "Customer 1"), (2, "Customer 2"), (3, "Customer 3")]


def test_username_password_handshake(connect: Connect, reader_token: str) -> None:
    # Basic auth: any user name, the token as password (what JDBC/BI tools send).
    cur = connect(username="analyst", password=reader_token).cursor()
    cur.execute("SELECT count(*) AS n FROM demo.products")
    assert cur.fetchall() == [(1000,)]


def test_wrong_token_is_refused(connect: Connect) -> None:
    with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated|invalid token"):
        cur = connect("not-a-token").cursor()
        cur.execute("SELECT 1")
        cur.fetchall()


def test_fetch_arrow_table(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    cur.execute("SELECT * FROM demo.orders ORDER BY id")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 20_000
    assert table.column_names == [
        "id",
        "customer_id",
        "product_id",
        "quantity",
        "amount",
        "ordered_at",
        "status",
    ]
    assert table.schema.field("amount").type == pa.decimal128(12, 2)
    assert table.column("id").to_pylist()[:3] == [1, 2, 3]


def test_positional_parameters(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    cur.execute("SELECT id, name FROM demo.customers WHERE id = ?", (42,))
    assert cur.fetchall() == [(42, "Customer 42")]
    # The same prepared statement, re-bound.
    cur.execute("SELECT id, name FROM demo.customers WHERE id = ?", (7,))
    assert cur.fetchall() == [(7, "Customer 7")]
    cur.execute(
        "SELECT count(*) FROM demo.orders WHERE status = $1 AND quantity >= $2", ("paid", 3)
    )
    expected = connect(reader_token).cursor()
    expected.execute("SELECT count(*) FROM demo.orders WHERE status = 'paid' AND quantity >= 3")
    assert cur.fetchall() == expected.fetchall()


def test_parameter_schema_is_reported(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    params = cur.adbc_prepare("SELECT name FROM demo.customers WHERE id = ? AND country = ?")
    # Two placeholders, by position, typed as DuckDB infers them from the columns.
    assert params is not None
    assert params.names == ["1", "2"]
    assert params.types == [pa.int64(), pa.string()]
    # Where the statement does not say, the type is left open (NA).
    untyped = cur.adbc_prepare("SELECT ? AS anything")
    assert untyped is not None and untyped.types == [pa.null()]
    cur.execute("SELECT name FROM demo.customers WHERE id = ? AND country = ?", (1, "nowhere"))
    assert cur.fetchall() == []


def test_parameter_cannot_name_a_table(connect: Connect, customers_only_token: str) -> None:
    # query_table(?) would pick the table at run time, past the allow-list check.
    cur = connect(customers_only_token).cursor()
    with pytest.raises(adbc_driver_manager.Error, match="table function"):
        cur.execute("SELECT * FROM query_table(?)", ("demo.orders",))
        cur.fetchall()


def test_polars_read_database(connect: Connect, reader_token: str) -> None:
    df = pl.read_database(
        "SELECT country, count(*) AS n FROM demo.customers GROUP BY country ORDER BY country",
        connection=connect(reader_token),
    )
    assert df.columns == ["country", "n"]
    assert df["n"].sum() == 10_000
    assert set(df["country"].to_list()) == {"BR", "DE", "FR", "GB", "IN", "JP", "NL", "US"}


def test_pandas_read_sql(connect: Connect, reader_token: str) -> None:
    df = pd.read_sql(
        "SELECT id, category, price FROM demo.products WHERE id <= 10 ORDER BY id",
        connect(reader_token),
    )
    assert list(df.columns) == ["id", "category", "price"]
    assert df["id"].tolist() == list(range(1, 11))
    assert len(df) == 10


def test_reader_cannot_write(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may only read"):
        cur.execute("CREATE TABLE main.nope AS SELECT 1 AS x")
    # A prepared statement that writes is refused too, parameters or not.
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may only read"):
        cur.adbc_prepare("INSERT INTO demo.customers (id, name) VALUES (?, ?)")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may only read"):
        cur.executemany("DELETE FROM demo.customers WHERE id = ?", [(1,), (2,)])
    check = connect(reader_token).cursor()
    check.execute("SELECT count(*) FROM demo.customers")
    assert check.fetchall() == [(10_000,)]


def test_forbidden_statements_are_refused(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    with pytest.raises(adbc_driver_manager.Error, match="not allowed"):
        cur.execute("ATTACH 'other.duckdb' AS other")
    with pytest.raises(adbc_driver_manager.Error, match="exactly one SQL statement"):
        cur.execute("SELECT 1; SELECT 2")


def test_max_rows_applies(connect: Connect, server: ServerProcess) -> None:
    token = str(server.create_token("reader", name="small", max_rows=100)["token"])
    cur = connect(token).cursor()
    cur.execute("SELECT * FROM demo.customers LIMIT 100")
    assert len(cur.fetchall()) == 100
    with pytest.raises(adbc_driver_manager.Error, match="max_rows"):
        cur.execute("SELECT * FROM demo.customers")
        cur.fetchall()


def test_token_timeout_applies(connect: Connect, server: ServerProcess) -> None:
    token = str(server.create_token("reader", name="hasty", timeout_s=1)["token"])
    cur = connect(token).cursor()
    with pytest.raises(adbc_driver_manager.Error, match="timeout"):
        cur.execute("SELECT count(*) FROM range(2000000000) a, range(1000) b")
        cur.fetchall()
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]


def test_cancel_long_query(connect: Connect, server: ServerProcess, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            # Minutes of work before the first row: a cross join under an aggregate.
            cur.execute("SELECT count(*) FROM range(2000000000) a, range(1000) b")
            cur.fetchall()
        except BaseException as e:
            errors.append(e)

    idle = _running_queries(server, reader_token)
    worker = threading.Thread(target=run)
    worker.start()
    _wait_for(lambda: _running_queries(server, reader_token) == idle + 1, "the query to start")

    def cancelled() -> bool:
        # Again until execute() returns, as a user presses Ctrl-C again. Once in some
        # thirty full runs, one cancel left execute() blocked for 30 s. A cancel that
        # reaches the call in flight ends it at once, whatever the server does, so
        # that one was lost inside the client library before it reached the call.
        cur.adbc_cancel()
        worker.join(1)
        return not worker.is_alive()

    _wait_for(cancelled, "execute() to return after cancel")
    assert len(errors) == 1
    assert isinstance(errors[0], adbc_driver_manager.OperationalError)
    assert "cancel" in str(errors[0]).lower()
    # ...and the server stopped computing (it notices the cancelled call).
    _wait_for(lambda: _running_queries(server, reader_token) == idle, "the server to stop")
    cur.execute("SELECT 42")
    assert cur.fetchall() == [(42,)]


def _running_queries(server: ServerProcess, token: str) -> int:
    client = server.flight()
    (result,) = list(client.do_action(fl.Action("health", b""), server.options(token)))
    return int(json.loads(result.body.to_pybytes())["running_queries"])


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _statement_info(server: ServerProcess, token: str, sql: str) -> fl.FlightInfo:
    command = pack(pb.CommandStatementQuery(query=sql))
    return server.flight().get_flight_info(
        fl.FlightDescriptor.for_command(command), server.options(token)
    )


def test_ticket_can_be_fetched_again(server: ServerProcess, reader_token: str) -> None:
    info = _statement_info(server, reader_token, "SELECT id FROM demo.products WHERE id <= 5")
    assert info.schema.names == ["id"]
    client, opts = server.flight(), server.options(reader_token)
    first = client.do_get(info.endpoints[0].ticket, opts).read_all()
    # The query started by GetFlightInfo is consumed; a second DoGet runs it again.
    again = client.do_get(info.endpoints[0].ticket, opts).read_all()
    assert first.column("id").to_pylist() == again.column("id").to_pylist() == [1, 2, 3, 4, 5]


def test_ticket_belongs_to_its_token(
    server: ServerProcess, reader_token: str, writer_token: str
) -> None:
    info = _statement_info(server, reader_token, "SELECT 1 AS one")
    with pytest.raises(fl.FlightUnauthorizedError, match="another token"):
        server.flight().do_get(info.endpoints[0].ticket, server.options(writer_token)).read_all()


def test_cancel_flight_info_action(server: ServerProcess, reader_token: str) -> None:
    info = _statement_info(server, reader_token, "SELECT * FROM demo.orders")
    request = actions_pb.CancelFlightInfoRequest(info=info.serialize())
    client, opts = server.flight(), server.options(reader_token)
    (result,) = list(
        client.do_action(fl.Action("CancelFlightInfo", request.SerializeToString()), opts)
    )
    status = actions_pb.CancelFlightInfoResult.FromString(result.body.to_pybytes()).status
    assert status == actions_pb.CANCEL_STATUS_CANCELLED
    with pytest.raises(fl.FlightCancelledError, match="cancelled"):
        client.do_get(info.endpoints[0].ticket, opts).read_all()


def test_wide_rows_fit_the_clients_message_limit(connect: Connect, reader_token: str) -> None:
    # ~60 MB in one DuckDB batch: ADBC accepts messages up to 16 MiB by default.
    cur = connect(reader_token).cursor()
    cur.execute("SELECT i, repeat('x', 2000) AS s FROM range(30000) t(i)")
    table = cur.fetch_arrow_table()
    assert table.num_rows == 30_000
    assert table.column("i").to_pylist() == list(range(30_000))
