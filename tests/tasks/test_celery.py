"""The same tasks on Celery: a real redis-server, a real worker process, real beat.

One server, one worker (threads pool, concurrency 2) and one beat for the module.
Redis DB 7 is this module's own (flushed at the start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import redis

from agentdata.tasks import DEFAULT_QUEUE, TASK_KINDS
from agentdata.timestamps import seconds
from tests.support.redis_db import scratch_database
from tests.support.server import REPO, ServerProcess, free_port, restart_server, start_server
from tests.tasks.support import (
    TRICKY_QUERY,
    create_tricky_table,
    download,
    json_row_matches,
    normalise_tz,
    read_export,
    run_export,
    start_export,
    wait_job,
    wait_until,
)
from tests.tasks.test_exports_embedded import SLOW_SQL

EXPORT_AGE_S = 8.0
WORKER_NAME = "tasks-test@%h"


@dataclass
class Stack:
    server: ServerProcess
    worker: subprocess.Popen[bytes]
    beat: subprocess.Popen[bytes]
    worker_log: Path
    beat_log: Path


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentdata", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database of this module's own (tests/support/redis_db.py)."""
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("celery")
    maintenance = {
        "AGENTDATA_MAINTENANCE_EXPORT_AGE_S": str(EXPORT_AGE_S),
        "AGENTDATA_MAINTENANCE_EXPORTS_EVERY_S": "2",
        "AGENTDATA_MAINTENANCE_JOBS_EVERY_S": "0",
        "AGENTDATA_MAINTENANCE_STALE_EVERY_S": "0",
        "AGENTDATA_MAINTENANCE_RETRY_BACKOFF_S": "1",
        # Retries 0-2 s, 0-4 s, ... apart, five of them: however the jitter falls, they
        # outlast a server restart (the test kills the server mid-export).
        "AGENTDATA_EXPORT_RETRY_BACKOFF_S": "2",
        "AGENTDATA_EXPORT_MAX_RETRIES": "5",
    }
    server = start_server(
        root / "data",
        env={
            "AGENTDATA_REDIS_URL": redis_url,
            "AGENTDATA_QUERY_TIMEOUT_S": "120",
            **maintenance,
        },
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")},
        "AGENTDATA_REDIS_URL": redis_url,
        "AGENTDATA_SERVER_URL": server.http_url,
        "AGENTDATA_FLIGHT_URL": server.flight_url,
        "AGENTDATA_WORKER_TOKEN": server.admin_token,
        "AGENTDATA_DATA_DIR": str(root / "worker"),
        "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
        "PYTHONUNBUFFERED": "1",
        **maintenance,
    }
    worker_log, beat_log = root / "worker.log", root / "beat.log"
    worker = _spawn(
        ["worker", "--pool", "threads", "--concurrency", "2", "--hostname", WORKER_NAME],
        env,
        worker_log,
    )
    beat = _spawn(["beat", "--schedule-file", str(root / "beat-schedule")], env, beat_log)
    stack = Stack(server, worker, beat, worker_log, beat_log)
    try:
        with server.http() as http:
            wait_until(
                lambda: (
                    worker.poll() is None and http.get("/api/v1/tasks/workers").json()["workers"]
                ),
                timeout=90,
                what=f"the worker to answer (log: {worker_log.read_text()[-2000:]})",
            )
        yield stack
    finally:
        _stop(beat)
        _stop(worker)
        stack.server.stop()  # the process running now: a test may have restarted it


@pytest.fixture(scope="module")
def reader(stack: Stack) -> str:
    return str(stack.server.create_token("reader", name="celery-reader")["token"])


@pytest.fixture(scope="module")
def expected(stack: Stack, reader: str) -> pa.Table:
    writer = str(stack.server.create_token("writer", name="celery-writer")["token"])
    create_tricky_table(stack.server, writer)
    return stack.server.query(reader, TRICKY_QUERY)


def test_the_worker_answers_monitoring_and_queues_come_from_redis(stack: Stack) -> None:
    with stack.server.http() as http:
        workers = http.get("/api/v1/tasks/workers").json()
        queues = http.get("/api/v1/tasks/queues").json()
        ready = http.get("/readyz").json()
    assert workers["runner"] == "celery"
    (worker,) = workers["workers"]
    assert worker["name"].startswith("tasks-test@")
    assert worker["pid"] == stack.worker.pid
    assert worker["concurrency"] == 2 and "thread" in worker["pool"]
    names = {DEFAULT_QUEUE} | {k.queue for k in TASK_KINDS.values()}
    assert {"agentdata", "exports", "maintenance"} <= names
    assert set(worker["queues"]) == names
    assert queues["runner"] == "celery"
    assert {q["name"]: q["depth"] for q in queues["queues"]} == dict.fromkeys(names, 0)
    assert ready["checks"]["broker"] == "ok"


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [("csv", "gzip"), ("json", "zstd"), ("parquet", "snappy"), ("arrow", "lz4")],
)
def test_exports_run_on_the_worker_and_read_back_exactly(
    stack: Stack, reader: str, expected: pa.Table, fmt: str, compression: str
) -> None:
    with stack.server.http(reader) as http:
        job = run_export(http, TRICKY_QUERY, fmt, compression)
        data = download(http, job["result"]["artefact_id"])
    with stack.server.http() as admin:
        status = admin.get(f"/api/v1/tasks/status/{job['task_id']}").json()
    assert status["runner"] == "celery" and status["job"]["id"] == job["id"]
    assert status["state"] in ("SUCCESS", "STARTED")  # the result lands just after the event
    got = read_export(data, fmt, compression, expected.schema)
    if fmt in ("parquet", "arrow"):
        assert got.equals(expected) and got.schema == expected.schema
    elif fmt == "csv":
        want = normalise_tz(expected)
        for name in want.column_names:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    else:
        for row, want in zip(got, expected.to_pylist(), strict=True):
            json_row_matches(row, want, expected.schema)


