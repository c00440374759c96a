"""Sync throughput (issue 4): a Snowflake table into agentdata, end to end, against a bare
`fetch_arrow_batches` read of the same table in the same run.

    python -m benchmarks.scenarios.sync_throughput [--quick]     # prints the result JSON

Set-up: the `fakesnow` emulator in server mode (tests/support/fakesnow_server.py) with a
table of 1M rows (100k in quick mode), a real `agentdata serve`, and a real Celery
worker (`agentdata worker`, on the first of Redis DBs 12, 14, 15, 11 that no other worker
consumes from) when Redis answers on 127.0.0.1:6379, else the embedded runner.

- subject: `POST /api/v1/syncs/{name}/run` of a full sync (extract with the connector,
  convert the types, DoPut into the server, staged and swapped atomically), timed from
  just before the POST to the job's `finished_at` (the server's clock, on this machine;
  the job is polled only every 0.2 s, so the poller takes no CPU from the sync);
- reference: in this process, the connector's `cursor.execute("select * ...")` then
  `fetch_arrow_batches()` to the last batch, batches dropped: the least any sync must
  pay to read the table from this emulator.

Rounds alternate the two (order rotated), after one untimed warm-up of each. Aim: the
sync reaches at least 0.8 of the bare read's rows/s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentdata.timestamps import seconds
from benchmarks import common as c

NAME = "sync_throughput"
AIM = 0.8
TABLE = "BENCH_SYNC"
REDIS = "redis://127.0.0.1:6379"
#: Redis DBs the benchmark may use (the tests use others); the first no worker listens on.
REDIS_DBS = (12, 14, 15, 11)


def _bare_read(snow: Any, rows: int) -> float:
    conn = snow.connect()
    try:
        with contextlib.closing(conn.cursor()) as cur:
            start = time.perf_counter()
            cur.execute(f"select * from {TABLE}")
            got = sum(batch.num_rows for batch in cur.fetch_arrow_batches())
            elapsed = time.perf_counter() - start
    finally:
        conn.close()
    if got != rows:
        raise RuntimeError(f"bare read: {got} rows, expected {rows}")
    return elapsed


def _redis_db() -> str | None:
    """A Redis URL on a DB no Celery worker consumes from (a stray worker of an earlier
    run would take this run's tasks), flushed; None when Redis does not answer."""
    try:
        import redis
        from celery import Celery

        for db in REDIS_DBS:
            url = f"{REDIS}/{db}"
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
            client.ping()
            probe = Celery(broker=url)
            try:
                listening = probe.control.ping(timeout=1.0)
            finally:
                probe.close()
            if not listening:
                client.flushdb()
                client.close()
                return url
            c.log(f"Redis DB {db} has workers already ({len(listening)}); trying the next")
            client.close()
    except Exception:
        return None
    return None


def _die_with_parent() -> None:
    """In the worker's process, before exec: SIGTERM when this benchmark dies, so a killed
    run leaves no worker behind consuming the next run's tasks (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn_worker(server: c.BenchServer, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agentdata", "worker", "--pool", "threads", "-c", "1"],
            cwd=c.REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # In this scenario's process group (benchmarks.run ends the group on a
            # timeout), and ended with this process should it die first.
            preexec_fn=_die_with_parent,
        )


@contextlib.contextmanager
def _redis_db_lock() -> Iterator[None]:
    """One run at a time on this Redis DB: two runs' workers would take each other's tasks."""
    import fcntl

    with open(_work_dir() / ".redis-db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _wait(http: Any, path: str, ok: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = http.get(path).json()
        if ok(value):
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def run(quick: bool) -> dict[str, Any]:
    with _redis_db_lock():
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    import httpx

    from tests.support.fakesnow_server import FakesnowServer

    rows = 100_000 if quick else 1_000_000
    rounds = 5
    notes = [c.load_note() + " (before)"]
    work = Path(tempfile.mkdtemp(prefix="sync-", dir=_work_dir()))
    worker = None
    redis_url = _redis_db()
    celery = redis_url is not None
    snow = FakesnowServer(data_dir=work / "snow")
    try:
        snow.start()
        started = time.perf_counter()
        c.create_snowflake_table(snow, TABLE, rows)
        created_s = time.perf_counter() - started
        settings = {"LOG_LEVEL": "WARNING", "EXPORT_PROGRESS_EVERY_S": "0.5"}
        if celery:
            settings["REDIS_URL"] = str(redis_url)
        saved = {k: os.environ.get(k) for k in snow.env()}
        os.environ.update(snow.env())  # the embedded runner extracts in the server
        try:
            server = c.start_server(work / "data", settings)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        with (
            server,
            httpx.Client(
                base_url=server.http_url,
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=60,
            ) as http,
        ):
            if celery:
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")},
                    **snow.env(),
                    "AGENTDATA_REDIS_URL": str(redis_url),
                    "AGENTDATA_SERVER_URL": server.http_url,
                    "AGENTDATA_FLIGHT_URL": server.flight_url,
                    "AGENTDATA_WORKER_TOKEN": server.admin_token,
                    "AGENTDATA_DATA_DIR": str(work / "worker"),
                    "AGENTDATA_LOG_LEVEL": "WARNING",
                    "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.5",
                }
                worker = _spawn_worker(server, env, work / "worker.log")
                _wait(http, "/api/v1/tasks/workers", lambda v: v["workers"], 180, "the worker")
            r = http.post(
                "/api/v1/syncs",
                json={
                    "name": "bench",
                    "source": f"{snow.database}.{snow.schema}.{TABLE}",
                    "target": "bench.synced",
                    "primary_key": ["ID"],
                },
            )
            r.raise_for_status()
            jobs: list[dict[str, Any]] = []

            def sync() -> float:
                # From just before the POST to the job's own finish time (same clock):
                # polling slowly keeps the poller off the CPU the sync needs.
                start = time.time()
                job_id = http.post("/api/v1/syncs/bench/run").json()["job_id"]
                job = _wait(
                    http,
                    f"/api/v1/jobs/{job_id}",
                    lambda j: j["state"] in ("succeeded", "failed", "cancelled"),
                    1800,
                    "the sync",
                )
                elapsed = seconds(job["finished_at"]) - start
                job["queued_s"] = seconds(job["started_at"]) - start
                if job["state"] != "succeeded" or job["result"]["rows"] != rows:
                    raise RuntimeError(f"sync did not load {rows} rows: {job}")
                jobs.append(job)
                return elapsed

            def bare() -> float:
                return _bare_read(snow, rows)

            sync(), bare()  # warm-up: imports, connections, caches
            jobs.clear()
            times = c.interleaved(rounds, {"sync": sync, "bare": bare})
            count = server.query("SELECT count(*) AS n FROM bench.synced").column(0)[0].as_py()
            if count != rows:
                raise RuntimeError(f"bench.synced has {count} rows, expected {rows}")
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(30)
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        snow.close()
        # The logs of the last run stay next to the work dirs (benchmarks/work/sync/).
        for name in ("worker.log", "data-server.log"):
            if (work / name).exists():
                shutil.copy(work / name, work.parent / f"last-{name}")
        shutil.rmtree(work, ignore_errors=True)
    notes.append(c.load_note() + " (after)")

    sync_rps = [rows / t for t in times["sync"]]
    bare_rps = [rows / t for t in times["bare"]]
    ratio = statistics.median(sync_rps) / statistics.median(bare_rps)
    timings = {
        key: c.stats([j["result"]["timings_s"].get(key, 0.0) for j in jobs])
        for key in ("start", "query", "plan", "source", "send", "commit")
    }
    runner = "a Celery worker (threads pool, 1 thread)" if celery else "the embedded runner"
    if not celery:
        notes.append(
            "no Redis DB free of other workers on 127.0.0.1:6379: syncs ran on the embedded runner"
        )
    notes.append(
        "fakesnow answers a query with the whole result inline (one chunk, after the query "
        "ran), where Snowflake streams result chunks from storage: the extraction cannot "
        "overlap with the load here, so the sync pays the emulator's time, then the load."
    )
    return {
        "name": NAME,
        "title": "Snowflake sync: rows/s end to end vs a bare fetch_arrow_batches read",
        "measures": (
            f"Rows per second of a full sync of the table into agentdata by {runner}, from "
            "POST .../run to the job's success (the table swapped in), against reading the "
            "same table with the connector alone."
        ),
        "data": (
            f"{TABLE} in the fakesnow emulator: {rows:,} rows of NUMBER(38,0), NUMBER(9,0), "
            "NUMBER(12,2), VARCHAR, TIMESTAMP_NTZ (DECIMAL(38,0), INTEGER, DECIMAL(12,2), "
            f"VARCHAR, TIMESTAMP in DuckDB); created in {created_s:.1f}s"
        ),
        "reference": (
            "cursor.execute + fetch_arrow_batches of the same table in the same run, "
            "rounds interleaved; aim: sync >= 0.8 x the bare read's rows/s"
        ),
        "results": {
            "rows": rows,
            "runner": "celery" if celery else "embedded",
            "sync_seconds": c.stats(times["sync"]),
            "bare_seconds": c.stats(times["bare"]),
            "sync_rows_per_s": c.stats(sync_rps),
            "bare_rows_per_s": c.stats(bare_rps),
            "sync_timings_s": timings,
            "sync_job_seconds": c.stats([j["result"]["seconds"] for j in jobs]),
            "sync_until_started_s": c.stats([j["queued_s"] for j in jobs]),
        },
        "metrics": [
            c.metric(
                f"sync {rows / 1e6:g}M rows, end to end",
                statistics.median(sync_rps),
                "rows/s",
                reference=statistics.median(bare_rps),
                reference_label="bare fetch_arrow_batches",
                aim=f">= {AIM}",
                met=ratio >= AIM,
                spread=(min(sync_rps), max(sync_rps)),
            ),
            c.metric(
                f"bare fetch_arrow_batches {rows / 1e6:g}M rows",
                statistics.median(bare_rps),
                "rows/s",
                spread=(min(bare_rps), max(bare_rps)),
            ),
        ],
        "notes": notes,
    }


def _work_dir() -> Path:
    path = c.WORK / "sync"
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    import json

    print(json.dumps(run("--quick" in sys.argv[1:]), indent=2, default=str))
