"""Helpers for the end-to-end sync tests: specs, runs, jobs, workers, table reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.fakesnow_server import FakesnowServer
from tests.support.server import REPO, ServerProcess

FINISHED = ("succeeded", "failed", "cancelled")


def source_of(snow: FakesnowServer, table: str) -> str:
    return f"{snow.database}.{snow.schema}.{table}"


def create_spec(http: httpx.Client, **spec: Any) -> dict[str, Any]:
    r = http.post("/api/v1/syncs", json=spec)
    assert r.status_code == 201, r.text
    return r.json()


def start_run(http: httpx.Client, name: str, **body: Any) -> str:
    r = http.post(f"/api/v1/syncs/{name}/run", json=body or None)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    r = http.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(
    http: httpx.Client, job_id: str, *, states: tuple[str, ...] = FINISHED, timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    current: dict[str, Any] = {}
    while time.monotonic() < deadline:
        current = job(http, job_id)
        if current["state"] in states:
            return current
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {states} after {timeout}s: {current}")


def run_sync(http: httpx.Client, name: str, *, timeout: float = 90, **body: Any) -> dict[str, Any]:
    """Run a sync and wait; asserts it succeeded and returns the job."""
    finished = wait_for(http, start_run(http, name, **body), timeout=timeout)
    assert finished["state"] == "succeeded", finished
    return finished


def rows(server: ServerProcess, sql: str) -> list[dict[str, Any]]:
    return server.query(server.admin_token, sql).to_pylist()


def source_rows(snow: FakesnowServer, sql: str) -> list[dict[str, Any]]:
    with snow.connect() as conn, conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def worker_env(
    server: ServerProcess, snow: FakesnowServer, root: Path, **extra: str
) -> dict[str, str]:
    """Environment of a worker (or beat) for `server`, reading from `snow`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AGENTDATA_", "SNOWFLAKE_"))},
        **snow.env(),
        "AGENTDATA_SERVER_URL": server.http_url,
        "AGENTDATA_FLIGHT_URL": server.flight_url,
        "AGENTDATA_WORKER_TOKEN": server.admin_token,
        "AGENTDATA_DATA_DIR": str(root),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m agentdata ARGS` in a process group of its own (so kill -9 takes it all)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentdata", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything in its group: no clean-up, no acknowledgement."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`agentdata sync ARGS` against `server` as its admin."""
    return subprocess.run(
        [sys.executable, "-m", "agentdata", "sync", *args],
        cwd=REPO,
        env={**server.env, "AGENTDATA_URL": server.http_url, "AGENTDATA_TOKEN": server.admin_token},
        capture_output=True,
        text=True,
        timeout=120,
    )