def test_failure_on_the_worker_names_the_step(stack: Stack, reader: str) -> None:
    with stack.server.http(reader) as http:
        accepted = start_export(http, "SELECT CAST('x' || i AS INTEGER) FROM range(5) t(i)", "csv")
        job = wait_job(http, accepted["job_id"])
    assert job["state"] == "failed"
    assert (job["error"]["step"], job["error"]["code"]) == ("query", "invalid_argument")
    with stack.server.http() as admin:
        status = wait_until(
            lambda: (
                (s := admin.get(f"/api/v1/tasks/status/{accepted['task_id']}").json())["state"]
                == "FAILURE"
                and s
            ),
            what="Celery to record the failure",
        )
    assert status["error"]["type"] == "InvalidArgument"
    assert "Could not convert" in status["error"]["message"]


def test_cancel_stops_an_export_on_the_worker(stack: Stack, reader: str) -> None:
    with stack.server.http(reader) as http:
        accepted = start_export(http, SLOW_SQL, "csv")
        wait_job(http, accepted["job_id"], states=("running",))
        with stack.server.http() as admin:
            active = admin.get("/api/v1/tasks/active").json()
        assert http.delete(f"/api/v1/jobs/{accepted['job_id']}").status_code == 200
        job = wait_job(http, accepted["job_id"], timeout=30)
        artefacts = http.get("/api/v1/artefacts", params={"job_id": job["id"]}).json()
    (task,) = [t for t in active["tasks"] if t["task_id"] == accepted["task_id"]]
    assert task["state"] == "running" and task["kind"] == "export"
    assert task["worker"].startswith("tasks-test@") and task["job"]["id"] == accepted["job_id"]
    assert job["state"] == "cancelled" and artefacts["total"] == 0


def test_beat_runs_the_exports_rule_through_the_worker(stack: Stack, reader: str) -> None:
    artefacts_dir = stack.server.data_dir / "artefacts"
    with stack.server.http(reader) as http:
        job = run_export(http, "SELECT * FROM demo.products", "parquet")
        artefact_id = job["result"]["artefact_id"]
        assert (artefacts_dir / artefact_id).is_file()
        wait_until(
            lambda: http.get(f"/api/v1/artefacts/{artefact_id}").status_code == 404,
            timeout=EXPORT_AGE_S + 40,
            what="beat's exports run to delete the artefact",
        )
    assert not (artefacts_dir / artefact_id).exists()
    with stack.server.http() as admin:
        runs = admin.get("/api/v1/jobs", params={"kind": "maintenance", "limit": 1000}).json()
    deleting = [r for r in runs["items"] if r["result"] and r["result"]["deleted_exports"] >= 1]
    assert deleting and all(r["params"]["rule"] == "exports" for r in runs["items"])
    assert deleting[0]["task_id"]  # run by a Celery task, triggered by beat
    beat_log = stack.beat_log.read_text()
    assert "Scheduler: Sending due task maintenance-exports" in beat_log


def test_flower_runs_on_our_app_and_sees_the_worker(
    stack: Stack, tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")},
        "AGENTDATA_REDIS_URL": redis_url,
    }
    flower = _spawn(["flower", "--port", str(port)], env, tmp_path / "flower.log")
    try:

        def workers_page() -> str | None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/workers", timeout=5)
            except httpx.HTTPError:
                return None
            return r.text if r.status_code == 200 and "tasks-test@" in r.text else None

        page = wait_until(workers_page, timeout=90, what="Flower to list the worker")
    finally:
        _stop(flower)
    assert "Flower" in page


