"""The Flight handlers against a real engine on a temp database, in this process.

Two ways in: the handler methods called directly with a fake call context (the
principal is what the auth middleware would have set), and a real `pyarrow.flight`
client over loopback to the server built in process, for what must cross the wire
(error codes, streams, DoPut). The end-to-end versions, against `agentdata serve`,
are in tests/dataplane and tests/flightsql.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from agentdata.errors import Unauthenticated
from flight_server.flightsql.messages import pack
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from tests.support.inprocess import ADMIN, FlightHarness, Harness, harness

DEMO_ROWS = 1_000
ORDERS = ["id", "customer_id", "product_id", "quantity", "amount", "ordered_at", "status"]


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("flight") / "data", demo_rows=DEMO_ROWS) as built:
        yield built


@pytest.fixture(scope="module")
def flight(h: Harness) -> FlightHarness:
    return h.flight


@pytest.fixture(scope="module")
def reader(h: Harness) -> str:
    return str(h.rest.create_token("reader", name="reader")["token"])


@pytest.fixture(scope="module")
def writer(h: Harness) -> str:
    return str(h.rest.create_token("writer", name="writer")["token"])


@pytest.fixture(scope="module")
def customers_only(h: Harness) -> str:
    token = h.rest.create_token("reader", name="customers-only", tables=["demo.customers"])
    return str(token["token"])


def cmd(sql: str) -> fl.FlightDescriptor:
    return fl.FlightDescriptor.for_command(sql.encode())


def wire_error(call: Callable[[], object]) -> Exception:
    """The exception `call` raises (it must raise)."""
    with pytest.raises(Exception) as e:
        call()
    return e.value


def table_names(flight: FlightHarness) -> set[str]:
    return set(flight.query(ADMIN, "SELECT table_name FROM duckdb_tables()").column(0).to_pylist())


# -- discovery, called directly --------------------------------------------------------
def test_list_flights_shows_the_demo_tables_with_metadata(flight: FlightHarness) -> None:
    infos = {
        tuple(p.decode() for p in i.descriptor.path): i
        for i in flight.server.list_flights(flight.context(), b"")
    }
    assert {("demo", "customers"), ("demo", "products"), ("demo", "orders")} <= set(infos)
    orders = infos[("demo", "orders")]
    assert orders.total_records == DEMO_ROWS
    assert orders.schema.names == ORDERS
    meta = json.loads(orders.app_metadata)
    assert meta["kind"] == "TABLE" and meta["rows"] == DEMO_ROWS
    assert meta["location"] == "duckdb" and meta["last_modified"].endswith("Z")


def test_a_listed_endpoint_is_redeemed_over_the_wire(flight: FlightHarness, reader: str) -> None:
    (orders,) = [
        i
        for i in flight.server.list_flights(flight.context(reader), b"")
        if i.descriptor.path == [b"demo", b"orders"]
    ]
    table = flight.client.do_get(orders.endpoints[0].ticket, flight.options(reader)).read_all()
    assert table.num_rows == DEMO_ROWS and table.schema == orders.schema


def test_list_flights_hides_tables_outside_the_allow_list(
    flight: FlightHarness, customers_only: str
) -> None:
    paths = {
        tuple(p.decode() for p in i.descriptor.path)
        for i in flight.server.list_flights(flight.context(customers_only), b"")
    }
    assert paths == {("demo", "customers")}


@pytest.mark.parametrize("path", [("demo", "products"), ("demo.products",)])
def test_get_flight_info_of_a_table_path(flight: FlightHarness, path: tuple[str, ...]) -> None:
    info = flight.server.get_flight_info(flight.context(), fl.FlightDescriptor.for_path(*path))
    assert info.descriptor.path == [b"demo", b"products"]
    assert info.total_records > 0
    rows = flight.client.do_get(info.endpoints[0].ticket, flight.options(ADMIN)).read_all()
    assert rows.num_rows == info.total_records and rows.schema == info.schema


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (("demo",), "invalid_argument"),
        (("a", "b", "c"), "invalid_argument"),
        (("demo", "no_such_table"), "not_found"),
    ],
)
def test_get_flight_info_of_a_bad_path(
    flight: FlightHarness, path: tuple[str, ...], code: str
) -> None:
    e = wire_error(
        lambda: flight.server.get_flight_info(flight.context(), fl.FlightDescriptor.for_path(*path))
    )
    assert str(e).startswith(f"[{code}]"), e


def test_a_table_outside_the_allow_list_is_refused(
    flight: FlightHarness, customers_only: str
) -> None:
    for descriptor in (
        fl.FlightDescriptor.for_path("demo", "orders"),
        cmd("SELECT * FROM demo.orders"),
    ):
        e = wire_error(
            functools.partial(
                flight.server.get_flight_info, flight.context(customers_only), descriptor
            )
        )
        assert str(e).startswith("[permission_denied]"), e


def test_get_schema_equals_the_flight_infos_schema(flight: FlightHarness) -> None:
    ctx = flight.context()
    for descriptor in (
        fl.FlightDescriptor.for_path("demo", "orders"),
        cmd("SELECT id, amount * 2 AS twice FROM demo.orders"),
    ):
        schema = flight.server.get_schema(ctx, descriptor).schema
        assert schema == flight.server.get_flight_info(ctx, descriptor).schema
    assert schema.names == ["id", "twice"]


# -- SQL commands ----------------------------------------------------------------------
def test_sql_command_streams_its_rows(flight: FlightHarness, reader: str) -> None:
    t = flight.query(reader, "SELECT status, count(*) AS n FROM demo.orders GROUP BY ALL")
    assert t.schema.names == ["status", "n"]
    assert sum(t.column("n").to_pylist()) == DEMO_ROWS


def test_get_flight_info_binds_without_running(flight: FlightHarness, reader: str) -> None:
    """A statement that binds but fails when it runs: the schema comes back, the
    failure only with the DoGet."""
    sql = "SELECT CAST(name AS INTEGER) AS n FROM demo.customers ORDER BY name"
    info = flight.client.get_flight_info(cmd(sql), flight.options(reader))
    assert info.schema.field("n").type == pa.int32()
    with pytest.raises(pa.ArrowInvalid, match=r"(?i)\[invalid_argument\].*convert"):
        flight.client.do_get(info.endpoints[0].ticket, flight.options(reader)).read_all()


def test_a_read_that_starts_at_once_runs_once_for_get_flight_info_and_do_get(
    h: Harness, flight: FlightHarness, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-table read with no sort or aggregate, of a shape already checked, is
    opened by GetFlightInfo (registered under its ticket) and streamed by the DoGet of
    that ticket: one check, one execution, no bind."""
    engine = h.core.engine
    sql = "SELECT id, name FROM demo.customers WHERE id = {}"
    flight.query(reader, sql.format(1))  # checks the shape once
    calls: list[str] = []
    for name in ("open_stream", "schema_of"):
        original = getattr(engine, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        monkeypatch.setattr(engine, name, spy)
    idle = engine.running_count()  # earlier tests may have left reads started
    info = flight.client.get_flight_info(cmd(sql.format(7)), flight.options(reader))
    assert calls == ["open_stream"]
    assert engine.running_count() == idle + 1
    table = flight.client.do_get(info.endpoints[0].ticket, flight.options(reader)).read_all()
    assert calls == ["open_stream"]
    assert table.to_pylist() == [{"id": 7, "name": table["name"][0].as_py()}]
    assert table.schema.equals(info.schema, check_metadata=True)
    assert engine.running_count() == idle


def test_a_started_read_waiting_for_its_do_get_holds_no_admission_slot(
    h: Harness, flight: FlightHarness
) -> None:
    """Parked reads do no work: a token with max_concurrent 1 may hold several tickets,
    and each DoGet takes the slot when it runs."""
    token = h.rest.create_token("reader", name="one-at-a-time", max_concurrent=1)["token"]
    sql = "SELECT id FROM demo.customers WHERE id = {}"
    flight.query(token, sql.format(1))
    infos = [
        flight.client.get_flight_info(cmd(sql.format(i)), flight.options(token)) for i in (2, 3, 4)
    ]
    got = [
        flight.client.do_get(i.endpoints[0].ticket, flight.options(token)).read_all() for i in infos
    ]
    assert [t["id"][0].as_py() for t in got] == [2, 3, 4]


def test_a_started_reads_timeout_counts_from_its_do_get(h: Harness, flight: FlightHarness) -> None:
    """A parked read does no work, so its token's timeout does not run while it waits:
    fetched after more than the timeout, it streams (a slow client is not timed out for
    the time it took to come back)."""
    token = h.rest.create_token("reader", name="slow-to-fetch", timeout_s=0.3)["token"]
    sql = "SELECT id FROM demo.customers WHERE id = {}"
    flight.query(token, sql.format(1))  # the shape is checked: the next one starts at once
    before = len(flight.server.started)
    info = flight.client.get_flight_info(cmd(sql.format(2)), flight.options(token))
    assert len(flight.server.started) == before + 1
    time.sleep(0.8)  # the client is slow: longer than the token's timeout
    table = flight.client.do_get(info.endpoints[0].ticket, flight.options(token)).read_all()
    assert table["id"].to_pylist() == [2]


def test_a_flight_sql_statement_executed_and_not_fetched_holds_no_admission_slot(
    h: Harness, flight: FlightHarness
) -> None:
    """Flight SQL runs a statement in GetFlightInfo, then parks it for its DoGet: a token
    with max_concurrent 1 may execute a second statement before fetching the first (as
    a DB-API cursor that runs another statement does), and each DoGet takes the slot."""
    token = h.rest.create_token("reader", name="executes-ahead", max_concurrent=1)["token"]
    infos = [
        flight.client.get_flight_info(
            fl.FlightDescriptor.for_command(
                pack(pb.CommandStatementQuery(query=f"SELECT count(*) + {i} AS n FROM demo.orders"))
            ),
            flight.options(token),
        )
        for i in (0, 1)
    ]
    got = [
        flight.client.do_get(i.endpoints[0].ticket, flight.options(token)).read_all() for i in infos
    ]
    assert [t["n"][0].as_py() for t in got] == [DEMO_ROWS, DEMO_ROWS + 1]


def test_a_ticket_fetched_twice_at_once_is_two_executions_one_cancel_stops(
    h: Harness, flight: FlightHarness, reader: str
) -> None:
    """Two DoGets of one ticket run it twice under its one query id: both are counted,
    and cancelling the ticket stops both (the second used to replace the first in the
    engine's registry, which then ran on out of reach of cancel and shutdown)."""
    engine = h.core.engine
    idle = engine.running_count()
    endless = "SELECT a.range AS x, b.range AS y FROM range(1000000) a, range(1000000) b"
    ticket = flight.client.get_flight_info(cmd(endless), flight.options(reader)).endpoints[0]
    streams = [flight.client.do_get(ticket.ticket, flight.options(reader)) for _ in range(2)]
    for stream in streams:
        assert stream.read_chunk().data.num_rows > 0
    assert engine.running_count() == idle + 2
    result = list(
        flight.client.do_action(fl.Action("cancel", ticket.ticket.ticket), flight.options(reader))
    )
    assert json.loads(result[0].body.to_pybytes()) == {"cancelled": True}
    for stream in streams:
        # Chunk by chunk: read_all turns CANCELLED into KeyboardInterrupt in pyarrow.
        with pytest.raises(fl.FlightCancelledError, match=r"\[cancelled\]"):
            while True:
                stream.read_chunk()
    deadline = time.monotonic() + 30
    while engine.running_count() > idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.running_count() == idle


def test_cancelling_a_started_read_by_its_ticket_ends_its_do_get(
    flight: FlightHarness, reader: str
) -> None:
    sql = "SELECT id FROM demo.orders WHERE id > {}"
    flight.query(reader, sql.format(0))
    info = flight.client.get_flight_info(cmd(sql.format(1)), flight.options(reader))
    ticket = info.endpoints[0].ticket
    result = list(
        flight.client.do_action(fl.Action("cancel", ticket.ticket), flight.options(reader))
    )
    assert json.loads(result[0].body.to_pybytes()) == {"cancelled": True}
    stream = flight.client.do_get(ticket, flight.options(reader))
    # Chunk by chunk: read_all turns CANCELLED into KeyboardInterrupt in pyarrow.
    with pytest.raises(fl.FlightCancelledError, match=r"\[cancelled\]"):
        while True:
            stream.read_chunk()


def test_a_started_plain_flight_read_never_fetched_is_closed(tmp_path: Path) -> None:
    """Unfetched within started_query_ttl_s, a started read is closed (the running
    count back to idle); its ticket still answers, running the read anew."""
    with harness(tmp_path / "data", demo_rows=100, started_query_ttl_s=0.3) as built:
        engine, client = built.core.engine, built.flight.client
        token = built.rest.create_token("reader", name="idle")["token"]
        options = built.flight.options(token)
        sql = "SELECT * FROM demo.orders WHERE id > {}"
        built.flight.query(token, sql.format(0))
        infos = [client.get_flight_info(cmd(sql.format(i)), options) for i in range(1, 4)]
        assert engine.running_count() == 3 == len(built.flight.server.started)
        deadline = time.monotonic() + 10
        while engine.running_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.running_count() == 0
        late = client.do_get(infos[2].endpoints[0].ticket, options).read_all()
        expected = built.flight.query(ADMIN, "SELECT count(*) AS n FROM demo.orders WHERE id > 3")
        assert late.num_rows == expected["n"][0].as_py() > 0


def test_a_flight_sql_query_never_fetched_is_closed_and_its_ticket_runs_afresh(
    tmp_path: Path,
) -> None:
    """A Flight SQL GetFlightInfo starts its query; a ticket never redeemed within
    started_query_ttl_s frees it (cursor, admission slot: the running-queries count
    back to idle), and a DoGet that comes later still answers, running it anew."""
    with harness(tmp_path / "data", demo_rows=100, started_query_ttl_s=0.3) as built:
        engine, client = built.core.engine, built.flight.client
        options = built.flight.options(ADMIN)
        infos = [
            client.get_flight_info(
                fl.FlightDescriptor.for_command(
                    pack(
                        pb.CommandStatementQuery(query=f"SELECT * FROM demo.orders WHERE id > {i}")
                    )
                ),
                options,
            )
            for i in range(3)
        ]
        assert engine.running_count() == 3
        deadline = time.monotonic() + 10
        while engine.running_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.running_count() == 0
        late = client.do_get(infos[2].endpoints[0].ticket, options).read_all()
        expected = built.flight.query(ADMIN, "SELECT count(*) AS n FROM demo.orders WHERE id > 2")
        assert late.num_rows == expected["n"][0].as_py() > 0
        assert engine.running_count() == 0


def test_the_bound_schema_is_what_the_stream_carries(flight: FlightHarness, reader: str) -> None:
    sql = (
        "SELECT o.*, c.name, [o.id] AS ids, {'k': c.name} AS s, "
        "o.amount::DECIMAL(18,3) AS d, '{\"a\": 1}'::JSON AS j, "
        "INTERVAL 1 DAY AS i, uuid() IS NULL AS u, 1 AS dup, 2 AS dup "
        "FROM demo.orders o JOIN demo.customers c ON c.id = o.customer_id LIMIT 3"
    )
    info = flight.server.get_flight_info(flight.context(reader), cmd(sql))
    streamed = flight.client.do_get(info.endpoints[0].ticket, flight.options(reader)).read_all()
    assert streamed.num_rows == 3
    assert streamed.schema == info.schema
    assert info.schema.names[-2:] == ["dup", "dup"]


def test_json_command_with_truncate_ends_with_a_note(h: Harness, flight: FlightHarness) -> None:
    token = h.rest.create_token("reader", name="capped", max_rows=100)["token"]
    opts = flight.options(token)
    assert flight.query(token, "SELECT * FROM range(100)").num_rows == 100
    info = flight.client.get_flight_info(cmd("SELECT * FROM range(500)"), opts)
    with pytest.raises(fl.FlightServerError, match=r"\[resource_exhausted\].*max_rows \(100\)"):
        flight.client.do_get(info.endpoints[0].ticket, opts).read_all()
    command = json.dumps({"sql": "SELECT * FROM range(500)", "truncate": True})
    info = flight.client.get_flight_info(cmd(command), opts)
    reader = flight.client.do_get(info.endpoints[0].ticket, opts)
    rows, notes = 0, []
    for chunk in reader:
        rows += chunk.data.num_rows
        if chunk.app_metadata is not None:
            notes.append(json.loads(chunk.app_metadata.to_pybytes()))
    assert rows == 100
    assert notes == [{"truncated": True, "max_rows": 100}]


def test_a_read_started_by_get_flight_info_keeps_max_rows_and_truncation(
    h: Harness, flight: FlightHarness
) -> None:
    """The same limits whether the read is only bound by GetFlightInfo (first sight of
    its shape) or opened there and parked (from the second on)."""
    token = h.rest.create_token("reader", name="capped-parked", max_rows=100)["token"]
    opts = flight.options(token)
    for limit in (900, 901):  # the second is of a shape already checked: it is parked
        sql = f"SELECT * FROM demo.orders WHERE id < {limit}"
        info = flight.client.get_flight_info(cmd(sql), opts)
        with pytest.raises(fl.FlightServerError, match=r"\[resource_exhausted\].*max_rows"):
            flight.client.do_get(info.endpoints[0].ticket, opts).read_all()
        command = json.dumps({"sql": sql, "truncate": True})
        info = flight.client.get_flight_info(cmd(command), opts)
        rows, notes = 0, []
        for chunk in flight.client.do_get(info.endpoints[0].ticket, opts):
            rows += chunk.data.num_rows
            if chunk.app_metadata is not None:
                notes.append(json.loads(chunk.app_metadata.to_pybytes()))
        assert rows == 100
        assert notes == [{"truncated": True, "max_rows": 100}]
    assert h.core.engine.starts_at_once(h.core.tokens.verify(token), sql)


@pytest.mark.parametrize(
    ("command", "match"),
    [
        (b"", "invalid_argument"),
        (b"SELEC 1", "invalid_argument"),
        (b"SELECT * FROM no_such_table", "invalid_argument"),
        (b"\xff\xfe SELECT", "UTF-8"),
        (b'{"sql": 1}', 'needs {"sql"'),
        (b"{not json", "looks like JSON"),
        (b"SELECT 1; DROP TABLE demo.orders", "invalid_argument"),
    ],
)
def test_bad_commands_are_invalid_argument_over_the_wire(
    flight: FlightHarness, reader: str, command: bytes, match: str
) -> None:
    with pytest.raises(pa.ArrowInvalid, match=r"\[invalid_argument\]") as e:
        flight.client.get_flight_info(
            fl.FlightDescriptor.for_command(command), flight.options(reader)
        )
    assert match in str(e.value)


@pytest.mark.parametrize(
    ("role", "sql"),
    [
        ("reader", "SELECT * FROM read_csv('/etc/passwd')"),
        ("reader", "SELECT * FROM glob('/*')"),
        ("admin", "ATTACH ':memory:' AS scratch"),
        ("admin", "INSTALL httpfs"),
        ("admin", "SET enable_external_access = true"),
        ("reader", "PRAGMA enable_profiling"),
        ("reader", "BEGIN TRANSACTION"),
        ("reader", "DELETE FROM demo.orders"),
        ("limited", "SELECT * FROM query_table('demo.orders')"),
        (
            "limited",
            "SELECT * FROM demo.customers WHERE id IN (SELECT customer_id FROM demo.orders)",
        ),
    ],
)
def test_escapes_are_permission_denied_over_the_wire(
    flight: FlightHarness, reader: str, customers_only: str, role: str, sql: str
) -> None:
    token = {"reader": reader, "admin": ADMIN, "limited": customers_only}[role]
    with pytest.raises(fl.FlightUnauthorizedError, match=r"\[permission_denied\]"):
        flight.query(token, sql)
    assert flight.query(ADMIN, "SELECT count(*) AS n FROM demo.orders").column(0)[0].as_py() == (
        DEMO_ROWS
    )


# -- authentication and tickets ----------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer ")],
        [(b"authorization", b"Bearer not-a-token")],
        [(b"authorization", b"Token " + ADMIN.encode())],
        [(b"authorization", b"Basic !!!")],
    ],
)
def test_unauthenticated_calls_are_refused(
    flight: FlightHarness, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(fl.FlightUnauthenticatedError, match=r"\[unauthenticated\]") as e:
        flight.client.get_flight_info(cmd("SELECT 1"), fl.FlightCallOptions(headers=headers))
    assert ADMIN not in str(e.value)


def test_the_call_context_verifies_its_token(flight: FlightHarness) -> None:
    with pytest.raises(Unauthenticated, match="invalid token"):
        flight.context("not-a-token")


def test_basic_handshake_answers_with_bearer(flight: FlightHarness, reader: str) -> None:
    key, value = flight.client.authenticate_basic_token("any-user", reader)
    assert (key, value) == (b"authorization", f"Bearer {reader}".encode())
    opts = fl.FlightCallOptions(headers=[(key, value)])
    info = flight.client.get_flight_info(cmd("SELECT 1 AS one"), opts)
    assert flight.client.do_get(info.endpoints[0].ticket, opts).read_all().num_rows == 1
    with pytest.raises(fl.FlightUnauthenticatedError):
        flight.client.authenticate_basic_token("any-user", "wrong-password")


def test_a_revoked_token_is_refused_on_its_next_call(h: Harness, flight: FlightHarness) -> None:
    created = h.rest.create_token("reader", name="to-revoke")
    assert flight.query(created["token"], "SELECT 1 AS one").num_rows == 1
    assert h.rest.request("DELETE", f"/api/v1/tokens/{created['id']}").status_code == 200
    with pytest.raises(fl.FlightUnauthenticatedError, match=r"\[unauthenticated\].*revoked"):
        flight.query(created["token"], "SELECT 1 AS one")


def test_a_ticket_is_bound_to_its_token(h: Harness, flight: FlightHarness, reader: str) -> None:
    other = h.rest.create_token("reader", name="other")["token"]
    info = flight.server.get_flight_info(flight.context(reader), cmd("SELECT 1 AS one"))
    ticket = info.endpoints[0].ticket
    with pytest.raises(fl.FlightUnauthorizedError, match="another token"):
        flight.client.do_get(ticket, flight.options(other)).read_all()
    assert flight.client.do_get(ticket, flight.options(reader)).read_all().num_rows == 1
    with pytest.raises(pa.ArrowKeyError, match="unknown or expired ticket"):
        flight.client.do_get(fl.Ticket(b"adt1.made-up"), flight.options(reader)).read_all()


# -- actions -------------------------------------------------------------------------------
def test_health_action(flight: FlightHarness, reader: str) -> None:
    (direct,) = list(flight.server.do_action(flight.context(reader), fl.Action("health", b"")))
    body = json.loads(direct)
    assert body["status"] == "ok" and body["database"] == "ok"
    (wire,) = list(flight.client.do_action(fl.Action("health", b""), flight.options(reader)))
    assert json.loads(wire.body.to_pybytes())["status"] == "ok"


def test_list_actions_names_plain_and_flight_sql_actions(flight: FlightHarness) -> None:
    names = {a.type for a in flight.client.list_actions(flight.options(ADMIN))}
    assert {"cancel", "health", "execute", "CancelFlightInfo", "CreatePreparedStatement"} <= names


def test_cancel_of_an_unknown_query_answers_false(flight: FlightHarness, reader: str) -> None:
    (result,) = list(
        flight.server.do_action(flight.context(reader), fl.Action("cancel", b"adt1.nothing-here"))
    )
    assert json.loads(result) == {"cancelled": False}


def test_cancel_without_a_body_is_invalid(flight: FlightHarness, reader: str) -> None:
    e = wire_error(
        lambda: list(flight.server.do_action(flight.context(reader), fl.Action("cancel", b" ")))
    )
    assert str(e).startswith("[invalid_argument]"), e


def test_an_unknown_action_is_unimplemented(flight: FlightHarness, reader: str) -> None:
    with pytest.raises(pa.ArrowNotImplementedError, match=r"\[unimplemented\].*ListActions"):
        list(flight.client.do_action(fl.Action("launch", b""), flight.options(reader)))


def test_execute_by_a_reader_is_refused_and_writes_nothing(
    flight: FlightHarness, reader: str
) -> None:
    action = fl.Action("execute", b"CREATE TABLE main.reader_made AS SELECT 1 AS x")
    e = wire_error(lambda: list(flight.server.do_action(flight.context(reader), action)))
    assert str(e).startswith("[permission_denied]"), e
    with pytest.raises(fl.FlightUnauthorizedError, match=r"\[permission_denied\]"):
        list(flight.client.do_action(action, flight.options(reader)))
    assert "reader_made" not in table_names(flight)


def test_execute_by_a_writer_and_returning(flight: FlightHarness, writer: str) -> None:
    flight.execute(writer, "CREATE TABLE main.executed (id INTEGER, v VARCHAR)")
    assert "executed" in table_names(flight)
    assert flight.execute(writer, "INSERT INTO main.executed VALUES (1, 'a'), (2, 'b')") == {
        "rows": 2
    }
    results = list(
        flight.server.do_action(
            flight.context(writer),
            fl.Action("execute", b"UPDATE main.executed SET v = 'c' WHERE id = 2 RETURNING id, v"),
        )
    )
    assert json.loads(results[0]) == {"rows": 1, "returning": ["id", "v"]}
    returned = pa.ipc.open_stream(results[1]).read_all()
    assert returned.to_pylist() == [{"id": 2, "v": "c"}]


def test_do_exchange_is_unimplemented(flight: FlightHarness, reader: str) -> None:
    with pytest.raises(pa.ArrowNotImplementedError, match=r"\[unimplemented\].*DoExchange"):
        writer, stream = flight.client.do_exchange(cmd("x"), flight.options(reader))
        with writer:
            stream.read_all()


# -- DoPut -----------------------------------------------------------------------------------
def put(
    flight: FlightHarness, token: str, descriptor: fl.FlightDescriptor, table: pa.Table
) -> dict[str, Any]:
    writer, meta = flight.client.do_put(descriptor, table.schema, flight.options(token))
    with writer:
        writer.write_table(table)
        writer.done_writing()
        buf = meta.read()
    assert buf is not None
    return json.loads(buf.to_pybytes())


def test_put_appends_creating_the_table(flight: FlightHarness, writer: str) -> None:
    data = pa.table({"id": [1, 2], "name": ["a", "b"]})
    path = fl.FlightDescriptor.for_path("main", "put_append")
    assert put(flight, writer, path, data)["rows"] == 2
    assert put(flight, writer, path, data)["rows"] == 2
    assert flight.query(writer, "SELECT count(*) FROM main.put_append").column(0)[0].as_py() == 4


def test_put_upsert_replaces_rows_by_key(flight: FlightHarness, writer: str) -> None:
    first = pa.table({"id": [1, 2], "v": ["a", "b"]})
    put(flight, writer, fl.FlightDescriptor.for_path("main", "put_upsert"), first)
    doc = {"table": "main.put_upsert", "mode": "upsert", "key": ["id"]}
    put(flight, writer, cmd(json.dumps(doc)), pa.table({"id": [2, 3], "v": ["B", "c"]}))
    rows = flight.query(writer, "SELECT id, v FROM main.put_upsert ORDER BY id").to_pylist()
    assert rows == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"mode": "append"}, "table"),
        ({"table": "main.put_bad", "colour": "red"}, "unknown DoPut option"),
        ({"table": "main.put_bad", "mode": "upsert"}, "key"),
    ],
)
def test_bad_put_commands_are_invalid_and_create_nothing(
    flight: FlightHarness, writer: str, doc: dict[str, Any], match: str
) -> None:
    with pytest.raises(pa.ArrowInvalid, match=r"\[invalid_argument\]") as e:
        put(flight, writer, cmd(json.dumps(doc)), pa.table({"id": [1]}))
    assert match in str(e.value)
    assert "put_bad" not in table_names(flight)


