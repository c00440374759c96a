"""ListFlights and the demo dataset a newcomer sees."""

from __future__ import annotations

import json

import pyarrow.flight as fl

from tests.support.server import ServerProcess


def test_list_flights_shows_demo_tables_with_metadata(
    server: ServerProcess, reader_token: str
) -> None:
    infos = {
        tuple(p.decode() for p in i.descriptor.path): i
        for i in server.flight().list_flights(options=server.options(reader_token))
    }
    assert {("demo", "customers"), ("demo", "products"), ("demo", "orders")} <= set(infos)
    orders = infos[("demo", "orders")]
    assert orders.total_records == 20_000  # the test server's demo size
    assert orders.schema.names == [
        "id",
        "customer_id",
        "product_id",
        "quantity",
        "amount",
        "ordered_at",
        "status",
    ]
    meta = json.loads(orders.app_metadata)
    assert meta["kind"] == "TABLE" and meta["rows"] == 20_000
    assert meta["last_modified"].endswith("Z")
    # Its endpoint can be redeemed directly.
    table = (
        server.flight().do_get(orders.endpoints[0].ticket, server.options(reader_token)).read_all()
    )
    assert table.num_rows == 20_000


def test_list_flights_hides_tables_outside_allow_list(server: ServerProcess) -> None:
    limited = server.create_token("reader", name="only-customers", tables=["demo.customers"])[
        "token"
    ]
    paths = {
        tuple(p.decode() for p in i.descriptor.path)
        for i in server.flight().list_flights(options=server.options(limited))
    }
    assert paths == {("demo", "customers")}


def test_demo_joins_are_consistent(server: ServerProcess, reader_token: str) -> None:
    t = server.query(
        reader_token,
        "SELECT count(*) AS n, count(c.id) AS with_customer, count(p.id) AS with_product "
        "FROM demo.orders o LEFT JOIN demo.customers c ON c.id = o.customer_id "
        "LEFT JOIN demo.products p ON p.id = o.product_id",
    ).to_pylist()[0]
    assert t == {"n": 20_000, "with_customer": 20_000, "with_product": 20_000}


def test_health_action(server: ServerProcess, reader_token: str) -> None:
    (result,) = list(
        server.flight().do_action(fl.Action("health", b""), server.options(reader_token))
    )
    body = json.loads(result.body.to_pybytes())
    assert body["status"] == "ok" and body["database"] == "ok"
    actions = {a.type for a in server.flight().list_actions(server.options(reader_token))}
    assert {"cancel", "health", "execute"} <= actions


def test_sql_dml_moves_its_tables_freshness(server: ServerProcess, writer_token: str) -> None:
    """INSERT/UPDATE/DELETE sent as SQL name no table to DuckDB's binder; their target's
    last-modified time must move all the same (freshness on every answer)."""
    server.execute(writer_token, "CREATE TABLE main.fresh_dml (x INTEGER)")

    def last_modified() -> str:
        with server.http() as http:
            tables = http.get("/api/v1/tables").json()
        (entry,) = [t for t in tables if t["name"] == "fresh_dml" and t["schema"] == "main"]
        return str(entry["freshness"]["last_modified"])

    for sql in [
        "INSERT INTO main.fresh_dml VALUES (1)",
        "UPDATE main.fresh_dml SET x = 2",
        "DELETE FROM fresh_dml",
    ]:
        before = last_modified()
        server.execute(writer_token, sql)
        assert last_modified() > before, sql  # ISO-8601 UTC times sort as text