def test_worker_commands_need_a_redis_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    for command in ("worker", "beat"):
        proc = subprocess.run(
            [sys.executable, "-m", "agentdata", command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, (command, proc.stderr)
        assert "AGENTDATA_REDIS_URL" in proc.stderr


def test_no_credential_reaches_logs_results_or_monitoring(stack: Stack, redis_url: str) -> None:
    # Delegated job credentials are JWTs ("eyJ..."); the admin token is known.
    logs = stack.worker_log.read_text() + stack.beat_log.read_text() + stack.server.log()
    assert "eyJ" not in logs
    assert stack.server.admin_token not in logs
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("celery-task-meta-*"):
        value = client.get(key)
        assert isinstance(value, bytes), key  # no decode_responses: values are bytes
        assert b"eyJ" not in value


def test_the_server_refuses_exports_cleanly_when_the_broker_is_gone(
    tmp_path: Path,
) -> None:
    # A server whose broker does not answer: ready says so, an export answers 503
    # and its job records the failed dispatch.
    server = start_server(tmp_path / "data", env={"AGENTDATA_REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        with server.http() as http:
            ready = http.get("/readyz")
            r = http.post("/api/v1/exports", json={"sql": "SELECT 1", "format": "csv"})
            jobs = http.get("/api/v1/jobs", params={"kind": "export"}).json()["items"]
    finally:
        server.stop()
    assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("error")
    assert r.status_code == 503 and r.json()["code"] == "unavailable"
    assert jobs[0]["state"] == "failed" and jobs[0]["error"]["step"] == "dispatch"


# -- retries -----------------------------------------------------------------------------


def test_an_export_whose_server_is_killed_is_retried_with_one_artefact(
    stack: Stack, reader: str
) -> None:
    """SIGKILL the server while the worker streams an export, start it again: the
    worker's attempt fails as transient, Celery retries it, and the job ends with one
    whole artefact and its attempts on record."""
    rows_ = 3_000_000
    stack.server.execute(stack.server.admin_token, "CREATE SCHEMA IF NOT EXISTS qa")
    stack.server.execute(
        stack.server.admin_token,
        f"CREATE OR REPLACE TABLE qa.big AS SELECT range AS i FROM range({rows_})",
    )
    with stack.server.http(reader) as http:
        accepted = start_export(http, "SELECT * FROM qa.big ORDER BY i", "csv")
        running = wait_until(
            lambda: (
                (j := http.get(f"/api/v1/jobs/{accepted['job_id']}").json())["state"] != "queued"
                and j
            ),
            timeout=60,
            what="the worker to start the export",
        )
    stack.server = restart_server(stack.server)  # at once: seconds before the export can end
    assert running["state"] == "running", running
    with stack.server.http(reader) as http:
        job = wait_job(http, accepted["job_id"], timeout=180)
        assert job["state"] == "succeeded", f"{job}\n{stack.worker_log.read_text()[-3000:]}"
        assert job["result"]["rows"] == rows_ and job["attempts"] >= 2
        history = job["attempt_history"]
        assert history[0]["outcome"] in ("retrying", "interrupted")
        assert history[-1]["outcome"] == "succeeded"
        listed = http.get("/api/v1/artefacts", params={"job_id": job["id"]}).json()["items"]
        assert [a["id"] for a in listed] == [job["result"]["artefact_id"]]
        assert download(http, job["result"]["artefact_id"]).count(b"\n") == rows_ + 1
    with stack.server.http() as admin:
        status = admin.get(f"/api/v1/tasks/status/{accepted['task_id']}").json()
    assert status["job"]["attempts"] == job["attempts"]
    assert len(status["job"]["attempt_history"]) == len(history)


def test_a_failing_cleanup_is_retried_once_by_celery(stack: Stack) -> None:
    artefacts = stack.server.data_dir / "artefacts"
    with stack.server.http() as http:
        r = http.post(
            "/api/v1/artefacts",
            files={"file": ("f.txt", b"expiring", "text/plain")},
            data={"expires_in_s": "1"},
        )
        assert r.status_code == 201, r.text
        artefact_id = r.json()["id"]
        # A directory where the file was: beat's exports runs cannot delete it.
        (artefacts / artefact_id).unlink()
        (artefacts / artefact_id).mkdir()
        (artefacts / artefact_id / "stuck").write_text("x")
        started = time.time()

        def failed_run() -> dict[str, Any] | None:
            runs = http.get("/api/v1/jobs", params={"kind": "maintenance", "limit": 1000}).json()
            return next(
                (
                    j
                    for j in runs["items"]
                    if seconds(j["created_at"]) >= started and j["state"] == "failed"
                ),
                None,
            )

        try:
            failed = wait_until(failed_run, timeout=60, what="a failed run of the exports rule")
        finally:
            (artefacts / artefact_id / "stuck").unlink()
            os.rmdir(artefacts / artefact_id)
    # One job, two attempts (the run and its one retry, same Celery task), each with why.
    assert failed["attempts"] == 2 and failed["task_id"]
    assert [a["outcome"] for a in failed["attempt_history"]] == ["retrying", "failed"]
    assert all(a["error"]["step"] == "exports" for a in failed["attempt_history"])
    assert all(a["task_id"] == failed["task_id"] for a in failed["attempt_history"])