def test_a_reader_cannot_put(flight: FlightHarness, reader: str) -> None:
    with pytest.raises(fl.FlightUnauthorizedError, match=r"\[permission_denied\]"):
        put(
            flight, reader, fl.FlightDescriptor.for_path("main", "reader_put"), pa.table({"x": [1]})
        )
    assert "reader_put" not in table_names(flight)


def test_a_type_mismatch_leaves_the_table_untouched(flight: FlightHarness, writer: str) -> None:
    path = fl.FlightDescriptor.for_path("main", "put_typed")
    put(flight, writer, path, pa.table({"id": [1, 2]}))
    with pytest.raises(pa.ArrowInvalid, match=r"\[invalid_argument\]"):
        put(flight, writer, path, pa.table({"id": ["not", "ints"]}))
    assert flight.query(writer, "SELECT id FROM main.put_typed ORDER BY id").column(
        0
    ).to_pylist() == [
        1,
        2,
    ]


# -- Flight SQL on the same server --------------------------------------------------------------
def test_flight_sql_statement_query_through_the_handlers(
    flight: FlightHarness, reader: str
) -> None:
    descriptor = fl.FlightDescriptor.for_command(
        pack(pb.CommandStatementQuery(query="SELECT id FROM demo.products ORDER BY id LIMIT 3"))
    )
    info = flight.server.get_flight_info(flight.context(reader), descriptor)
    assert info.schema.names == ["id"]
    rows = flight.client.do_get(info.endpoints[0].ticket, flight.options(reader)).read_all()
    assert rows.num_rows == 3 and rows.schema == info.schema


