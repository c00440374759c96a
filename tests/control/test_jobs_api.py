"""The jobs REST API against a real `agentdata serve`: listing, visibility, cancel, and the
event endpoint workers report through (start, progress, retrying, succeeded, failed,
cancelled), plus `agentdata job ls|show|cancel`.

Jobs are created the way the server's own services create them: through `JobStore`
on the meta store (SQLite in WAL mode, shared safely between processes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click
import httpx
import pytest

from agentdata.cli.client import Api
from agentdata.cli.jobs import wait_for_job
from agentdata.jobs import Job, JobStore
from agentdata.meta import MetaStore
from agentdata.timestamps import seconds
from control_api.routers.jobs import JobOut
from tests.support.server import REPO, ServerProcess


@pytest.fixture(scope="module")
def jobs(server: ServerProcess) -> Iterator[JobStore]:
    meta = MetaStore(server.data_dir / "meta.sqlite3")
    yield JobStore(meta)
    meta.close()


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> dict[str, Any]:
    return server.create_token("reader", name="alice")


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> dict[str, Any]:
    return server.create_token("reader", name="bob")


def event(c: httpx.Client, job: Job | str, **body: Any) -> httpx.Response:
    job_id = job if isinstance(job, str) else job.id
    return c.post(f"/api/v1/jobs/{job_id}/events", json=body)


def test_list_filters_paging_and_visibility(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    mine = [jobs.create("export", {"sql": f"SELECT {i}"}, owner=alice["id"]) for i in range(3)]
    sync = jobs.create("sync", {"table": "demo.orders"}, owner=alice["id"])
    theirs = jobs.create("export", {"sql": "SELECT 'b'"}, owner=bob["id"])
    with server.http(alice["token"]) as c:
        page = c.get("/api/v1/jobs").json()
        assert page["total"] == 4
        assert [j["id"] for j in page["items"]] == [sync.id, *[j.id for j in mine[::-1]]]
        exports = c.get("/api/v1/jobs", params={"kind": "export"}).json()
        assert {j["id"] for j in exports["items"]} == {j.id for j in mine}
        page2 = c.get("/api/v1/jobs", params={"limit": 2, "offset": 2}).json()
        assert [j["id"] for j in page2["items"]] == [mine[1].id, mine[0].id]
        assert page2["total"] == 4 and page2["limit"] == 2 and page2["offset"] == 2
        assert c.get("/api/v1/jobs", params={"state": "running"}).json()["total"] == 0
        r = c.get(f"/api/v1/jobs/{theirs.id}")
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert c.delete(f"/api/v1/jobs/{theirs.id}").status_code == 404
        assert event(c, theirs, event="start").status_code == 404
        assert c.get("/api/v1/jobs", params={"owner": bob["id"]}).status_code == 403
        r = c.get("/api/v1/jobs", params={"kind": "bogus"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_argument"
        job = c.get(f"/api/v1/jobs/{mine[0].id}").json()
        expected = JobOut(**mine[0].to_dict()).model_dump(mode="json")
        assert job == {**expected, "updated_at": job["updated_at"]}
        assert job["created_at"].endswith("Z")  # RFC 3339, UTC
    with server.http() as c:  # admin: everyone's
        ids = {j["id"] for j in c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]}
        assert {theirs.id, sync.id, *(j.id for j in mine)} <= ids
        bobs = c.get("/api/v1/jobs", params={"owner": bob["id"]}).json()
        assert [j["id"] for j in bobs["items"]] == [theirs.id]


def test_cancel_a_queued_job_is_immediate(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any]
) -> None:
    job = jobs.create("export", {"sql": "SELECT 1"}, owner=alice["id"])
    with server.http(alice["token"]) as c:
        r = c.delete(f"/api/v1/jobs/{job.id}")
        assert r.status_code == 200
        assert r.json()["state"] == "cancelled" and r.json()["cancel_requested"] is True
        assert r.json()["finished_at"] is not None
        again = c.delete(f"/api/v1/jobs/{job.id}")
        assert again.status_code == 409 and again.json()["code"] == "conflict"
    with server.http() as worker:
        r = event(worker, job, event="start", task_id="t-1")
        assert r.status_code == 409  # a worker that picks it up late is told not to run it


def test_running_job_learns_of_cancel_from_its_progress_report(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any]
) -> None:
    job = jobs.create("export", {"sql": "SELECT 2"}, owner=alice["id"])
    with server.http() as worker, server.http(alice["token"]) as user:
        r = event(worker, job, event="start", task_id="celery-123")
        assert r.status_code == 200, r.text
        started = r.json()
        assert started["state"] == "running" and started["attempts"] == 1
        assert started["task_id"] == "celery-123" and started["started_at"] is not None
        r = event(worker, job, event="progress", rows=1000, bytes=65536, percent=10)
        assert r.json()["cancel_requested"] is False
        assert (r.json()["progress_rows"], r.json()["progress_bytes"]) == (1000, 65536)

        cancelled = user.delete(f"/api/v1/jobs/{job.id}").json()
        assert cancelled["state"] == "running" and cancelled["cancel_requested"] is True

        r = event(worker, job, event="progress", rows=2000, bytes=131072, percent=20)
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        r = event(worker, job, event="cancelled")
        assert r.json()["state"] == "cancelled" and r.json()["finished_at"] is not None
        late = event(worker, job, event="succeeded", result={"rows": 1})
        assert late.status_code == 409
        assert user.get(f"/api/v1/jobs/{job.id}").json()["state"] == "cancelled"


def test_failure_names_the_step(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any]
) -> None:
    job = jobs.create("sync", {"table": "sales.orders"}, owner=alice["id"])
    with server.http() as worker:
        assert event(worker, job, event="start").status_code == 200
        r = event(worker, job, event="failed")
        assert r.status_code == 400 and "error" in r.json()["detail"]
        r = event(
            worker,
            job,
            event="failed",
            error={"step": "extract", "code": "unavailable", "message": "Snowflake timed out"},
        )
        assert r.status_code == 200
    with server.http(alice["token"]) as c:
        failed = c.get(f"/api/v1/jobs/{job.id}").json()
    assert failed["state"] == "failed"
    assert failed["error"] == {
        "step": "extract",
        "code": "unavailable",
        "message": "Snowflake timed out",
    }
    assert seconds(failed["finished_at"]) >= seconds(failed["started_at"])


def test_retry_then_success_with_result(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any]
) -> None:
    job = jobs.create("export", {"sql": "SELECT 3"}, owner=alice["id"])
    with server.http() as worker:
        event(worker, job, event="start", task_id="t-a")
        r = event(
            worker,
            job,
            event="retrying",
            error={"step": "stream", "code": "unavailable", "message": "connection reset"},
        )
        assert r.json()["state"] == "retrying" and r.json()["finished_at"] is None
        r = event(worker, job, event="start", task_id="t-b")
        assert r.json()["attempts"] == 2 and r.json()["task_id"] == "t-b"
        r = event(
            worker,
            job,
            event="succeeded",
            rows=42,
            bytes=1234,
            percent=100,
            result={"artefact_id": "a" * 32, "rows": 42},
        )
    done = r.json()
    assert done["state"] == "succeeded"
    assert done["result"] == {"artefact_id": "a" * 32, "rows": 42}
    assert (done["progress_rows"], done["progress_bytes"], done["percent"]) == (42, 1234, 100)


def test_owner_may_report_events_for_its_own_job(
    server: ServerProcess, jobs: JobStore, alice: dict[str, Any]
) -> None:
    job = jobs.create("export", {"sql": "SELECT 4"}, owner=alice["id"])
    with server.http(alice["token"]) as c:
        assert event(c, job, event="start").json()["state"] == "running"
        assert event(c, job, event="progress").json()["progress_at"] is not None  # heartbeat


def test_event_validation(server: ServerProcess, jobs: JobStore) -> None:
    job = jobs.create("export", {}, owner=None)
    with server.http() as c:
        for body in (
            {"event": "exploded"},
            {"event": "progress", "percent": 150},
            {"event": "progress", "rows": -1},
            {"event": "failed", "error": {"step": "", "code": "x", "message": "m"}},
        ):
            r = c.post(f"/api/v1/jobs/{job.id}/events", json=body)
            assert r.status_code == 422, body
            assert r.headers["content-type"] == "application/problem+json"
        assert event(c, "0" * 32, event="start").status_code == 404


def test_jobs_gauge_counts_by_kind_and_state(server: ServerProcess, jobs: JobStore) -> None:
    with server.http() as c:
        text = c.get("/metrics").text
        listed = c.get("/api/v1/jobs", params={"kind": "export", "state": "cancelled"}).json()
    m = re.search(r'^agentdata_jobs\{kind="export",state="cancelled"\} (\S+)$', text, re.M)
    assert m and float(m.group(1)) == listed["total"] >= 1


# -- the CLI ---------------------------------------------------------------------------------
def cli(srv: ServerProcess, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    return subprocess.run(
        [sys.executable, "-m", "agentdata", *args, "--url", srv.http_url, "--token", token],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_cli_job_ls_show_cancel(server: ServerProcess, jobs: JobStore, bob: dict[str, Any]) -> None:
    queued = jobs.create("export", {"sql": "SELECT 5"}, owner=bob["id"])
    failed = jobs.create("sync", {"table": "t"}, owner=bob["id"])
    jobs.start(failed.id)
    jobs.progress(failed.id, rows=1500, nbytes=2048, percent=30)
    jobs.fail(failed.id, step="load", code="invalid_argument", message="schema drift on col x")

    ls = cli(server, bob["token"], "job", "ls")
    assert ls.returncode == 0, ls.stderr
    assert re.search(rf"^{queued.id}\s+export\s+queued\s", ls.stdout, re.M)
    assert re.search(rf"^{failed.id}\s+sync\s+failed\s.*\s1,500\s+30%$", ls.stdout, re.M)
    only_sync = cli(server, bob["token"], "job", "ls", "--kind", "sync", "--json")
    assert {j["id"] for j in json.loads(only_sync.stdout)["items"]} == {failed.id}

    show = cli(server, bob["token"], "job", "show", failed.id)
    assert show.returncode == 0, show.stderr
    assert "state:     failed" in show.stdout
    assert "error:     step load: invalid_argument: schema drift on col x" in show.stdout
    waited = cli(server, bob["token"], "job", "show", failed.id, "--wait")
    assert waited.returncode == 1  # --wait on a failed job: non-zero for scripts

    cancel = cli(server, bob["token"], "job", "cancel", queued.id)
    assert cancel.returncode == 0 and f"cancelled {queued.id}" in cancel.stdout
    with server.http(bob["token"]) as c:
        assert c.get(f"/api/v1/jobs/{queued.id}").json()["state"] == "cancelled"


def test_wait_for_job_follows_progress_to_the_end(
    server: ServerProcess, jobs: JobStore, bob: dict[str, Any]
) -> None:
    job = jobs.create("export", {"sql": "SELECT 6"}, owner=bob["id"])

    def worker() -> None:
        with server.http() as c:
            event(c, job, event="start")
            for pct in (25, 50, 75):
                time.sleep(0.1)
                event(c, job, event="progress", rows=pct * 10, percent=pct)
            event(c, job, event="succeeded", result={"artefact_id": "b" * 32, "rows": 1000})

    t = threading.Thread(target=worker)
    t.start()
    api = Api(server.http_url, bob["token"], REPO)
    try:
        final = wait_for_job(api, job.id, poll_s=0.05, timeout_s=30, progress=False)
        t.join()
        assert final["state"] == "succeeded" and final["result"]["artefact_id"] == "b" * 32

        failing = jobs.create("export", {}, owner=bob["id"])
        jobs.fail(failing.id, step="write", code="quota_exceeded", message="no room")
        with pytest.raises(click.ClickException, match="at step write: quota_exceeded: no room"):
            wait_for_job(api, failing.id, poll_s=0.05, progress=False)
    finally:
        api.close()
