"""Snowflake syncs on Celery: a real Redis (DB 9, this module's own), a real worker
process and beat (`python -m agentdata worker|beat`), the `fakesnow` emulator in server
mode driven by the real connector, and a real `agentdata serve`.

One emulator, server, worker and beat serve the module. The worker loads at most
250k rows/s (`sync_max_rows_per_s`), so a run over the large tables lasts long enough
to stop the emulator, or kill the worker, in the middle of it; retries back off by a
few seconds, locks expire in 3 s and Redis hands a dead worker's task on after 10 s.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.flight as fl
import pytest

from agentdata.timestamps import seconds
from tests.support.fakesnow_server import FakesnowServer
from tests.support.redis_db import scratch_database
from tests.support.server import ServerProcess, start_server
from tests.sync.correctness_cases import *  # noqa: F403 - the shared cases run here too
from tests.sync.correctness_cases import SYNC_BATCH_ROWS
from tests.sync.support import (
    create_spec,
    job,
    kill_9,
    rows,
    run_sync,
    source_of,
    source_rows,
    spawn,
    start_run,
    stop,
    wait_for,
    worker_env,
)
from tests.sync.test_extract import ALL_TYPES_DDL, ALL_TYPES_ROWS, EXPECTED
from tests.tasks.support import wait_until

BIG_ROWS = 500_000
MID_ROWS = 200_000
MAX_ROWS_PER_S = 250_000
UTC = dt.UTC


@dataclass
class Stack:
    snow: FakesnowServer
    server: ServerProcess
    root: Path
    env: dict[str, str]
    worker: Any
    beat: Any
    logs: list[Path] = field(default_factory=list)

    def spawn_worker(self) -> None:
        log = self.root / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        self.worker = spawn(
            ["worker", "--pool", "threads", "--concurrency", "2", "--hostname", "sync-test@%h"],
            self.env,
            log,
        )

    def wait_for_worker(self) -> None:
        with self.server.http() as http:
            wait_until(
                lambda: (
                    self.worker.poll() is None
                    and http.get("/api/v1/tasks/workers").json()["workers"]
                ),
                timeout=120,
                what=f"the worker to answer ({self.logs[-1].read_text()[-2000:]})",
            )

    def worker_log(self) -> str:
        """The sync lines of the workers' logs, for failure messages."""
        lines = [
            line
            for p in self.logs
            for line in p.read_text(errors="replace").splitlines()
            if "worker.sync" in line or "agentdata.sync[" in line
        ]
        return "\n".join(lines[-40:])


def _seed(snow: FakesnowServer) -> None:
    snow.start()
    snow.execute(
        ALL_TYPES_DDL,
        *ALL_TYPES_ROWS,
        "create table ORDERS (ID NUMBER(38,0), STATUS VARCHAR, AMOUNT NUMBER(10,2),"
        " UPDATED_AT TIMESTAMP_NTZ)",
        """insert into ORDERS select seq8(), 'new', (seq8() % 1000) / 10,
           dateadd(minute, seq8(), '2024-01-01 00:00:00'::timestamp_ntz)
           from table(generator(rowcount => 1000))""",
        f"""create table BIG as select seq8() as ID, (seq8() % 1000)::NUMBER(9,0) as V,
            'row ' || seq8() as S from table(generator(rowcount => {BIG_ROWS}))""",
        f"""create table MID as select seq8() as ID, (seq8() % 7)::NUMBER(9,0) as V
            from table(generator(rowcount => {MID_ROWS}))""",
        "create table SMALL as select seq8() as ID from table(generator(rowcount => 10))",
    )


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database of this module's own (tests/support/redis_db.py)."""
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("sync-celery")
    snow = FakesnowServer(data_dir=root / "snow")  # its port is chosen now
    # The emulator, the server, the worker and beat start side by side (each takes seconds).
    failures: list[BaseException] = []
    seeding = threading.Thread(target=lambda: _catch(failures, _seed, snow), daemon=True)
    seeding.start()
    server = None
    stack = None
    try:
        server = start_server(root / "data", env={"AGENTDATA_REDIS_URL": redis_url})
        settings = {
            "AGENTDATA_REDIS_URL": redis_url,
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            # Retries every 0-2, 0-4, then 0-8 s, up to 10 times: however the jitter
            # falls, they outlast the emulator's restart.
            "AGENTDATA_SYNC_RETRY_BACKOFF_S": "2",
            "AGENTDATA_SYNC_RETRY_BACKOFF_MAX_S": "8",
            "AGENTDATA_SYNC_MAX_RETRIES": "10",
            "AGENTDATA_SYNC_LOCK_TTL_S": "3",
            "AGENTDATA_BROKER_VISIBILITY_TIMEOUT_S": "10",
            "AGENTDATA_SYNC_SCHEDULE_EVERY_S": "1",
            "AGENTDATA_SYNC_MAX_ROWS_PER_S": str(MAX_ROWS_PER_S),
            "AGENTDATA_SYNC_BATCH_ROWS": str(SYNC_BATCH_ROWS),
            "AGENTDATA_MAINTENANCE_JOBS_EVERY_S": "0",
            "AGENTDATA_MAINTENANCE_EXPORTS_EVERY_S": "0",
            "AGENTDATA_MAINTENANCE_STALE_EVERY_S": "0",
        }
        env = worker_env(server, snow, root / "worker", **settings)
        stack = Stack(snow, server, root, env, worker=None, beat=None)
        stack.beat = spawn(
            ["beat", "--schedule-file", str(root / "beat-schedule")], env, root / "beat.log"
        )
        stack.spawn_worker()
        seeding.join(180)
        if failures or seeding.is_alive():
            raise RuntimeError(f"seeding the emulator failed: {failures}\n{snow.log_tail()}")
        stack.wait_for_worker()
        yield stack
    finally:
        if stack is not None:
            for proc in (stack.beat, stack.worker):
                if proc is not None:
                    stop(proc)
        if server is not None:
            server.stop()
        seeding.join(60)
        snow.close()


