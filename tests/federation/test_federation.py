"""Federation end to end: a real `agentdata serve` querying the fakesnow emulator (server
mode, the real Snowflake connector) for tables that are declared, not synced.

The same data is also synced into DuckDB by a real sync run, so every federated answer
is compared with the answer the synced copy gives. The emulator records every statement
it receives (tests/support/fakesnow_recorder.py), which is how "only the needed columns
and rows crossed" and "the timeout cancelled the remote query" are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.fakesnow_server import FakesnowServer
from tests.support.server import REPO, ServerProcess, start_server
from tests.sync.support import create_spec, run_sync

ROWS = 2_000
#: Held by the emulator until aborted: the alias a pushed-down query gives SLOW_ORDERS
#: (the statements that create it and read its metadata do not contain it).
SLOW = '"SLOW_ORDERS"'


@pytest.fixture(scope="module")
def snow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakesnowServer]:
    server = FakesnowServer(
        data_dir=tmp_path_factory.mktemp("snow"), record_queries=True, slow_marker=SLOW
    )
    with server:
        server.execute(
            "create schema if not exists AGENTDATA_TEST.SALES",
            "create table AGENTDATA_TEST.SALES.ORDERS (ID int, CUSTOMER_ID int,"
            " AMOUNT number(10,2), STATUS varchar, NOTE varchar, TS timestamp_ntz)",
            "insert into AGENTDATA_TEST.SALES.ORDERS select seq4(), seq4() % 7,"
            " case when seq4() % 13 = 0 then null else (seq4() % 100) + 0.25 end,"
            " case seq4() % 3 when 0 then 'open' when 1 then 'shipped' else 'OPEN-late' end,"
            " repeat('x', 50),"
            " dateadd(hour, seq4(), '2024-01-01'::timestamp_ntz)"
            f" from table(generator(rowcount => {ROWS}))",
            "create table AGENTDATA_TEST.SALES.SLOW_ORDERS (ID int, AMOUNT number(10,2))",
            "insert into AGENTDATA_TEST.SALES.SLOW_ORDERS values (1, 1.5), (2, 2.5)",
        )
        yield server


@pytest.fixture(scope="module")
def server(
    snow: FakesnowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory.mktemp("fed") / "data",
        env={**snow.env(), "AGENTDATA_FEDERATION_MAX_UNFILTERED_ROWS": "1000"},
        demo_rows=1_000,
    )
    try:
        with srv.http() as http:
            for name, source in [
                ("sales.orders", "AGENTDATA_TEST.SALES.ORDERS"),
                ("sales.slow_orders", "AGENTDATA_TEST.SALES.SLOW_ORDERS"),
            ]:
                r = http.post("/api/v1/remote-tables", json={"name": name, "source": source})
                assert r.status_code == 201, r.text
            create_spec(
                http,
                name="orders_copy",
                source="AGENTDATA_TEST.SALES.ORDERS",
                target="copy.orders",
                mode="full",
            )
            run_sync(http, "orders_copy")
        srv.execute(srv.admin_token, "CREATE SCHEMA IF NOT EXISTS dim")
        srv.execute(
            srv.admin_token,
            "CREATE TABLE dim.customers AS SELECT range::INTEGER AS id,"
            " 'customer ' || range AS name FROM range(5)",
        )
        yield srv
    finally:
        srv.stop()


def _read(server: ServerProcess, token: str, sql: str) -> pa.Table:
    return server.query(token, sql)


def _error(server: ServerProcess, token: str, sql: str) -> str:
    with pytest.raises(pa.ArrowException) as info:
        _read(server, token, sql)
    return str(info.value)


def _statements(snow: FakesnowServer, since: int = 0) -> list[dict[str, Any]]:
    return [q for q in snow.queries()[since:] if q["kind"] == "query"]


# -- whole pushdown ---------------------------------------------------------------------

PUSHED_DOWN = [
    # filters
    "SELECT id, amount, status FROM {t} WHERE amount > 50 AND status = 'open' ORDER BY id",
    # aggregates, GROUP BY ALL
    "SELECT status, count(*) AS n, sum(amount) AS total, min(ts) AS first FROM {t}"
    " GROUP BY ALL ORDER BY status",
    # ORDER BY with NULLs (DuckDB puts them last either way) / LIMIT / OFFSET
    "SELECT id, amount FROM {t} ORDER BY amount DESC, id LIMIT 7 OFFSET 3",
    # DuckDB-only syntax: FILTER, ILIKE, FROM-first, ::, EXCLUDE, QUALIFY
    "SELECT customer_id, count(*) FILTER (WHERE status ILIKE 'open%') AS open_n FROM {t}"
    " GROUP BY customer_id ORDER BY customer_id",
    "FROM {t} SELECT id, status || '-' || id::VARCHAR AS label WHERE id < 20 ORDER BY id",
    "SELECT * EXCLUDE (note, ts) FROM {t} WHERE id BETWEEN 10 AND 15 ORDER BY id",
    "SELECT customer_id, id, amount FROM {t}"
    " QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY amount DESC NULLS LAST, id) = 1"
    " ORDER BY customer_id",
    "SELECT date_trunc('month', ts) AS month, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
]


@pytest.mark.parametrize("sql", PUSHED_DOWN)
def test_whole_pushdown_equals_the_synced_copy(
    server: ServerProcess, snow: FakesnowServer, sql: str
) -> None:
    before = len(snow.queries())
    remote = _read(server, server.admin_token, sql.format(t="sales.orders"))
    local = _read(server, server.admin_token, sql.format(t="copy.orders"))
    meta = remote.schema.metadata
    assert meta[b"agentdata.engine"] == b"snowflake"
    sent = _statements(snow, before)
    assert [s for s in sent if "ORDERS" in s["sql"]], "nothing was sent to Snowflake"
    assert meta[b"agentdata.snowflake_query_id"]
    assert local.schema.metadata[b"agentdata.engine"] == b"duckdb"
    assert b"agentdata.snowflake_query_id" not in local.schema.metadata
    assert remote.schema.remove_metadata() == local.schema.remove_metadata()
    assert remote.to_pylist() == local.to_pylist()


def test_max_rows_applies_and_is_pushed_down(server: ServerProcess, snow: FakesnowServer) -> None:
    token = server.create_token("reader", name="capped", max_rows=10)["token"]
    before = len(snow.queries())
    message = _error(server, token, "SELECT id FROM sales.orders")
    assert "[resource_exhausted]" in message and "max_rows (10)" in message
    (sent,) = _statements(snow, before)
    assert "LIMIT 11" in sent["sql"]  # Snowflake never produced more than max_rows + 1


# -- mixed ----------------------------------------------------------------------------------


def test_mixed_join_equals_local_and_pushes_columns_and_filters(
    server: ServerProcess, snow: FakesnowServer
) -> None:
    sql = (
        "SELECT c.name, count(*) AS n, sum(o.amount) AS total"
        " FROM dim.customers c JOIN {t} o ON o.customer_id = c.id"
        " WHERE o.status = 'open' AND o.id < 600 GROUP BY c.name ORDER BY c.name"
    )
    before = len(snow.queries())
    remote = _read(server, server.admin_token, sql.format(t="sales.orders"))
    local = _read(server, server.admin_token, sql.format(t="copy.orders"))
    assert remote.schema.metadata[b"agentdata.engine"] == b"mixed"
    assert remote.to_pylist() == local.to_pylist()
    assert remote.num_rows == 5
    (sent,) = _statements(snow, before)
    scan = sent["sql"]
    select, _, where = scan.partition(" WHERE ")
    # Projection pushdown: the columns the query uses, and nothing else.
    assert (
        select == 'SELECT "ID", "CUSTOMER_ID", "AMOUNT", "STATUS" FROM AGENTDATA_TEST.SALES.ORDERS'
    )
    # Filter pushdown: both conditions on the remote table went to Snowflake.
    assert "\"STATUS\" = 'open'" in where and '"ID" < 600' in where
    ids = remote.schema.metadata[b"agentdata.snowflake_query_id"].decode()
    assert ids and "," not in ids


def test_mixed_with_the_remote_table_first(server: ServerProcess, snow: FakesnowServer) -> None:
    sql = (
        "SELECT o.id, o.status, c.name FROM {t} o JOIN dim.customers c ON c.id = o.customer_id"
        " WHERE o.id < 40 AND o.amount IS NOT NULL ORDER BY o.id"
    )
    before = len(snow.queries())
    remote = _read(server, server.admin_token, sql.format(t="sales.orders"))
    local = _read(server, server.admin_token, sql.format(t="copy.orders"))
    assert remote.schema.metadata[b"agentdata.engine"] == b"mixed"
    assert remote.to_pylist() == local.to_pylist()
    (sent,) = _statements(snow, before)
    assert '"ID" < 40' in sent["sql"] and 'NOT "AMOUNT" IS NULL' in sent["sql"]
    assert '"NOTE"' not in sent["sql"] and '"TS"' not in sent["sql"]


def test_a_big_remote_table_without_a_pushable_filter_is_refused(
    server: ServerProcess, snow: FakesnowServer
) -> None:
    before = len(snow.queries())
    message = _error(
        server,
        server.admin_token,
        "SELECT c.name, count(*) FROM dim.customers c JOIN sales.orders o"
        " ON o.customer_id = c.id GROUP BY 1",
    )
    assert "[resource_exhausted]" in message
    assert "sales.orders" in message and "WHERE" in message and "TS >=" in message
    assert _statements(snow, before) == []  # refused before anything was sent


def test_outer_join_keeps_unmatched_rows(server: ServerProcess) -> None:
    sql = (
        "SELECT c.id, count(o.id) AS n FROM dim.customers c LEFT JOIN {t} o"
        " ON o.customer_id = c.id AND o.id < 10 WHERE c.id < 5 GROUP BY c.id ORDER BY c.id"
    )
    remote = _read(server, server.admin_token, sql.format(t="sales.orders"))
    local = _read(server, server.admin_token, sql.format(t="copy.orders"))
    assert remote.schema.metadata[b"agentdata.engine"] == b"mixed"
    assert remote.to_pylist() == local.to_pylist()


# -- the same rules ---------------------------------------------------------------------------


def test_allow_list_applies_to_remote_names(server: ServerProcess, snow: FakesnowServer) -> None:
    token = server.create_token("reader", name="dims only", tables=["dim.*"])["token"]
    before = len(snow.queries())
    message = _error(server, token, "SELECT count(*) FROM sales.orders")
    assert "[permission_denied]" in message and "sales.orders" in message
    message = _error(
        server,
        token,
        "SELECT * FROM dim.customers c JOIN sales.orders o ON o.customer_id = c.id WHERE o.id = 1",
    )
    assert "[permission_denied]" in message
    assert _statements(snow, before) == []
    with server.http(token) as http:
        names = {f"{t['schema']}.{t['name']}" for t in http.get("/api/v1/tables").json()}
    assert names == {"dim.customers"}


def test_writes_never_reach_snowflake(server: ServerProcess, snow: FakesnowServer) -> None:
    writer = server.create_token("writer", name="w")["token"]
    reader = server.create_token("reader", name="r")["token"]
    before = len(snow.queries())
    with pytest.raises(pa.ArrowException) as info:
        server.execute(writer, "INSERT INTO sales.orders (ID) VALUES (1)")
    assert "CHECK constraint" in str(info.value)
    with pytest.raises(pa.ArrowException) as info:
        server.execute(reader, "DELETE FROM sales.orders")
    assert "[permission_denied]" in str(info.value)
    message = _error(server, reader, "SELECT * FROM sales.orders; DROP TABLE dim.customers")
    assert "[invalid_argument]" in message
    assert _statements(snow, before) == []  # only checked SELECTs are ever sent


def test_a_timeout_cancels_the_remote_query(server: ServerProcess, snow: FakesnowServer) -> None:
    token = server.create_token("reader", name="impatient", timeout_s=1)["token"]
    before = len(snow.queries())
    message = _error(server, token, "SELECT sum(amount) FROM sales.slow_orders")
    assert "[deadline_exceeded]" in message
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = snow.queries()[before:]
        if any(e["kind"] == "cancelled" for e in log):
            break
        time.sleep(0.05)
    (query,) = [e for e in log if e["kind"] == "query"]
    assert SLOW in query["sql"]
    aborts = [e for e in log if e["kind"] == "abort"]
    assert [a["request_id"] for a in aborts] == [query["request_id"]]
    assert any(e["kind"] == "cancelled" and e["request_id"] == query["request_id"] for e in log)


def test_cancel_action_cancels_the_remote_query(
    server: ServerProcess, snow: FakesnowServer
) -> None:
    token = server.create_token("reader", name="canceller")["token"]
    client = server.flight()
    opts = server.options(token)
    descriptor = fl.FlightDescriptor.for_command(b"SELECT id FROM sales.slow_orders")
    ticket = client.get_flight_info(descriptor, opts).endpoints[0].ticket
    before = len(snow.queries())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            server.flight().do_get(ticket, opts).read_all()
        except pa.ArrowException as e:
            outcome["error"] = str(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not _statements(snow, before) and time.monotonic() < deadline:
        time.sleep(0.05)
    (query,) = _statements(snow, before)
    (answer,) = list(client.do_action(fl.Action("cancel", ticket.ticket), opts))
    assert json.loads(answer.body.to_pybytes()) == {"cancelled": True}
    worker.join(30)
    assert "[cancelled]" in outcome["error"]
    log = snow.queries()[before:]
    assert any(e["kind"] == "abort" and e["request_id"] == query["request_id"] for e in log)


# -- listings, metadata, control plane ------------------------------------------------------


def test_listings_say_where_a_table_lives(server: ServerProcess) -> None:
    with server.http() as http:
        tables = {f"{t['schema']}.{t['name']}": t for t in http.get("/api/v1/tables").json()}
    assert tables["sales.orders"]["location"] == "snowflake"
    assert tables["sales.orders"]["kind"] == "TABLE"
    assert tables["sales.orders"]["rows"] == ROWS
    assert [c["name"] for c in tables["sales.orders"]["columns"]][:2] == ["ID", "CUSTOMER_ID"]
    assert tables["copy.orders"]["location"] == "duckdb"
    flights = {
        tuple(p.decode() for p in f.descriptor.path): json.loads(f.app_metadata)
        for f in server.flight().list_flights(options=server.options(server.admin_token))
    }
    assert flights[("sales", "orders")]["location"] == "snowflake"
    assert flights[("dim", "customers")]["location"] == "duckdb"


def test_flight_sql_get_tables_marks_remote_tables(server: ServerProcess) -> None:
    import adbc_driver_flightsql.dbapi as flightsql

    with flightsql.connect(
        server.flight_url,
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {server.admin_token}"},
        autocommit=True,  # no Flight SQL transactions: each statement commits
    ) as conn:
        schema = conn.adbc_get_table_schema("orders", db_schema_filter="sales")
        objects = conn.adbc_get_objects(depth="tables", db_schema_filter="sales").read_all()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM sales.orders WHERE id < 100")
            assert cur.fetchall() == [(100,)]
    assert schema.names[0] == "ID"
    assert schema.metadata[b"agentdata.location"] == b"snowflake"
    tables = [
        t["table_name"]
        for c in objects.to_pylist()
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    ]
    assert "orders" in tables


def test_rest_and_cli_declare_list_and_remove(server: ServerProcess, snow: FakesnowServer) -> None:
    env = {**server.env, "AGENTDATA_URL": server.http_url, "AGENTDATA_TOKEN": server.admin_token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentdata", "remote", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = cli("add", "scratch.orders", "--source", "AGENTDATA_TEST.SALES.ORDERS")
    assert added.returncode == 0, added.stderr
    assert "scratch.orders" in added.stdout and f"{ROWS:,} rows" in added.stdout
    listed = cli("ls")
    assert "scratch.orders" in listed.stdout and "AGENTDATA_TEST.SALES.ORDERS" in listed.stdout
    again = cli("add", "scratch.orders", "--source", "AGENTDATA_TEST.SALES.ORDERS")
    assert again.returncode != 0 and "[conflict]" in again.stderr
    table = _read(server, server.admin_token, "SELECT count(*) AS n FROM scratch.orders")
    assert table.to_pylist() == [{"n": ROWS}]
    removed = cli("rm", "scratch.orders")
    assert removed.returncode == 0, removed.stderr
    with server.http() as http:
        names = [t["name"] for t in http.get("/api/v1/remote-tables").json()["items"]]
        assert "scratch.orders" not in names
        assert http.delete("/api/v1/remote-tables/scratch.orders").status_code == 404
        r = http.post(
            "/api/v1/remote-tables", json={"name": "dim.customers", "source": "X.Y.ORDERS"}
        )
        assert r.status_code in (409, 400, 503), r.text
        reader = server.create_token("reader", name="r2")["token"]
        r = httpx.get(
            f"{server.http_url}/api/v1/remote-tables",
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert r.status_code == 403
    message = _error(server, server.admin_token, "SELECT * FROM scratch.orders")
    assert "[invalid_argument]" in message  # gone from SQL too


def test_mcp_agents_query_remote_tables(server: ServerProcess) -> None:
    from tests.mcp.support import call, data, error_text

    token = server.create_token("reader", name="agent", tables=["sales.orders"])["token"]
    answer = data(
        call(
            server,
            token,
            "query",
            {"sql": "SELECT id, status FROM sales.orders WHERE id < 3 ORDER BY id"},
        )
    )
    assert [r["STATUS"] for r in answer["rows"]] == ["open", "shipped", "OPEN-late"]
    assert [str(r["ID"]) for r in answer["rows"]] == ["0", "1", "2"]
    text = error_text(call(server, token, "query", {"sql": "SELECT * FROM sales.slow_orders"}))
    assert "permission_denied" in text


def test_metrics_count_remote_queries(server: ServerProcess) -> None:
    _read(server, server.admin_token, "SELECT count(*) FROM sales.orders WHERE id < 3")
    with server.http() as http:
        text = http.get("/metrics").text
    assert 'agentdata_remote_queries_total{engine="snowflake"}' in text
    assert "agentdata_remote_rows_total" in text
    assert "agentdata_remote_errors_total" in text
    assert "remote query" in server.log() and "rows" in server.log()


# -- outages (last: it stops the emulator) ---------------------------------------------------


def test_the_emulator_going_away_mid_query_is_unavailable(
    server: ServerProcess, snow: FakesnowServer
) -> None:
    before = len(snow.queries())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            _read(server, server.admin_token, "SELECT * FROM sales.slow_orders")
        except fl.FlightError as e:
            outcome["error"] = str(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not _statements(snow, before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _statements(snow, before), "the query never reached the emulator"
    snow.stop(timeout_s=0.2)  # held request in flight: the process is killed under it
    worker.join(60)
    message = outcome["error"]
    assert "[unavailable]" in message
    for secret in ("127.0.0.1", str(snow.port), "snow@", "password", "Traceback"):
        assert secret not in message
    message = _error(server, server.admin_token, "SELECT count(*) FROM sales.orders")
    assert "[unavailable]" in message
    snow.start()
    table = _read(server, server.admin_token, "SELECT count(*) AS n FROM sales.orders")
    assert table.to_pylist() == [{"n": ROWS}]
