"""MCP end to end: the SDK's client over streamable HTTP (and stdio) against a real server.

What an agent would notice: the tools and their answers, the caps and what truncation
says, what a table-limited token can see and reach, the cost guard refusing before
anything runs (on MCP, Flight and Flight SQL alike), freshness moving after a write,
and descriptions set over REST showing everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import adbc_driver_flightsql.dbapi as flight_sql
import anyio
import httpx
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.parquet as pq
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.mcp.support import call, data, error_text, run
from tests.support.server import REPO, ServerProcess

TOOLS = {"list_tables", "describe_table", "query", "explain", "export", "job_status"}


@pytest.fixture(scope="module")
def setup(mcp_srv: ServerProcess) -> dict[str, str]:
    """Tables beyond the demo, and the tokens the tests act as."""
    admin = mcp_srv.admin_token
    for sql in (
        "CREATE SCHEMA IF NOT EXISTS crm",
        "CREATE TABLE crm.people (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, note VARCHAR)",
        "INSERT INTO crm.people VALUES (1, 'Ada', NULL), (2, 'Grace', 'navy')",
        "CREATE SCHEMA IF NOT EXISTS secret",
        "CREATE TABLE secret.payroll AS SELECT 'ceo' AS who, 1000000 AS salary",
    ):
        mcp_srv.execute(admin, sql)
    return {
        "admin": admin,
        "reader": mcp_srv.create_token("reader", name="mcp-reader")["token"],
        "writer": mcp_srv.create_token("writer", name="mcp-writer")["token"],
        "crm": mcp_srv.create_token("reader", name="mcp-crm", tables=["crm.*"])["token"],
        "capped": mcp_srv.create_token("reader", name="mcp-capped", max_rows=2)["token"],
        "budget": mcp_srv.create_token("reader", name="mcp-budget", max_scan_rows=1000)["token"],
    }


def test_no_token_is_401(mcp_srv: ServerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = httpx.post(f"{mcp_srv.http_url}/mcp", json=body, headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"


def test_tools_have_input_and_output_schemas(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    async def body(s: ClientSession) -> Any:
        return (await s.list_tools()).tools

    tools = {t.name: t for t in run(mcp_srv, setup["reader"], body)}
    assert set(tools) == TOOLS
    assert tools["query"].input_schema["properties"]["max_rows"]["default"] == 100
    assert tools["export"].input_schema["properties"]["format"]["default"] == "parquet"
    assert "truncated" in tools["query"].output_schema["properties"]


def test_list_and_describe(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    listed = {t["table"]: t for t in data(call(mcp_srv, setup["reader"], "list_tables"))["tables"]}
    assert {"demo.orders", "crm.people", "secret.payroll"} <= set(listed)
    orders = listed["demo.orders"]
    assert orders["rows"] == 20_000 and orders["columns"] == 7 and orders["location"] == "local"
    assert orders["freshness"]["last_modified"].endswith("Z")

    people = data(call(mcp_srv, setup["reader"], "describe_table", {"table": "crm.people"}))
    columns = {c["name"]: c for c in people["columns"]}
    assert columns["id"] == {
        "name": "id",
        "type": "INTEGER",
        "nullable": False,
        "primary_key": True,
        "description": None,
        "mask": None,
    }
    assert columns["name"]["nullable"] is False and columns["note"]["nullable"] is True
    assert people["rows"] == 2
    assert people["sample_rows"] == [
        {"id": 1, "name": "Ada", "note": None},
        {"id": 2, "name": "Grace", "note": "navy"},
    ]
    orders = data(call(mcp_srv, setup["reader"], "describe_table", {"table": "demo.orders"}))
    assert len(orders["sample_rows"]) == 5


def test_query_values_are_json_safe(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    sql = (
        "SELECT 12.50::DECIMAL(10,2) AS price, TIMESTAMPTZ '2024-05-01 10:00:00.5+00' AS at,"
        " DATE '2024-05-01' AS day, '\\x01\\x02'::BLOB AS raw, 'NaN'::DOUBLE AS nan,"
        " 9007199254740993::BIGINT AS big, [1, 2] AS list, {'a': 1} AS struct, 1 AS n, 2 AS n"
    )
    result = data(call(mcp_srv, setup["reader"], "query", {"sql": sql}))
    assert result["rows"] == [
        {
            "price": "12.50",
            "at": "2024-05-01T10:00:00.500000+00:00",
            "day": "2024-05-01",
            "raw": "AQI=",
            "nan": "NaN",
            "big": "9007199254740993",
            "list": [1, 2],
            "struct": {"a": 1},
            "n": 1,
            "n_1": 2,  # DuckDB's own name for a repeated column
        }
    ]
    assert result["truncated"] is False and result["next"] is None
    assert [c["name"] for c in result["columns"]][-2:] == ["n", "n_1"]


def test_query_refuses_writes_whatever_the_role(
    mcp_srv: ServerProcess, setup: dict[str, str]
) -> None:
    text = error_text(call(mcp_srv, setup["writer"], "query", {"sql": "DELETE FROM crm.people"}))
    assert text.startswith("[invalid_argument]")
    assert data(
        call(mcp_srv, setup["reader"], "query", {"sql": "SELECT count(*) AS n FROM crm.people"})
    )["rows"] == [{"n": 2}]


def test_truncation_by_rows(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    sql = "SELECT id FROM demo.orders ORDER BY id"
    result = data(call(mcp_srv, setup["reader"], "query", {"sql": sql, "max_rows": 3}))
    assert result["rows"] == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert result["truncated"] is True and result["row_count"] == 3
    assert result["next"]["reason"] == "max_rows"
    assert result["next"]["export"] == {"sql": sql, "format": "parquet"}
    assert result["next"]["flight_sql"]["query"] == sql
    # Exactly max_rows rows is not truncated.
    exact = data(call(mcp_srv, setup["reader"], "query", {"sql": sql + " LIMIT 3", "max_rows": 3}))
    assert exact["truncated"] is False
    # The token's max_rows wins over a larger request, and says so.
    capped = data(call(mcp_srv, setup["capped"], "query", {"sql": sql, "max_rows": 50}))
    assert capped["row_count"] == 2 and capped["next"]["reason"] == "token_max_rows"


def test_truncation_by_characters(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    sql = "SELECT id, repeat('x', 1000) AS padding FROM demo.orders ORDER BY id"
    result = data(call(mcp_srv, setup["reader"], "query", {"sql": sql, "max_rows": 1000}))
    assert 10 < result["row_count"] < 25  # 20,000 characters of ~1,020-character rows
    assert len(json.dumps(result["rows"])) <= 20_000 + result["row_count"] * 2
    assert result["truncated"] is True and result["next"]["reason"] == "characters"


def test_explain_gives_the_plan_and_estimate(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    whole = data(call(mcp_srv, setup["reader"], "explain", {"sql": "SELECT * FROM demo.orders"}))
    assert whole["estimated_rows"] == 20_000 and "SEQ_SCAN" in whole["plan"]
    assert whole["max_scan_rows"] is None and whole["within_budget"] is True
    limited = data(
        call(mcp_srv, setup["budget"], "explain", {"sql": "SELECT * FROM demo.orders LIMIT 10"})
    )
    assert limited["estimated_rows"] == 10 and limited["within_budget"] is True
    over = data(call(mcp_srv, setup["budget"], "explain", {"sql": "SELECT * FROM demo.orders"}))
    assert over["max_scan_rows"] == 1000 and over["within_budget"] is False


def test_export_and_job_status(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    token = setup["reader"]
    sql = "SELECT * FROM demo.orders WHERE quantity > 2"
    started = data(call(mcp_srv, token, "export", {"sql": sql}))
    assert started["format"] == "parquet"

    async def wait(s: ClientSession) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = data(await s.call_tool("job_status", {"job_id": started["job_id"]}))
            if status["state"] in ("succeeded", "failed", "cancelled"):
                return status
            await anyio.sleep(0.1)
        raise AssertionError("export did not finish")

    status = run(mcp_srv, token, wait)
    assert status["state"] == "succeeded", status["error"]
    artefact = status["artefact"]
    assert artefact["download_path"] == f"/api/v1/artefacts/{artefact['id']}/content"
    with mcp_srv.http(token) as http:
        content = http.get(artefact["download_path"]).content
    expected = mcp_srv.query(token, f"SELECT count(*) AS n FROM ({sql})").column(0)[0].as_py()
    assert pq.read_table(pa.BufferReader(content)).num_rows == artefact["rows"] == expected
    # Another token's job is nobody else's business.
    other = error_text(call(mcp_srv, setup["crm"], "job_status", {"job_id": started["job_id"]}))
    assert other.startswith("[not_found]")


def test_limited_token_sees_and_reaches_nothing_else(
    mcp_srv: ServerProcess, setup: dict[str, str]
) -> None:
    token = setup["crm"]
    listed = [t["table"] for t in data(call(mcp_srv, token, "list_tables"))["tables"]]
    assert listed == ["crm.people"]
    for tool, args in [
        ("describe_table", {"table": "secret.payroll"}),
        ("query", {"sql": "SELECT * FROM secret.payroll"}),
        ("query", {"sql": "SELECT * FROM crm.people, secret.payroll"}),
        ("query", {"sql": "SELECT * FROM query('SELECT * FROM secret.payroll')"}),
        ("explain", {"sql": "SELECT * FROM secret.payroll"}),
        ("export", {"sql": "SELECT * FROM secret.payroll"}),
    ]:
        text = error_text(call(mcp_srv, token, tool, args))
        assert text.startswith(("[permission_denied]", "[invalid_argument]")), (tool, text)
        assert "1000000" not in text
    catalog = data(
        call(
            mcp_srv,
            token,
            "query",
            {"sql": "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables"},
        )
    )
    assert catalog["rows"] == [{"t": "crm.people"}]
    # "Did you mean" names only what the token may read (and an unknown name is refused
    # like a forbidden one: existence is not revealed).
    typo = error_text(call(mcp_srv, token, "query", {"sql": "SELECT * FROM peeple"}))
    assert typo.startswith("[permission_denied]") and "Did you mean: crm.people?" in typo
    leak = error_text(call(mcp_srv, token, "query", {"sql": "SELECT * FROM payrol"}))
    assert "secret" not in leak and "payroll" not in leak.replace("payrol ", "")

    async def resources(s: ClientSession) -> tuple[list[str], str]:
        listed = [str(r.uri) for r in (await s.list_resources()).resources]
        own = await s.read_resource("agentdata://table/crm/people")
        try:
            await s.read_resource("agentdata://table/secret/payroll")
        except Exception as e:  # the SDK raises the server's protocol error
            return listed, own.contents[0].text + "|" + str(e)  # type: ignore[union-attr]
        raise AssertionError("read a table outside the allow-list")

    listed_uris, texts = run(mcp_srv, token, resources)
    assert listed_uris == ["agentdata://table/crm/people"]
    own_text, refusal = texts.split("|", 1)
    assert json.loads(own_text)["columns"][0]["name"] == "id"
    assert "[not_found]" in refusal and "salary" not in refusal


def test_cost_guard_refuses_before_anything_runs(
    mcp_srv: ServerProcess, setup: dict[str, str]
) -> None:
    token = setup["budget"]
    # Were it run, the cast would fail on the first row with a conversion error: the
    # refusal instead proves the statement never started. (An aggregate reads all its
    # input; a plain scan would be cut short by max_rows, and cost only that.)
    sql = "SELECT sum(CAST('x' || id AS INTEGER)) AS boom FROM demo.orders"
    text = error_text(call(mcp_srv, token, "query", {"sql": sql}))
    assert text.startswith("[resource_exhausted]"), text
    assert "20,000" in text and "1,000" in text
    with pytest.raises(pa.ArrowInvalid, match=r"\[invalid_argument\] Conversion Error"):
        mcp_srv.query(setup["reader"], sql)  # the same statement, without a budget, runs
    # Within budget: a streaming LIMIT, or the MCP row cap, counts only the rows it needs.
    small = data(call(mcp_srv, token, "query", {"sql": "SELECT id FROM demo.orders LIMIT 10"}))
    assert small["row_count"] == 10
    capped = data(call(mcp_srv, token, "query", {"sql": "SELECT id FROM demo.orders"}))
    assert capped["row_count"] == 100 and capped["truncated"] is True
    # Flight: refused at GetFlightInfo, before a ticket exists.
    with pytest.raises(fl.FlightError, match=r"\[resource_exhausted\].*20,000.*1,000"):
        mcp_srv.query(token, "SELECT * FROM demo.orders")
    # Flight SQL through ADBC.
    with (
        flight_sql.connect(
            mcp_srv.flight_url,
            db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
            autocommit=True,  # no Flight SQL transactions: each statement commits
        ) as conn,
        conn.cursor() as cur,
    ):
        with pytest.raises(Exception, match=r"resource_exhausted"):
            cur.execute("SELECT * FROM demo.orders")
        cur.execute("SELECT count(*) FROM demo.products")  # 1,000 rows: within budget
        assert cur.fetchone() == (1000,)
    # REST exports check it when the job is asked for.
    with mcp_srv.http(token) as http:
        r = http.post("/api/v1/exports", json={"sql": "SELECT * FROM demo.orders"})
    assert r.status_code == 429 and r.json()["estimated_rows"] == 20_000


def test_freshness_moves_after_a_write(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    sql = "SELECT count(*) AS n FROM crm.people"
    before = data(call(mcp_srv, setup["reader"], "query", {"sql": sql}))["freshness"]
    assert set(before) == {"crm.people"}
    # A DoPut append (the path ingest and syncs take).
    rows = pa.table({"id": pa.array([3], pa.int32()), "name": ["Edsger"], "note": [None]})
    client, opts = mcp_srv.flight(), ServerProcess.options(setup["writer"])
    writer, _ = client.do_put(fl.FlightDescriptor.for_path("crm", "people"), rows.schema, opts)
    writer.write_table(rows)
    writer.close()
    after = data(call(mcp_srv, setup["reader"], "query", {"sql": sql}))["freshness"]
    assert after["crm.people"]["last_modified"] > before["crm.people"]["last_modified"]
    assert data(call(mcp_srv, setup["reader"], "query", {"sql": sql}))["rows"] == [{"n": 3}]
    # Flight streams carry the same under the schema metadata key.
    opts = ServerProcess.options(setup["reader"])
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    assert json.loads(reader.schema.metadata[b"agentdata.freshness"]) == after
    # And REST's table list.
    with mcp_srv.http(setup["reader"]) as http:
        listed = {f"{t['schema']}.{t['name']}": t for t in http.get("/api/v1/tables").json()}
    assert listed["crm.people"]["freshness"] == after["crm.people"]


def test_descriptions_round_trip(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    body = {"description": "People we know", "columns": {"name": "Full name", "note": None}}
    with mcp_srv.http() as admin:
        r = admin.patch("/api/v1/tables/crm/people", json=body)
        assert r.status_code == 200, r.text
        assert (
            admin.patch("/api/v1/tables/crm/people", json={"columns": {"nope": "x"}}).status_code
            == 400
        )
        assert admin.patch("/api/v1/tables/crm/nobody", json=body).status_code == 404
    with mcp_srv.http(setup["reader"]) as http:
        assert http.patch("/api/v1/tables/crm/people", json=body).status_code == 403
        listed = {f"{t['schema']}.{t['name']}": t for t in http.get("/api/v1/tables").json()}
    assert listed["crm.people"]["description"] == "People we know"
    assert {c["name"]: c["description"] for c in listed["crm.people"]["columns"]} == {
        "id": None,
        "name": "Full name",
        "note": None,
    }
    described = data(call(mcp_srv, setup["crm"], "describe_table", {"table": "crm.people"}))
    assert described["description"] == "People we know"
    assert [c["description"] for c in described["columns"]] == [None, "Full name", None]
    tables = data(call(mcp_srv, setup["crm"], "list_tables"))["tables"]
    assert tables[0]["description"] == "People we know"
    # Flight SQL GetTables with include_schema: REMARKS on the field, the table's own
    # description in the schema metadata.
    with flight_sql.connect(
        mcp_srv.flight_url,
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {setup['crm']}"},
        autocommit=True,  # no Flight SQL transactions: each statement commits
    ) as conn:
        schema = conn.adbc_get_table_schema("people", db_schema_filter="crm")
    assert schema.field("name").metadata[b"ARROW:FLIGHT:SQL:REMARKS"] == b"Full name"
    # Removing one.
    with mcp_srv.http() as admin:
        r = admin.patch("/api/v1/tables/crm/people", json={"description": None})
    assert r.json()["description"] is None
    assert r.json()["columns"][1]["description"] == "Full name"


def test_stdio_forwards_to_the_server(mcp_srv: ServerProcess, setup: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentdata", "mcp"],
        env={"AGENTDATA_URL": mcp_srv.http_url, "AGENTDATA_TOKEN": setup["crm"]},
        cwd=str(REPO),
    )

    async def main() -> tuple[set[str], Any, str]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            names = {t.name for t in (await s.list_tools()).tools}
            rows = await s.call_tool("query", {"sql": "SELECT name FROM crm.people WHERE id = 1"})
            refused = await s.call_tool("query", {"sql": "SELECT * FROM secret.payroll"})
            return names, rows.structured_content, refused.content[0].text  # type: ignore[union-attr]

    names, rows, refused = anyio.run(main)
    assert names == TOOLS
    assert rows["rows"] == [{"name": "Ada"}]
    assert refused.startswith("[permission_denied]")


def test_stdio_without_a_token_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AGENTDATA_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "agentdata", "mcp"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0 and "AGENTDATA_TOKEN" in done.stderr


def test_export_truncate_cuts_at_the_tokens_max_rows(
    mcp_srv: ServerProcess, setup: dict[str, str]
) -> None:
    """A capped token's export of a bigger result fails the job unless it asks for
    truncation; with `truncate`, the file holds max_rows rows and the result says so."""
    token = setup["capped"]  # max_rows=2
    sql = "SELECT id FROM demo.orders ORDER BY id LIMIT 10"

    def finished(job_id: str) -> dict[str, Any]:
        async def wait(s: ClientSession) -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = data(await s.call_tool("job_status", {"job_id": job_id}))
                if status["state"] in ("succeeded", "failed", "cancelled"):
                    return status
                await anyio.sleep(0.1)
            raise AssertionError("export did not finish")

        return run(mcp_srv, token, wait)

    refused = finished(data(call(mcp_srv, token, "export", {"sql": sql}))["job_id"])
    assert refused["state"] == "failed"
    assert "resource_exhausted" in str(refused["error"])
    cut = finished(
        data(call(mcp_srv, token, "export", {"sql": sql, "truncate": True, "format": "csv"}))[
            "job_id"
        ]
    )
    assert cut["state"] == "succeeded", cut["error"]
    assert cut["artefact"]["rows"] == 2
    with mcp_srv.http(token) as http:
        content = http.get(cut["artefact"]["download_path"]).text
    assert content.split() == ['"id"', "1", "2"]