def _catch(failures: list[BaseException], call: Any, *args: Any) -> None:
    try:
        call(*args)
    except BaseException as e:
        failures.append(e)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[Any]:
    with stack.server.http() as client:
        yield client


@pytest.fixture(scope="module")
def snow(stack: Stack) -> FakesnowServer:
    """The module's emulator (for the shared cases of correctness_cases.py)."""
    return stack.snow


@pytest.fixture(scope="module")
def server(stack: Stack) -> ServerProcess:
    """The module's server (for the shared cases of correctness_cases.py)."""
    return stack.server


# -- full sync: every mapped type --------------------------------------------------------


def test_full_sync_of_every_mapped_type_equals_the_source(stack: Stack, http: Any) -> None:
    create_spec(
        http,
        name="all-types",
        source=source_of(stack.snow, "ALL_TYPES"),
        target="types.all_types",
        primary_key=["ID"],
    )
    done = run_sync(http, "all-types")
    result = done["result"]
    assert result["rows"] == result["rows_loaded"] == done["progress_rows"] == 3
    assert result["plan"]["mode"] == "full" and result["runner"] == "celery"
    assert done["attempts"] == 1

    described = rows(stack.server, "DESCRIBE types.all_types")
    assert [r["column_name"] for r in described] == list(EXPECTED)
    for r in described:  # column by column: the documented mapping (docs/sync.md)
        assert (
            r["column_type"].replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
            == (EXPECTED[r["column_name"]][0])
        ), r
    got = stack.server.query(stack.server.admin_token, "SELECT * FROM types.all_types ORDER BY ID")
    for name, (duckdb_type, _, values) in EXPECTED.items():
        column = got.column(name).to_pylist()
        if duckdb_type == "JSON":
            column = [None if v is None else json.loads(v) for v in column]
        elif duckdb_type == "TIMESTAMPTZ":
            column = [None if v is None else v.astimezone(UTC) for v in column]
        assert column == values, name

    # When and from which snapshot the table was synced: REST and ListFlights.
    listed = {f"{t['schema']}.{t['name']}": t for t in http.get("/api/v1/tables").json()}
    entry = listed["types.all_types"]
    assert entry["source_snapshot"] == result["snapshot"] and result["snapshot"]
    assert entry["last_synced"] is not None and entry["rows"] == 3
    client = stack.server.flight()
    infos = list(client.list_flights(options=stack.server.options(stack.server.admin_token)))
    meta = next(
        json.loads(i.app_metadata) for i in infos if i.descriptor.path == [b"types", b"all_types"]
    )
    assert meta["source_snapshot"] == result["snapshot"] and meta["last_synced"]


# -- incremental -------------------------------------------------------------------------


def _orders(stack: Stack) -> list[dict[str, Any]]:
    return rows(stack.server, "SELECT * FROM sales.orders ORDER BY ID")


def _source_orders(stack: Stack) -> list[dict[str, Any]]:
    return source_rows(stack.snow, "select * from ORDERS order by ID")


