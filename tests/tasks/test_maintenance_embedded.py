"""Maintenance in embedded mode: each rule with its ages shortened by settings, run through
the route the schedulers use, and the in-process scheduler firing on its own.

Checks what a user would: job records gone (404), artefact records AND files gone,
files and records agreeing afterwards, healthy long-running jobs left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentdata.timestamps import seconds
from tests.support.server import ServerProcess, start_server
from tests.tasks.support import run_export, start_export, wait_job, wait_until
from tests.tasks.test_exports_embedded import SLOW_SQL

COMPLETED_AGE_S = 1.0
FAILED_AGE_S = 5.0
EXPORT_AGE_S = 1.0
STALE_AFTER_S = 3.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("maintenance") / "data",
        env={
            "AGENTDATA_EMBEDDED_WORKERS": "2",
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            "AGENTDATA_QUERY_TIMEOUT_S": "120",
            "AGENTDATA_MAINTENANCE_COMPLETED_JOB_AGE_S": str(COMPLETED_AGE_S),
            "AGENTDATA_MAINTENANCE_FAILED_JOB_AGE_S": str(FAILED_AGE_S),
            "AGENTDATA_MAINTENANCE_EXPORT_AGE_S": str(EXPORT_AGE_S),
            "AGENTDATA_MAINTENANCE_STALE_AFTER_S": str(STALE_AFTER_S),
            # Rules driven by the tests, except `stale`, which the scheduler runs each second.
            "AGENTDATA_MAINTENANCE_JOBS_EVERY_S": "0",
            "AGENTDATA_MAINTENANCE_EXPORTS_EVERY_S": "0",
            "AGENTDATA_MAINTENANCE_STALE_EVERY_S": "1",
        },
    )
    yield server
    server.stop()


def wait_older_than(*timestamps: str, age: float) -> None:
    """Wait until every one of the server's `timestamps` lies more than `age` seconds in the
    past: the point from which a rule with that age limit must act on the record."""
    newest = max(seconds(ts) for ts in timestamps)
    wait_until(lambda: time.time() > newest + age, timeout=age + 30, what=f"age {age}s")


def run_rule(http: httpx.Client, rule: str) -> dict[str, Any]:
    r = http.post(f"/api/v1/maintenance/{rule}/run")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["kind"] == "maintenance" and job["params"]["rule"] == rule
    assert job["state"] == "succeeded", job
    return job


def test_jobs_rule_deletes_finished_jobs_by_their_age(srv: ServerProcess) -> None:
    with srv.http() as http:
        done = run_export(http, "SELECT 1 AS x", "csv")
        failed = wait_job(
            http, start_export(http, "SELECT 'x'::INTEGER + i FROM range(3) t(i)", "csv")["job_id"]
        )
        assert failed["state"] == "failed"
        running = start_export(http, SLOW_SQL, "csv")
        queued = start_export(http, SLOW_SQL, "csv")
        cancelled = start_export(http, SLOW_SQL, "csv")
        stopped = http.delete(f"/api/v1/jobs/{cancelled['job_id']}").json()
        assert stopped["state"] == "cancelled"
        wait_older_than(done["finished_at"], stopped["finished_at"], age=COMPLETED_AGE_S)

        first = run_rule(http, "jobs")
        assert first["result"]["deleted_by_state"]["succeeded"] >= 1
        assert first["result"]["deleted_by_state"]["cancelled"] >= 1
        assert http.get(f"/api/v1/jobs/{done['id']}").status_code == 404
        assert http.get(f"/api/v1/jobs/{cancelled['job_id']}").status_code == 404
        assert http.get(f"/api/v1/jobs/{failed['id']}").json()["state"] == "failed"  # 5 s age
        for active in (running, queued):  # unfinished jobs are never touched
            assert http.get(f"/api/v1/jobs/{active['job_id']}").status_code == 200
        # The export's artefact is the exports rule's business, not this one's.
        assert http.get(f"/api/v1/artefacts/{done['result']['artefact_id']}").status_code == 200

        wait_older_than(failed["finished_at"], age=FAILED_AGE_S)
        second = run_rule(http, "jobs")
        assert second["result"]["deleted_by_state"]["failed"] >= 1
        assert http.get(f"/api/v1/jobs/{failed['id']}").status_code == 404
        assert http.get(f"/api/v1/jobs/{first['id']}").status_code == 404  # runs age too
        for active in (running, queued):
            http.delete(f"/api/v1/jobs/{active['job_id']}")
            wait_job(http, active["job_id"], timeout=30)


def test_exports_rule_removes_files_and_records_together(srv: ServerProcess) -> None:
    artefacts_dir = srv.data_dir / "artefacts"
    with srv.http() as http:
        export = run_export(http, "SELECT * FROM demo.customers", "parquet")
        export_id = export["result"]["artefact_id"]
        kept = _upload(http, b"keep me", {})
        expiring = _upload(http, b"expire me", {"expires_in_s": "1"})
        assert (artefacts_dir / export_id).is_file()
        assert (artefacts_dir / expiring).is_file()
        expires_at = http.get(f"/api/v1/artefacts/{expiring}").json()["expires_at"]
        created_at = http.get(f"/api/v1/artefacts/{export_id}").json()["created_at"]
        wait_older_than(created_at, age=EXPORT_AGE_S)
        wait_older_than(expires_at, age=0)

        job = run_rule(http, "exports")
        assert job["result"]["deleted_exports"] >= 1
        assert job["result"]["deleted_expired"] >= 1
        assert job["result"]["freed_bytes"] > 0
        assert http.get(f"/api/v1/artefacts/{export_id}").status_code == 404
        assert not (artefacts_dir / export_id).exists()
        assert not (artefacts_dir / expiring).exists()
        assert http.get(f"/api/v1/artefacts/{kept}/content").content == b"keep me"
        # No orphan files, no records without files.
        records = {
            a["id"] for a in http.get("/api/v1/artefacts", params={"limit": 1000}).json()["items"]
        }
    on_disk = {p.name for p in artefacts_dir.iterdir() if not p.name.startswith(".")}
    assert records == on_disk and kept in on_disk


def test_stale_rule_fails_silent_jobs_and_spares_healthy_ones(srv: ServerProcess) -> None:
    with srv.http() as http:
        # Two long exports keep both runner threads busy (and report progress);
        # a third waits in the queue.
        healthy = [start_export(http, SLOW_SQL, "csv") for _ in range(2)]
        for accepted in healthy:
            wait_job(http, accepted["job_id"], states=("running",))
        silent = start_export(http, SLOW_SQL, "csv")
        # A worker claims the third job and then says nothing more.
        r = http.post(f"/api/v1/jobs/{silent['job_id']}/events", json={"event": "start"})
        assert r.status_code == 200 and r.json()["state"] == "running"

        job = wait_job(http, silent["job_id"], timeout=STALE_AFTER_S + 20)
        assert job["state"] == "failed"
        assert job["error"]["step"] == "progress"
        assert job["error"]["code"] == "deadline_exceeded"
        assert "marked failed by maintenance" in job["error"]["message"]
        # The long but healthy exports ran past the limit too, and are untouched.
        for accepted in healthy:
            j = http.get(f"/api/v1/jobs/{accepted['job_id']}").json()
            assert j["state"] == "running", j
            assert time.time() - seconds(j["started_at"]) > STALE_AFTER_S
        # The scheduler ran the rule by itself, as a task, repeatedly.
        runs = http.get("/api/v1/jobs", params={"kind": "maintenance", "limit": 1000}).json()
        stale_runs = [j for j in runs["items"] if j["params"]["rule"] == "stale"]
        assert len(stale_runs) >= 2 and all(j["task_id"] for j in stale_runs)
        assert any(j["result"]["failed_jobs"] >= 1 for j in stale_runs if j["result"])
        for accepted in healthy:
            http.delete(f"/api/v1/jobs/{accepted['job_id']}")
        for accepted in healthy:
            assert wait_job(http, accepted["job_id"], timeout=30)["state"] == "cancelled"
        # When the silent job's own task finally ran, it found the job over and left it.
        wait_until(
            lambda: (
                http.get(f"/api/v1/tasks/status/{silent['task_id']}").json()["state"] == "SUCCESS"
            ),
            what="the queued task to run",
        )
        assert http.get(f"/api/v1/jobs/{silent['job_id']}").json()["error"] == job["error"]


def test_maintenance_is_admin_only_and_names_its_rules(srv: ServerProcess) -> None:
    reader = srv.create_token("reader")["token"]
    with srv.http(reader) as http:
        assert http.post("/api/v1/maintenance/jobs/run").status_code == 403
        assert http.get("/api/v1/maintenance").status_code == 403
    with srv.http() as http:
        r = http.post("/api/v1/maintenance/everything/run")
        assert r.status_code == 400 and "jobs, exports, stale" in r.json()["detail"]
        rules = http.get("/api/v1/maintenance").json()
    assert rules["scheduler"] == "in-process"
    by_name = {r["name"]: r for r in rules["rules"]}
    assert by_name["stale"]["every_s"] == 1.0 and by_name["jobs"]["every_s"] is None
    assert rules["ages"]["failed_job_age_s"] == FAILED_AGE_S


def _upload(http: httpx.Client, data: bytes, fields: dict[str, str]) -> str:
    r = http.post("/api/v1/artefacts", files={"file": ("f.txt", data, "text/plain")}, data=fields)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_jobs_rule_removes_expired_job_credentials(tmp_path: Any) -> None:
    server = start_server(
        tmp_path / "data",
        env={
            "AGENTDATA_TASK_TOKEN_TTL_S": "6",
            "AGENTDATA_MAINTENANCE_JOBS_EVERY_S": "0",
            "AGENTDATA_DEMO": "false",
        },
    )
    try:
        with server.http() as http:
            done = run_export(http, "SELECT 1 AS x", "csv")
            credential = f"job {done['id']} (delegated)"
            tokens = {t["name"]: t for t in http.get("/api/v1/tokens").json()}
            assert credential in tokens
            wait_older_than(tokens[credential]["expires_at"], age=0)  # the credential expires
            result = run_rule(http, "jobs")["result"]
            assert result["deleted_job_credentials"] >= 1
            assert credential not in [t["name"] for t in http.get("/api/v1/tokens").json()]
    finally:
        server.stop()
