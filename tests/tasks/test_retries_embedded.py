"""Retries as planned, in embedded mode: an export whose server is killed mid-run is
re-queued when the server comes back and succeeds with exactly one artefact; a failing
clean-up is retried once; every attempt shows in REST, the CLI and the task status.

One real server for the module (killed with SIGKILL and restarted on the same ports and
data dir by the export test), retry backoffs shortened to a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentdata.timestamps import seconds
from tests.support.server import REPO, ServerProcess, restart_server, start_server
from tests.tasks.support import download, start_export, wait_job, wait_until

BIG_ROWS = 2_000_000


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """{"srv": the module's server}: a box, since the export test replaces the process."""
    server = start_server(
        tmp_path_factory.mktemp("retries") / "data",
        env={
            "AGENTDATA_BATCH_ROWS": "2000",  # many batches: the export is mid-stream for a while
            "AGENTDATA_EMBEDDED_WORKERS": "2",
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            "AGENTDATA_EXPORT_RETRY_BACKOFF_S": "1",
            "AGENTDATA_MAINTENANCE_RETRY_BACKOFF_S": "1",
            # The exports rule runs every second (the clean-up test breaks it on purpose).
            "AGENTDATA_MAINTENANCE_EXPORTS_EVERY_S": "1",
            "AGENTDATA_MAINTENANCE_JOBS_EVERY_S": "0",
            "AGENTDATA_MAINTENANCE_STALE_EVERY_S": "0",
        },
    )
    holder = {"srv": server}
    yield holder
    holder["srv"].stop()


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentdata", *args],
        cwd=REPO,
        env={**server.env, "AGENTDATA_URL": server.http_url, "AGENTDATA_TOKEN": server.admin_token},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_export_killed_with_its_server_is_retried_with_one_artefact(
    box: dict[str, ServerProcess],
) -> None:
    srv = box["srv"]
    srv.execute(srv.admin_token, "CREATE SCHEMA IF NOT EXISTS qa")
    srv.execute(
        srv.admin_token,
        f"CREATE TABLE qa.big AS SELECT range AS i, 'row ' || range AS s FROM range({BIG_ROWS})",
    )
    reader = str(srv.create_token("reader", name="retry-reader")["token"])
    with srv.http(reader) as http:
        accepted = start_export(http, "SELECT * FROM qa.big ORDER BY i", "csv")
        job_id, task_id = accepted["job_id"], accepted["task_id"]
        wait_until(
            lambda: http.get(f"/api/v1/jobs/{job_id}").json()["progress_rows"] > 0,
            timeout=60,
            what="the export to be streaming",
        )
    srv = box["srv"] = restart_server(srv)  # SIGKILL mid-export, then the same server again
    with srv.http(reader) as http:
        done = wait_job(http, job_id, timeout=120)
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 2 and done["result"]["rows"] == BIG_ROWS
        first, second = done["attempt_history"]
        assert (first["attempt"], first["outcome"]) == (1, "retrying")
        assert first["error"]["step"] == "runner" and first["error"]["code"] == "unavailable"
        assert "server restarted" in first["error"]["message"]
        assert (second["attempt"], second["outcome"], second["error"]) == (2, "succeeded", None)
        assert seconds(first["ended_at"]) <= seconds(second["started_at"])
        # Exactly one artefact for the job, and it is whole.
        listed = http.get("/api/v1/artefacts", params={"job_id": job_id}).json()["items"]
        assert [a["id"] for a in listed] == [done["result"]["artefact_id"]]
        text = download(http, done["result"]["artefact_id"]).decode()
        assert text.count("\n") == BIG_ROWS + 1
        assert text.endswith(f'{BIG_ROWS - 1},"row {BIG_ROWS - 1}"\n')
    # The killed attempt's partial file is gone; no orphan artefact file either.
    leftovers = list((srv.data_dir / "tmp" / "tasks").glob(f"agentdata-export-{job_id}-*"))
    assert leftovers == []
    on_disk = {p.name for p in (srv.data_dir / "artefacts").iterdir() if not p.name.startswith(".")}
    assert done["result"]["artefact_id"] in on_disk
    # The attempt history in the task status and the CLI too.
    with srv.http() as admin:
        status = admin.get(f"/api/v1/tasks/status/{task_id}").json()
    assert status["job"]["id"] == job_id and status["job"]["attempts"] == 2
    assert [a["outcome"] for a in status["job"]["attempt_history"]] == ["retrying", "succeeded"]
    shown = _cli(srv, "job", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "attempt 1: retrying" in shown.stdout and "step runner: unavailable" in shown.stdout
    assert "attempt 2: succeeded" in shown.stdout


def _exports_rule_jobs(http: httpx.Client) -> list[dict[str, Any]]:
    jobs = http.get("/api/v1/jobs", params={"kind": "maintenance", "limit": 1000}).json()["items"]
    return [j for j in jobs if j["params"]["rule"] == "exports"]


def test_a_failing_cleanup_is_retried_once(box: dict[str, ServerProcess]) -> None:
    srv = box["srv"]
    artefacts = srv.data_dir / "artefacts"
    with srv.http() as http:
        r = http.post(
            "/api/v1/artefacts",
            files={"file": ("f.txt", b"expiring", "text/plain")},
            data={"expires_in_s": "2"},
        )
        assert r.status_code == 201, r.text
        artefact_id = r.json()["id"]
        # A directory where the file was: the rule cannot delete it (not even as root).
        (artefacts / artefact_id).unlink()
        (artefacts / artefact_id).mkdir()
        (artefacts / artefact_id / "stuck").write_text("x")
        started = time.time()
        try:
            failed = wait_until(
                lambda: next(
                    (
                        j
                        for j in _exports_rule_jobs(http)
                        if seconds(j["created_at"]) >= started and j["state"] == "failed"
                    ),
                    None,
                ),
                timeout=60,
                what="a failed run of the exports rule",
            )
        finally:
            (artefacts / artefact_id / "stuck").unlink()
            os.rmdir(artefacts / artefact_id)
        # One job, two attempts: the run, then its one retry; both with step and code.
        assert failed["attempts"] == 2
        history = failed["attempt_history"]
        assert [a["outcome"] for a in history] == ["retrying", "failed"]
        for attempt in history:
            assert attempt["error"]["step"] == "exports" and attempt["error"]["code"] == "internal"
            assert "IsADirectoryError" in attempt["error"]["message"]
        assert failed["error"]["step"] == "exports"
        # Fixed: a later run deletes the expired artefact's record.
        wait_until(
            lambda: http.get(f"/api/v1/artefacts/{artefact_id}").status_code == 404,
            timeout=30,
            what="the clean-up to succeed once the file is deletable",
        )