def test_flight_sql_get_tables_honours_the_allow_list(
    flight: FlightHarness, customers_only: str
) -> None:
    descriptor = fl.FlightDescriptor.for_command(pack(pb.CommandGetTables()))
    info = flight.server.get_flight_info(flight.context(customers_only), descriptor)
    opts = flight.options(customers_only)
    tables = flight.client.do_get(info.endpoints[0].ticket, opts).read_all()
    pairs = zip(tables["db_schema_name"].to_pylist(), tables["table_name"].to_pylist(), strict=True)
    assert set(pairs) == {("demo", "customers")}


def test_flight_sql_transactions_are_unimplemented(flight: FlightHarness, writer: str) -> None:
    action = fl.Action("BeginTransaction", pack(pb.ActionBeginTransactionRequest()))
    e = wire_error(lambda: list(flight.server.do_action(flight.context(writer), action)))
    assert str(e).startswith("[unimplemented]"), e


def test_adbc_queries_and_reader_writes_are_refused(flight: FlightHarness, reader: str) -> None:
    db_kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {reader}"}
    url = f"grpc://127.0.0.1:{flight.server.port}"
    with flightsql.connect(url, db_kwargs=db_kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM demo.orders WHERE id > ?", parameters=(10,))
            assert cur.fetchone() == (DEMO_ROWS - 10,)
        with conn.cursor() as cur, pytest.raises(Exception, match=r"\[permission_denied\]"):
            cur.execute("CREATE TABLE main.adbc_reader AS SELECT 1 AS x")
    assert "adbc_reader" not in table_names(flight)


def test_the_harness_stops_its_server(tmp_path: Path) -> None:
    with harness(tmp_path / "data") as built:
        port = built.flight.server.port
        assert built.flight.query(ADMIN, "SELECT 42 AS x").column(0)[0].as_py() == 42
    client = fl.connect(f"grpc://127.0.0.1:{port}")
    try:
        with pytest.raises(fl.FlightUnavailableError):
            client.get_flight_info(cmd("SELECT 1"), fl.FlightCallOptions(headers=[], timeout=5))
    finally:
        client.close()


def test_stopping_the_server_ends_the_flight_sql_threads(tmp_path: Path) -> None:
    def flightsql_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("agentdata-flightsql")]

    before = set(flightsql_threads())
    with harness(tmp_path / "data") as built:
        # A Flight SQL statement starts the disconnect watcher and the janitor of
        # started queries.
        with (
            flightsql.connect(
                f"grpc://127.0.0.1:{built.flight.server.port}",
                db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {ADMIN}"},
                autocommit=True,
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT 1 AS x")
            assert cur.fetchall() == [(1,)]
        assert set(flightsql_threads()) - before
    assert set(flightsql_threads()) <= before


def test_a_refused_get_flight_info_leaves_no_ticket(
    h: Harness, flight: FlightHarness, reader: str
) -> None:
    """Refused whether it would only have been bound or opened at once (a shape already
    checked that fails as it starts): no ticket is left redeemable."""
    tickets = flight.server.tickets
    flight.query(reader, "SELECT id FROM demo.customers LIMIT 1")  # the shape is known
    before = len(tickets)
    for sql in (
        "SELECT * FROM no_such.table_here",  # refused by the check
        "SELECT id FROM demo.customers LIMIT 1e999",  # passes as a shape, fails to start
    ):
        with pytest.raises(pa.ArrowException, match=r"\[invalid_argument\]"):
            flight.client.get_flight_info(cmd(sql), flight.options(reader))
        assert len(tickets) == before
