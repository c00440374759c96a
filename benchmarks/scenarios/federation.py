"""Federation (issue 14): a remote (not synced) Snowflake table scanned through agentdata,
against a bare `fetch_arrow_batches` read of the same table in the same run.

    python -m benchmarks.run --only federation [--quick]

Set-up: the `fakesnow` emulator in server mode (tests/support/fakesnow_server.py) with a
table of 1M rows (100k in quick mode), a real `agentdata serve` whose Snowflake
credentials point at it, and the table declared with `POST /api/v1/remote-tables`.

- subject: a Flight client in this process sends `SELECT * FROM bench.remote` (GetFlightInfo
  then DoGet) and reads every batch, dropping them: agentdata translates the query,
  runs it in "Snowflake", streams the connector's Arrow chunks cast to the table's
  DuckDB types, and sends them over Flight;
- reference: in this process, the connector's `cursor.execute("select * ...")` then
  `fetch_arrow_batches()` to the last batch, batches dropped: what any client pays to
  read the table from this emulator directly.

Rounds alternate the two (order rotated), after one untimed warm-up of each. Aim: the
federated scan reaches at least 0.8 of the bare read's rows/s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common as c

NAME = "federation"
AIM = 0.8
TABLE = "BENCH_REMOTE"


def _bare_read(conn: Any, rows: int) -> float:
    with contextlib.closing(conn.cursor()) as cur:
        start = time.perf_counter()
        cur.execute(f"select * from {TABLE}")
        got = sum(t.num_rows for t in cur.fetch_arrow_batches(force_microsecond_precision=True))
        elapsed = time.perf_counter() - start
    if got != rows:
        raise RuntimeError(f"bare read: {got} rows, expected {rows}")
    return elapsed


def _federated_read(server: c.BenchServer, rows: int) -> tuple[float, bytes]:
    import pyarrow.flight as fl

    client = fl.connect(server.flight_url)
    try:
        opts = c.bearer(server.admin_token, 1800)
        start = time.perf_counter()
        descriptor = fl.FlightDescriptor.for_command(b"SELECT * FROM bench.remote")
        info = client.get_flight_info(descriptor, opts)
        reader = client.do_get(info.endpoints[0].ticket, opts)
        got = 0
        for chunk in reader:
            got += chunk.data.num_rows
        elapsed = time.perf_counter() - start
        engine = (reader.schema.metadata or {}).get(b"agentdata.engine", b"")
    finally:
        client.close()
    if got != rows:
        raise RuntimeError(f"federated read: {got} rows, expected {rows}")
    return elapsed, engine


def run(quick: bool) -> dict[str, Any]:
    import httpx

    from tests.support.fakesnow_server import FakesnowServer

    rows = 100_000 if quick else 1_000_000
    rounds = 5
    notes = [c.load_note() + " (before)"]
    work = Path(tempfile.mkdtemp(prefix="federation-", dir=c.scratch_dir(NAME)))
    snow = FakesnowServer(data_dir=work / "snow")
    engines: set[bytes] = set()
    try:
        snow.start()
        started = time.perf_counter()
        c.create_snowflake_table(snow, TABLE, rows)
        created_s = time.perf_counter() - started
        env = {**snow.env(), "SNOWFLAKE_NETWORK_TIMEOUT": "600"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the server reads SNOWFLAKE_* like a sync does
        try:
            server = c.start_server(work / "data", {"LOG_LEVEL": "WARNING"})
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        conn = snow.connect(network_timeout=600)
        with (
            server,
            httpx.Client(
                base_url=server.http_url,
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=600,
            ) as http,
        ):
            r = http.post(
                "/api/v1/remote-tables",
                json={"name": "bench.remote", "source": f"{snow.database}.{snow.schema}.{TABLE}"},
            )
            r.raise_for_status()

            def federated() -> float:
                elapsed, engine = _federated_read(server, rows)
                engines.add(engine)
                return elapsed

            def bare() -> float:
                return _bare_read(conn, rows)

            federated(), bare()  # warm-up: imports, connections, the pool's login
            times = c.interleaved(rounds, {"federated": federated, "bare": bare})
        conn.close()
    finally:
        snow.close()
        shutil.rmtree(work, ignore_errors=True)
    notes.append(c.load_note() + " (after)")
    if engines != {b"snowflake"}:
        notes.append(f"unexpected agentdata.engine values: {sorted(engines)}")
    notes.append(
        "fakesnow answers a query with the whole result inline (one chunk, after the query "
        "ran), where Snowflake streams result chunks from storage; both subjects pay the "
        "same emulator time, so the ratio is agentdata's overhead on top of the read."
    )
    fed_rps = [rows / t for t in times["federated"]]
    bare_rps = [rows / t for t in times["bare"]]
    ratio = statistics.median(fed_rps) / statistics.median(bare_rps)
    return {
        "name": NAME,
        "title": "Federated scan: rows/s through agentdata vs a bare fetch_arrow_batches read",
        "measures": (
            "Rows per second of SELECT * over a remote table, read to the end by a Flight "
            "client (pushed down whole, streamed from the connector's Arrow chunks), "
            "against reading the same table with the connector alone."
        ),
        "data": (
            f"{TABLE} in the fakesnow emulator: {rows:,} rows of NUMBER(38,0), NUMBER(9,0), "
            "NUMBER(12,2), VARCHAR, TIMESTAMP_NTZ; created in "
            f"{created_s:.1f}s"
        ),
        "reference": (
            "cursor.execute + fetch_arrow_batches of the same table in the same run, "
            "rounds interleaved; aim: federated >= 0.8 x the bare read's rows/s"
        ),
        "results": {
            "rows": rows,
            "federated_seconds": c.stats(times["federated"]),
            "bare_seconds": c.stats(times["bare"]),
            "federated_rows_per_s": c.stats(fed_rps),
            "bare_rows_per_s": c.stats(bare_rps),
            "ratio": round(ratio, 3),
        },
        "metrics": [
            c.metric(
                f"federated scan {rows / 1e6:g}M rows",
                statistics.median(fed_rps),
                "rows/s",
                reference=statistics.median(bare_rps),
                reference_label="bare fetch_arrow_batches",
                aim=f">= {AIM}",
                met=ratio >= AIM,
                spread=(min(fed_rps), max(fed_rps)),
            ),
        ],
        "notes": notes,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), default=str))
