"""Snowflake syncs in embedded mode: `agentdata serve` without Redis runs them on its
in-process runner, with the same retry policy and its own scheduler.

A real server process, the `fakesnow` emulator in server mode with the real connector,
httpx for REST and pyarrow.flight for reads; the CLI as a subprocess. The spec file
(`AGENTDATA_SYNCS_FILE`) is loaded at start.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.fakesnow_server import FakesnowServer
from tests.support.server import ServerProcess, restart_server, start_server
from tests.sync.correctness_cases import *  # noqa: F403 - the shared cases run here too
from tests.sync.correctness_cases import SYNC_BATCH_ROWS
from tests.sync.support import (
    cli,
    create_spec,
    job,
    rows,
    run_sync,
    source_of,
    source_rows,
    start_run,
    wait_for,
)
from tests.tasks.support import wait_until

UTC = dt.UTC
SLOW_ROWS = 200_000


@pytest.fixture(scope="module")
def snow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakesnowServer]:
    server = FakesnowServer(data_dir=tmp_path_factory.mktemp("sync-embedded-snow"))
    yield server
    server.close()


def _seed(snow: FakesnowServer) -> None:
    snow.start()
    snow.execute(
        "create table PRODUCTS (ID NUMBER(38,0), NAME VARCHAR, PRICE NUMBER(10,2),"
        " SEEN TIMESTAMP_LTZ, DOC VARIANT)",
        "insert into PRODUCTS select 1, 'lamp', 19.99, '2024-03-01 10:00:00 +01:00'::timestamp_ltz,"
        ' parse_json(\'{"color": "red"}\')',
        "insert into PRODUCTS select 2, 'désk ✓', 249.00, null, parse_json('[1, 2]')",
        "create table EVENTS (ID NUMBER(38,0), KIND VARCHAR, HAPPENED_AT TIMESTAMP_NTZ)",
        """insert into EVENTS select seq8(), 'open',
           dateadd(second, seq8(), '2024-01-01'::timestamp_ntz)
           from table(generator(rowcount => 100))""",
        f"""create table SLOW as select seq8() as ID, 'row ' || seq8() as S
            from table(generator(rowcount => {SLOW_ROWS}))""",
        "create table TICK as select seq8() as ID from table(generator(rowcount => 3))",
    )


@pytest.fixture(scope="module")
def server(
    snow: FakesnowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sync-embedded")
    syncs_file = root / "syncs.yaml"
    syncs_file.write_text(
        "syncs:\n"
        "  - name: products\n"
        f"    source: {source_of(snow, 'PRODUCTS')}\n"
        "    target: shop.products\n"
        "    primary_key: [ID]\n"
    )
    failures: list[BaseException] = []

    def seed() -> None:
        try:
            _seed(snow)
        except BaseException as e:
            failures.append(e)

    seeding = threading.Thread(target=seed, daemon=True)
    seeding.start()  # the emulator and the server start side by side
    srv = start_server(
        root / "data",
        env={
            **snow.env(),
            "AGENTDATA_SYNCS_FILE": str(syncs_file),
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            "AGENTDATA_SYNC_RETRY_BACKOFF_S": "2",
            "AGENTDATA_SYNC_RETRY_BACKOFF_MAX_S": "8",
            "AGENTDATA_SYNC_MAX_RETRIES": "10",
            "AGENTDATA_SYNC_SCHEDULE_EVERY_S": "0.5",
            "AGENTDATA_SYNC_MAX_ROWS_PER_S": "100000",
            "AGENTDATA_SYNC_BATCH_ROWS": str(SYNC_BATCH_ROWS),
        },
    )
    try:
        seeding.join(180)
        if failures or seeding.is_alive():
            raise RuntimeError(f"seeding the emulator failed: {failures}\n{snow.log_tail()}")
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[Any]:
    with server.http() as client:
        yield client


def test_spec_file_is_loaded_at_start_and_a_full_sync_equals_the_source(
    server: ServerProcess, http: Any
) -> None:
    listed = http.get("/api/v1/syncs").json()["items"]
    record = next(r for r in listed if r["spec"]["name"] == "products")
    assert record["origin"] == "file" and record["spec"]["target"] == "shop.products"

    done = run_sync(http, "products")
    assert done["result"]["runner"] == "embedded" and done["attempts"] == 1
    types = {r["column_name"]: r["column_type"] for r in rows(server, "DESCRIBE shop.products")}
    assert types == {
        "ID": "DECIMAL(38,0)",
        "NAME": "VARCHAR",
        "PRICE": "DECIMAL(10,2)",
        "SEEN": "TIMESTAMP WITH TIME ZONE",
        "DOC": "JSON",
    }
    got = rows(server, "SELECT * FROM shop.products ORDER BY ID")
    assert [(r["ID"], r["NAME"], r["PRICE"]) for r in got] == [
        (Decimal(1), "lamp", Decimal("19.99")),
        (Decimal(2), "désk ✓", Decimal("249.00")),
    ]
    assert got[0]["SEEN"] == dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC)  # the instant
    assert got[1]["SEEN"] is None
    assert [json.loads(r["DOC"]) for r in got] == [{"color": "red"}, [1, 2]]


def test_a_select_source_and_an_empty_result(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    create_spec(
        http,
        name="expensive",
        source="select ID, upper(NAME) as NAME from PRODUCTS where PRICE > 100",
        target="shop.expensive",
    )
    assert run_sync(http, "expensive")["result"]["rows"] == 1
    assert rows(server, "SELECT * FROM shop.expensive") == [{"ID": Decimal(2), "NAME": "DÉSK ✓"}]
    create_spec(http, name="empty", source="select ID from TICK where ID < 0", target="shop.empty")
    assert run_sync(http, "empty")["result"]["rows"] == 0
    assert rows(server, "DESCRIBE shop.empty")[0]["column_type"] == "DECIMAL(38,0)"
    assert rows(server, "SELECT count(*) AS n FROM shop.empty") == [{"n": 0}]


def test_incremental_merges_and_reconciles(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    create_spec(
        http,
        name="events",
        source=source_of(snow, "EVENTS"),
        target="log.events",
        mode="incremental",
        cursor="happened_at",
        lookback=5,  # seconds
        primary_key=["ID"],
        deletes="reconcile",
    )
    run_sync(http, "events")
    snow.execute(
        "update EVENTS set KIND = 'closed', HAPPENED_AT = '2024-01-02' where ID = 1",
        "insert into EVENTS values (100, 'open', '2024-01-02')",
        "delete from EVENTS where ID = 2",
    )
    second = run_sync(http, "events")
    assert second["result"]["plan"]["load"] == "upsert"
    assert second["result"]["rows_loaded"] == 8  # 6 re-read in the lookback, 2 changed
    assert second["result"]["deleted_rows"] == 1
    table = rows(server, "SELECT * FROM log.events ORDER BY ID")
    assert table == source_rows(snow, "select * from EVENTS order by ID")
    again = run_sync(http, "events")  # the same window: nothing changes
    assert again["result"]["rows_loaded"] == 2
    assert rows(server, "SELECT * FROM log.events ORDER BY ID") == table


def test_missing_table_fails_once(snow: FakesnowServer, http: Any) -> None:
    create_spec(http, name="nope", source=source_of(snow, "NOPE"), target="x.nope")
    failed = wait_for(http, start_run(http, "nope"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["step"] == "extract" and "NOPE" in failed["error"]["message"]


def test_emulator_outage_is_retried_by_the_runner(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    create_spec(http, name="tick", source=source_of(snow, "TICK"), target="x.tick")
    snow.stop()
    try:
        job_id = start_run(http, "tick")
        retrying = wait_for(http, job_id, states=("retrying",), timeout=60)
        assert retrying["error"]["step"] == "extract"
        assert retrying["error"]["code"] == "unavailable"
    finally:
        snow.start()
    done = wait_for(http, job_id, timeout=120)
    assert done["state"] == "succeeded" and done["attempts"] >= 2
    assert rows(server, "SELECT count(*) AS n FROM x.tick") == [{"n": 3}]


def test_cancelling_a_running_sync_writes_nothing(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    create_spec(http, name="slow", source=source_of(snow, "SLOW"), target="x.slow")
    server.execute(server.admin_token, "CREATE SCHEMA IF NOT EXISTS x")
    server.execute(server.admin_token, "CREATE TABLE x.slow AS SELECT 42 AS ID, 'old' AS S")
    job_id = start_run(http, "slow")  # 200k rows at 100k rows/s: two seconds of loading
    wait_until(lambda: job(http, job_id)["progress_rows"] > 0, timeout=60, what="loading")
    assert http.delete(f"/api/v1/jobs/{job_id}").status_code == 200
    done = wait_for(http, job_id)
    assert done["state"] == "cancelled"
    assert rows(server, "SELECT * FROM x.slow") == [{"ID": 42, "S": "old"}]


def test_scheduled_sync_fires_on_its_interval(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    create_spec(
        http, name="every-second", source=source_of(snow, "TICK"), target="x.ticks", schedule="1s"
    )
    try:
        wait_until(
            lambda: (
                (r := http.get("/api/v1/syncs/every-second").json())["runs"] >= 2
                and r["last_job"]["state"] == "succeeded"
            ),
            timeout=60,
            what="two scheduled runs",
        )
    finally:
        assert http.patch("/api/v1/syncs/every-second", json={"enabled": False}).status_code == 200
    jobs = http.get("/api/v1/jobs", params={"kind": "sync", "limit": 200}).json()["items"]
    mine = [j for j in jobs if j["params"]["name"] == "every-second"]
    assert len(mine) >= 2 and {j["params"]["trigger"] for j in mine} == {"schedule"}
    assert rows(server, "SELECT count(*) AS n FROM x.ticks") == [{"n": 3}]


def test_rest_api_validates_and_is_admin_only(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    base = {"name": "api-spec", "source": source_of(snow, "TICK"), "target": "x.api"}
    assert http.post("/api/v1/syncs", json=base).status_code == 201
    r = http.post("/api/v1/syncs", json=base)
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    r = http.post("/api/v1/syncs", json={**base, "name": "bad", "mode": "incremental"})
    assert r.status_code == 422 and "cursor" in r.text
    r = http.post("/api/v1/syncs", json={**base, "name": "bad", "target": "a.b.c"})
    assert r.status_code == 422
    r = http.patch("/api/v1/syncs/api-spec", json={"mode": "incremental"})
    assert r.status_code == 400 and "cursor" in r.json()["detail"]
    r = http.patch("/api/v1/syncs/api-spec", json={"schedule": "*/5 * * * *"})
    assert r.status_code == 200 and r.json()["spec"]["schedule"] == "*/5 * * * *"
    assert http.get("/api/v1/syncs/api-spec").json()["spec"]["schedule"] == "*/5 * * * *"
    assert http.post("/api/v1/syncs/none/run").status_code == 404

    writer = str(server.create_token("writer", name="not-admin")["token"])
    with server.http(writer) as other:
        assert other.get("/api/v1/syncs").status_code == 403
        assert other.post("/api/v1/syncs", json={**base, "name": "x2"}).status_code == 403
        assert other.post("/api/v1/syncs/api-spec/run").status_code == 403

    assert http.delete("/api/v1/syncs/api-spec").status_code == 204
    assert http.get("/api/v1/syncs/api-spec").status_code == 404


def test_cli_add_ls_run_status(snow: FakesnowServer, server: ServerProcess, tmp_path: Path) -> None:
    added = cli(
        server,
        "add",
        "cli-events",
        "--source",
        source_of(snow, "EVENTS"),
        "--target",
        "cli.events",
        "--mode",
        "incremental",
        "--cursor",
        "HAPPENED_AT",
        "--lookback",
        "1 minute",
        "--primary-key",
        "ID",
    )
    assert added.returncode == 0, added.stderr
    assert "created sync cli-events" in added.stdout

    listed = cli(server, "ls")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("cli-events"))
    assert "cli.events" in line and "incremental" in line

    ran = cli(server, "run", "cli-events")
    assert ran.returncode == 0, ran.stderr
    assert "rows loaded into cli.events" in ran.stdout
    assert "job " in ran.stderr  # the progress bar and the queued job go to stderr

    status = cli(server, "status", "cli-events", "--json")
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["runs"] == 1 and record["last_job"]["state"] == "succeeded"
    assert record["spec"]["lookback"] == "1 minute" and record["spec"]["primary_key"] == ["ID"]

    missing = cli(server, "run", "no-such-sync")
    assert missing.returncode != 0 and "not_found" in missing.stderr


def test_an_upload_applies_only_with_its_end_marker(server: ServerProcess) -> None:
    """The loader's protocol with DoPut: `end_marker` uploads count only when they end
    with {"end": <rows>}; a writer closed early (what a dying worker's looks like to
    the server) or a wrong count writes nothing."""
    server.execute(server.admin_token, "CREATE SCHEMA IF NOT EXISTS x")
    server.execute(server.admin_token, "CREATE TABLE x.marked AS SELECT 1 AS ID")
    command = {"table": "x.marked", "mode": "replace", "end_marker": True}
    descriptor = fl.FlightDescriptor.for_command(json.dumps(command).encode())
    batch = pa.record_batch([pa.array(range(1000), pa.int64())], names=["ID"])

    def upload(end: int | None) -> None:
        client = server.flight()
        writer, results = client.do_put(
            descriptor, batch.schema, server.options(server.admin_token)
        )
        writer.write_batch(batch)
        writer.write_batch(batch)
        if end is not None:
            writer.write_metadata(pa.py_buffer(json.dumps({"end": end}).encode()))
        writer.done_writing()
        results.read()
        writer.close()

    for end in (None, 1000):
        with pytest.raises(fl.FlightCancelledError, match="nothing was written"):
            upload(end)
        assert rows(server, "SELECT count(*) AS n FROM x.marked") == [{"n": 1}]
    upload(2000)
    assert rows(server, "SELECT count(*) AS n FROM x.marked") == [{"n": 2000}]


def test_a_sync_interrupted_by_a_server_restart_is_rerun(
    snow: FakesnowServer, server: ServerProcess, tmp_path: Path
) -> None:
    """SIGKILL an embedded server mid-sync and start it again: the run goes back on the
    queue under the sync retry policy and ends with the table equal to the source; the
    job's history shows the interrupted attempt. (A server of its own, so the module's
    stays up; `server` is asked for because it seeds the emulator.)"""
    srv = start_server(
        tmp_path / "data",
        env={
            **snow.env(),
            "AGENTDATA_DEMO": "false",
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            "AGENTDATA_SYNC_RETRY_BACKOFF_S": "1",
            "AGENTDATA_SYNC_MAX_ROWS_PER_S": "100000",  # two seconds of loading
        },
    )
    try:
        with srv.http() as http:
            create_spec(http, name="slow-restart", source=source_of(snow, "SLOW"), target="x.slow")
            job_id = start_run(http, "slow-restart")
            wait_until(lambda: job(http, job_id)["progress_rows"] > 0, timeout=60, what="loading")
        srv = restart_server(srv)
        with srv.http() as http:
            done = wait_for(http, job_id, timeout=120)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2
        first, second = done["attempt_history"]
        assert first["outcome"] == "retrying" and first["error"]["step"] == "runner"
        assert second["outcome"] == "succeeded"
        assert rows(srv, "SELECT count(*) AS n, count(DISTINCT ID) AS d FROM x.slow") == [
            {"n": SLOW_ROWS, "d": SLOW_ROWS}
        ]
    finally:
        srv.stop()


def test_snowflake_comments_become_descriptions_an_admin_can_override(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    """A table's comment reaches agents as its description (REST, MCP and Flight SQL
    read the same store); an admin's own words are never overwritten by a later sync.
    (Column comments take the same path, information_schema.columns; the emulator's
    server mode cannot set one over the wire, so DoPut's `descriptions` option, which
    carries them, is tested in tests/dataplane/test_put.py.)"""
    snow.execute(
        "create table COMMENTED (ID NUMBER(38,0), NAME VARCHAR) comment = 'one row per shop'",
        "insert into COMMENTED select 1, 'north'",
    )
    create_spec(
        http, name="commented", source=source_of(snow, "COMMENTED"), target="shop.commented"
    )
    run_sync(http, "commented")

    def described() -> dict[str, Any]:
        tables = http.get("/api/v1/tables").json()
        return next(t for t in tables if t["schema"] == "shop" and t["name"] == "commented")

    assert described()["description"] == "one row per shop"
    r = http.patch("/api/v1/tables/shop/commented", json={"description": "curated by ops"})
    assert r.status_code == 200, r.text
    run_sync(http, "commented")
    assert described()["description"] == "curated by ops"
