"""The CLI's progress, read off a real terminal: `agentdata export` waits for its job
with a bar named after the file asked for, showing the job's state, rows and bytes as
they come, the percentage once the job knows it, and never a dangling separator; the
download bar names the `--out` file.

The server runs with a broker but no worker, so the export job waits in the queue and
the test plays the worker, posting the job's events itself: each step is then on the
screen for as long as the test looks (no race with a real export's speed).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis_db import scratch_database
from tests.support.server import ServerProcess, start_server
from tests.support.terminal import Terminal

CSV = b"id,status\n1,paid\n2,open\n3,paid\n"


@pytest.fixture(scope="module")
def queued_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with scratch_database() as url:
        srv = start_server(
            tmp_path_factory.mktemp("progress") / "data", env={"AGENTDATA_REDIS_URL": url}
        )
        try:
            yield srv
        finally:
            srv.stop()


def _queued_export(http: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = http.get("/api/v1/jobs", params={"kind": "export", "state": "queued"}).json()
        if jobs["items"]:
            return jobs["items"][0]
        time.sleep(0.1)
    raise AssertionError("no export job was queued")


def test_export_progress_on_a_terminal(queued_only: ServerProcess, tmp_path: Path) -> None:
    server = queued_only
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env.update(AGENTDATA_URL=server.http_url, AGENTDATA_TOKEN=server.admin_token)
    argv = [sys.executable, "-m", "agentdata", "export", "SELECT * FROM demo.orders"]
    argv += ["--format", "csv", "--out", "orders.csv"]
    with Terminal(argv, env=env, cwd=tmp_path) as term, server.http() as http:
        job = _queued_export(http)
        events = f"/api/v1/jobs/{job['id']}/events"
        term.wait_for(r"^export orders\.csv: queued$")

        http.post(events, json={"event": "start", "task_id": "played-by-the-test"})
        term.wait_for(r"^export orders\.csv: running$")

        # Rows before the total is known: no bar, no percentage, rows and bytes.
        http.post(events, json={"event": "progress", "rows": 12_000, "bytes": 3 * 1048576})
        term.wait_for(r"^export orders\.csv: running, 12,000 rows, 3\.0 MiB$")

        # Once the count is in: the percentage and a bar.
        http.post(
            events, json={"event": "progress", "rows": 25_000, "bytes": 6 * 1048576, "percent": 25}
        )
        line = term.wait_for(r"^export orders\.csv:  25%\|")
        assert line.endswith("| running, 25,000 rows, 6.0 MiB"), line

        art = http.post(
            "/api/v1/artefacts",
            files={"file": ("export.csv", CSV, "text/csv")},
            data={"source": "export", "job_id": job["id"]},
        ).json()
        result = {"artefact_id": art["id"], "rows": 3, "bytes": len(CSV), "format": "csv"}
        http.post(
            events, json={"event": "succeeded", "rows": 3, "bytes": len(CSV), "result": result}
        )
        term.wait_for(r"^export orders\.csv: 100%\|.*\| succeeded, 3 rows")
        term.wait_for(r"^downloading orders\.csv: 100%")
        assert term.wait(60) == 0
        term.wait_for(rf"^orders\.csv: 3 rows, {len(CSV)} bytes$")
        lines = term.lines()
    assert (tmp_path / "orders.csv").read_bytes() == CSV
    for shown in lines:  # nothing dangles, nothing names the server's file
        assert not re.search(r"(,|\|)\s*$", shown) or shown.endswith("|"), shown
        assert ", ," not in shown and not shown.endswith(","), shown
        assert "export.csv" not in shown, shown