def test_incremental_merges_inserts_and_updates_and_reconciles_deletes(
    stack: Stack, http: Any
) -> None:
    create_spec(
        http,
        name="orders",
        source=source_of(stack.snow, "ORDERS"),
        target="sales.orders",
        mode="incremental",
        cursor="updated_at",
        lookback="10 minutes",
        primary_key=["id"],
        deletes="reconcile",
    )
    first = run_sync(http, "orders")
    assert first["result"]["plan"]["mode"] == "full"  # the table did not exist
    assert len(_orders(stack)) == 1000

    # After the first run: an update, an insert, a delete at the source.
    stack.snow.execute(
        "update ORDERS set STATUS = 'shipped', UPDATED_AT = '2024-02-01 00:00:00' where ID = 5",
        "insert into ORDERS values (5000, 'new', 12.5, '2024-02-01 00:00:00')",
        "delete from ORDERS where ID = 7",
    )
    second = run_sync(http, "orders")
    plan = second["result"]["plan"]
    assert (plan["mode"], plan["load"], plan["reconcile"]) == ("incremental", "upsert", True)
    assert plan["watermark"] == "2024-01-01T16:39:00"  # max(UPDATED_AT) of the first load
    # NULL cursors are re-read every run (null_cursor: include, the default with a key).
    assert plan["since"] == {
        "column": "UPDATED_AT",
        "value": "2024-01-01T16:29:00",
        "or_null": True,
    }
    assert second["result"]["null_cursor"] == {
        "column": "UPDATED_AT",
        "policy": "include",
        "rows": 0,
    }
    # The window: 11 rows at or after 16:29 (lookback re-reads 10), the updated and the new.
    assert second["result"]["rows_loaded"] == 13 and second["result"]["deleted_rows"] == 1
    table = _orders(stack)
    assert table == _source_orders(stack)
    by_id = {int(r["ID"]): r for r in table}
    assert by_id[5]["STATUS"] == "shipped" and 7 not in by_id
    assert by_id[5000]["AMOUNT"] == Decimal("12.50") and len(table) == 1000

    # The same window again (the two rows at the new maximum): re-read, merged, no change.
    third = run_sync(http, "orders")
    assert third["result"]["plan"]["since"]["value"] == "2024-01-31T23:50:00"
    assert third["result"]["rows_loaded"] == 2 and third["result"]["deleted_rows"] == 0
    assert _orders(stack) == table


# -- schema evolution ------------------------------------------------------------------


