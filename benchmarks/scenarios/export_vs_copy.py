"""Exports through agentdata against DuckDB's own `COPY (query) TO` of the same data.

Subject: `POST /api/v1/exports` on a real `agentdata serve` in embedded mode (the
in-process runner), timed from the POST to the job's `succeeded`: the query streams
over Flight to the task, is written as CSV or Parquet on local disk, and is uploaded
as an artefact (hashed, fsynced, renamed into place) through REST.

Reference: DuckDB in this process running `COPY (SELECT * FROM t) TO 'file'` on an
identical table (a separate DuckDB file: the server's own file is locked while it
runs). Same rows, same columns, same format; Parquet with snappy on both sides, CSV
uncompressed with a header on both. Runs alternate (subject, reference, subject, ...)
so background load hits both alike; medians are compared.

    python -m benchmarks.scenarios.export_vs_copy [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common as c

NAME = "export_vs_copy"
AIM = 1.5
#: (label, agentdata format, agentdata compression, DuckDB COPY options, file suffix)
FORMATS = [
    ("csv", "csv", "none", "(FORMAT csv, HEADER true)", ".csv"),
    ("parquet", "parquet", "snappy", "(FORMAT parquet, COMPRESSION snappy)", ".parquet"),
]


def _export_once(http: httpx.Client, sql: str, fmt: str, compression: str) -> dict[str, Any]:
    """One export, timed from POST to `succeeded`; the artefact is deleted afterwards."""
    started = time.perf_counter()
    r = http.post("/api/v1/exports", json={"sql": sql, "format": fmt, "compression": compression})
    r.raise_for_status()
    job_id = r.json()["job_id"]
    while True:
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise RuntimeError(f"export {fmt} {job['state']}: {job.get('error')}")
    result = job["result"]
    http.delete(f"/api/v1/artefacts/{result['artefact_id']}")
    return {"seconds": elapsed, "rows": result["rows"], "bytes": result["bytes"]}


def _copy_once(ref: Path, sql: str, options: str, target: Path) -> dict[str, Any]:
    """DuckDB's COPY of the same query, in this process, timed end to end."""
    import duckdb

    target.unlink(missing_ok=True)
    con = duckdb.connect(str(ref), read_only=True)
    try:
        started = time.perf_counter()
        con.execute(f"COPY ({sql}) TO '{target}' {options}")
        elapsed = time.perf_counter() - started
    finally:
        con.close()
    size = target.stat().st_size
    target.unlink()
    return {"seconds": elapsed, "bytes": size}


def run(quick: bool) -> dict[str, Any]:
    rows = 1_000_000 if quick else 10_000_000
    runs = 2 if quick else 3
    table = c.table_name(rows)
    sql = f"SELECT * FROM {table}"
    data_dir = c.dataset([rows])
    ref = c.reference_db(rows)
    scratch = c.scratch_dir(NAME)
    notes = [c.load_note() + " (before)"]
    results: dict[str, Any] = {}

    server = c.start_server(data_dir, {"EMBEDDED_WORKERS": "1"})
    try:
        token = server.create_token("reader", name="bench-export")
        with httpx.Client(
            base_url=server.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=3600
        ) as http:
            # Warm up: the task code's first import, DuckDB's buffer pool, both sides' caches.
            _export_once(http, f"SELECT * FROM {table} LIMIT 100000", "parquet", "snappy")
            for label, fmt, compression, options, suffix in FORMATS:
                _copy_once(ref, f"{sql} LIMIT 100000", options, scratch / f"warm{suffix}")
                subject, reference = [], []
                for i in range(runs):
                    c.log(f"{NAME}: {label} run {i + 1}/{runs} ({rows:,} rows)")
                    subject.append(_export_once(http, sql, fmt, compression))
                    reference.append(_copy_once(ref, sql, options, scratch / f"copy{suffix}"))
                results[label] = {"agentdata": subject, "duckdb_copy": reference}
    finally:
        server.stop()
    notes.append(c.load_note() + " (after)")

    metrics = []
    for label, *_ in FORMATS:
        a = c.stats([r["seconds"] for r in results[label]["agentdata"]])
        b = c.stats([r["seconds"] for r in results[label]["duckdb_copy"]])
        ratio = a["median"] / b["median"]
        results[label]["seconds"] = {"agentdata": a, "duckdb_copy": b, "ratio": ratio}
        metrics.append(
            c.metric(
                f"export {label}, {rows / 1e6:g}M rows: agentdata / DuckDB COPY",
                a["median"],
                "s",
                reference=b["median"],
                ratio=ratio,
                aim=f"<= {AIM}",
                met=ratio <= AIM,
                spread=(a["min"], a["max"]),
            )
        )
        mb = results[label]["agentdata"][0]["bytes"] / c.MB
        results[label]["file_mb"] = {
            "agentdata": round(mb, 1),
            "duckdb_copy": round(results[label]["duckdb_copy"][0]["bytes"] / c.MB, 1),
        }
    return {
        "name": NAME,
        "title": "Query export (CSV, Parquet) vs DuckDB COPY",
        "measures": (
            "Wall time of an export job, from POST /api/v1/exports to the job's succeeded "
            "(Flight DoGet, file writing, upload as an artefact), against DuckDB's own "
            "COPY (query) TO of the same query in-process."
        ),
        "data": (
            f"{table}: {rows:,} rows of BIGINT, INTEGER, DOUBLE, VARCHAR and TIMESTAMP "
            "(benchmarks.common.table_sql); CSV uncompressed with header, Parquet snappy."
        ),
        "reference": (
            "DuckDB COPY in-process on an identical table in its own file: the engine's "
            "native writers with nothing between query and file, the floor an export "
            "through a server can approach. Runs alternate; medians compared."
        ),
        "results": results,
        "metrics": metrics,
        "notes": notes,
    }


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