def test_schema_change_between_runs_added_widened_dropped_and_incompatible(
    stack: Stack, http: Any
) -> None:
    stack.snow.execute(
        "create table EVOLVE as select seq8()::NUMBER(38,0) as ID, seq8()::NUMBER(9,0) as QTY,"
        " 'gone ' || seq8() as GONE from table(generator(rowcount => 3))"
    )
    create_spec(
        http,
        name="evolve",
        source=source_of(stack.snow, "EVOLVE"),
        target="shop.evolve",
        mode="incremental",
        cursor="ID",
        primary_key=["ID"],
    )
    run_sync(http, "evolve")
    # The source drops GONE, widens QTY to 18 digits and adds NOTE.
    stack.snow.execute(
        "create or replace table EVOLVE as select seq8()::NUMBER(38,0) as ID,"
        " (seq8() * 1000000000000)::NUMBER(18,0) as QTY, 'note ' || seq8() as NOTE"
        " from table(generator(rowcount => 5))"
    )
    second = run_sync(http, "evolve")
    assert second["result"]["schema_changes"] == {
        "added": ["NOTE"],
        "widened": ["QTY"],
        "missing": ["GONE"],
    }
    assert second["result"]["dropped_columns"] == ["GONE"]
    assert "no longer has column(s) GONE" in second["result"]["notes"][0]
    types = {r["column_name"]: r["column_type"] for r in rows(stack.server, "DESCRIBE shop.evolve")}
    assert types == {"ID": "DECIMAL(38,0)", "QTY": "BIGINT", "GONE": "VARCHAR", "NOTE": "VARCHAR"}
    got = rows(stack.server, "SELECT ID, QTY, GONE, NOTE FROM shop.evolve ORDER BY ID")
    # The run read IDs >= 2 (the watermark): those are merged, with GONE now NULL; the
    # rows it did not read keep their values (and have no NOTE).
    assert [(int(r["ID"]), r["QTY"], r["GONE"], r["NOTE"]) for r in got] == [
        (0, 0, "gone 0", None),
        (1, 1, "gone 1", None),
        (2, 2 * 10**12, None, "note 2"),
        (3, 3 * 10**12, None, "note 3"),
        (4, 4 * 10**12, None, "note 4"),
    ]

    # An incompatible change (QTY becomes text) fails, naming the column; nothing written.
    stack.snow.execute(
        "create or replace table EVOLVE as select seq8()::NUMBER(38,0) as ID,"
        " 'x' || seq8() as QTY from table(generator(rowcount => 9))"
    )
    failed = wait_for(http, start_run(http, "evolve"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["step"] == "plan" and failed["error"]["code"] == "invalid_argument"
    assert (
        "incompatible schema change on shop.evolve.QTY: BIGINT -> VARCHAR"
        in (failed["error"]["message"])
    )
    assert rows(stack.server, "SELECT count(*) AS n FROM shop.evolve") == [{"n": 5}]
    # ...unless the spec allows a resync: then the table is reloaded as the source is.
    r = http.patch("/api/v1/syncs/evolve", json={"on_incompatible": "resync"})
    assert r.status_code == 200, r.text
    resynced = run_sync(http, "evolve")
    assert "QTY" in resynced["result"]["plan"]["resync_reason"]
    types = {r["column_name"]: r["column_type"] for r in rows(stack.server, "DESCRIBE shop.evolve")}
    assert types == {"ID": "DECIMAL(38,0)", "QTY": "VARCHAR"}
    assert rows(stack.server, "SELECT count(*) AS n FROM shop.evolve") == [{"n": 9}]


# -- failures ------------------------------------------------------------------------------


def test_missing_table_fails_once_with_a_clear_error(stack: Stack, http: Any) -> None:
    create_spec(
        http, name="missing", source=source_of(stack.snow, "NO_SUCH_TABLE"), target="x.missing"
    )
    failed = wait_for(http, start_run(http, "missing"))
    assert failed["state"] == "failed"
    error = failed["error"]
    assert (error["step"], error["code"]) == ("extract", "invalid_argument")
    assert "NO_SUCH_TABLE" in error["message"] and "x.missing" in error["message"]
    assert failed["id"] in error["message"]  # the job, for the logs
    # The task itself ended failed (a retry would leave it RETRY): no attempt will follow.
    deadline = time.monotonic() + 30
    while (task := http.get(f"/api/v1/tasks/status/{failed['task_id']}").json())["state"] in (
        "PENDING",
        "STARTED",
    ):
        assert time.monotonic() < deadline, task
        time.sleep(0.05)
    assert task["state"] == "FAILURE", task
    assert job(http, failed["id"])["attempts"] == 1


def test_emulator_outage_mid_run_is_retried_then_succeeds(stack: Stack, http: Any) -> None:
    """Stop the emulator once a run started (its queries come next), start it again: the
    run is retried with backoff and ends with the table equal to the source."""
    create_spec(
        http,
        name="mid",
        source=source_of(stack.snow, "MID"),
        target="shop.mid",
        mode="incremental",
        cursor="ID",
        lookback=10**9,  # every run re-reads (and merges) every row: a long load
        primary_key=["ID"],
        deletes="reconcile",
    )
    run_sync(http, "mid")
    stack.snow.execute("delete from MID where ID in (3, 4)")
    job_id = start_run(http, "mid")
    wait_until(lambda: job(http, job_id)["state"] == "running", timeout=60, what="the run")
    stack.snow.stop()  # the run's next request to Snowflake fails
    try:
        wait_until(
            lambda: (j := job(http, job_id))["state"] == "retrying" or j["attempts"] > 1,
            timeout=60,
            what="a failed attempt",
        )
    finally:
        stack.snow.start()
    done = wait_for(http, job_id, timeout=90)
    assert done["state"] == "succeeded", f"{done['error']}\n{stack.worker_log()}"
    assert done["attempts"] >= 2
    # The last error stays on the job: the step and what happened.
    assert done["error"]["step"] == "extract" and done["error"]["code"] == "unavailable"
    assert "retrying" in done["error"]["message"]
    assert rows(stack.server, "SELECT count(*) AS n, count(DISTINCT ID) AS d FROM shop.mid") == [
        {"n": MID_ROWS - 2, "d": MID_ROWS - 2}
    ]
    assert done["result"]["deleted_rows"] == 2


# -- one run at a time ---------------------------------------------------------------------


def test_a_second_run_while_one_is_active_is_refused(stack: Stack, http: Any) -> None:
    create_spec(http, name="twice", source=source_of(stack.snow, "MID"), target="shop.twice")
    job_id = start_run(http, "twice")
    r = http.post("/api/v1/syncs/twice/run")
    assert r.status_code == 409 and job_id in r.json()["detail"]
    assert wait_for(http, job_id)["state"] == "succeeded"


# -- schedules -----------------------------------------------------------------------------


def test_scheduled_sync_fires_on_its_interval(stack: Stack, http: Any) -> None:
    create_spec(
        http,
        name="scheduled",
        source=source_of(stack.snow, "SMALL"),
        target="shop.small",
        schedule=2,
    )
    try:
        record = wait_until(
            lambda: (
                (r := http.get("/api/v1/syncs/scheduled").json())["runs"] >= 2
                and r["last_job"]
                and r["last_job"]["state"] == "succeeded"
                and r
            ),
            timeout=60,
            what="two scheduled runs",
        )
    finally:
        http.patch("/api/v1/syncs/scheduled", json={"enabled": False})
    jobs = http.get("/api/v1/jobs", params={"kind": "sync", "limit": 100}).json()["items"]
    mine = sorted(
        (j for j in jobs if j["params"]["name"] == "scheduled"), key=lambda j: j["created_at"]
    )
    assert len(mine) >= 2 and all(j["params"]["trigger"] == "schedule" for j in mine)
    assert (
        seconds(mine[1]["created_at"]) - seconds(mine[0]["created_at"]) >= 1.9
    )  # the interval, not sooner
    assert rows(stack.server, "SELECT count(*) AS n FROM shop.small") == [{"n": 10}]
    assert record["spec"]["schedule"] == 2


# -- kill -9 of the worker -----------------------------------------------------------------


@dataclass
class _Watcher:
    """Reads the table continuously: every snapshot a reader saw (count, sum)."""

    server: ServerProcess
    seen: set[tuple[int, int]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = self.server.flight()
        options = self.server.options(self.server.admin_token)
        sql = b"SELECT count(*) AS n, sum(V)::BIGINT AS v FROM big.t"
        while not self.stop.is_set():
            try:
                info = client.get_flight_info(fl.FlightDescriptor.for_command(sql), options)
                row = client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()[0]
                self.seen.add((row["n"], row["v"]))
            except Exception as e:
                self.errors.append(repr(e))
            time.sleep(0.05)


def test_kill_9_of_the_worker_mid_sync_then_recovery(stack: Stack, http: Any) -> None:
    create_spec(
        http,
        name="big",
        source=source_of(stack.snow, "BIG"),
        target="big.t",
        primary_key=["ID"],
    )
    run_sync(http, "big", timeout=120)
    before = rows(stack.server, "SELECT count(*) AS n, sum(V)::BIGINT AS v FROM big.t")[0]
    assert before["n"] == BIG_ROWS
    stack.snow.execute(
        "update BIG set V = V + 1 where ID < 1000",
        f"insert into BIG select {BIG_ROWS} + seq8(), 1, 'new' from table(generator(rowcount => 100))",
    )
    expected = source_rows(stack.snow, "select count(*) as N, sum(V) as V from BIG")[0]
    after = (int(expected["N"]), int(expected["V"]))
    watcher = _Watcher(stack.server)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        job_id = start_run(http, "big")
        loading = wait_until(
            lambda: (j := job(http, job_id))["progress_rows"] >= 100_000 and j,
            timeout=90,
            what="the run to be part-way through its load",
        )
        kill_9(stack.worker)
        # Progress was on the job while it ran: rows and bytes loaded so far.
        assert (
            loading["state"] == "running" and loading["progress_bytes"] > 0
        )  # the worker and its upload die; nothing acknowledged
        assert job(http, job_id)["state"] == "running"
        stack.spawn_worker()  # Redis hands the unacknowledged task to the new worker
        done = wait_for(http, job_id, timeout=120)
    finally:
        watcher.stop.set()
        thread.join(10)
    assert done["state"] == "succeeded", f"{done['error']}\n{stack.worker_log()}"
    assert done["attempts"] == 2  # the killed delivery, then the re-run
    table = rows(
        stack.server,
        "SELECT count(*) AS n, count(DISTINCT ID) AS d, sum(V)::BIGINT AS v FROM big.t",
    )[0]
    assert (table["n"], table["v"]) == after and table["d"] == table["n"]  # no duplicates
    # No reader ever saw a partial table: only the state before and the state after.
    assert watcher.seen and watcher.seen <= {(before["n"], before["v"]), after}, watcher.seen
    assert not watcher.errors, watcher.errors[:3]
