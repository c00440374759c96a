"""Governance (issue 17): what the audit log costs, and whether admission is fair.

- **Audit cost.** The `concurrency` scenario's small-query mix (point lookups, small
  aggregates, LIMIT 100 scans; plain Flight, 16 clients, results cache off) against a
  server with the audit log on and one with it off (`AUDIT_ENABLED`), in interleaved
  rounds (on, off, off, on, ...). Aim: throughput with audit >= 0.95x without.
- **Fair admission.** One token floods the server with 32 concurrent heavy queries
  (whole-table GROUP BY, clients back off by the retry hint when refused); another
  token runs the small-query mix serially. Its p99 under the flood against its p99 on
  an idle server. The server runs with TOKEN_MAX_CONCURRENT=2 (each token at most 2
  queries at once). Aim: loaded p99 <= 3x unloaded p99. In full mode, the same flood
  without a per-token limit shows what admission prevents.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

import httpx

from benchmarks import common as c
from benchmarks.scenarios.concurrency import small_queries

NAME = "governance"
AIM_AUDIT_RATIO = 0.95
AIM_P99_RATIO = 3.0
FLOOD_THREADS = 32
NO_LIMITS = {"TOKEN_MAX_CONCURRENT": "256", "MAX_CONCURRENT_QUERIES": "256"}


def _token(server: c.BenchServer, name: str) -> str:
    r = httpx.post(
        f"{server.http_url}/api/v1/tokens",
        json={"name": name, "role": "reader"},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["token"])


def _mix(
    server: c.BenchServer, token: str, clients: int, seconds: float, table: str, rows: int
) -> dict[str, Any]:
    return small_queries(
        "flight", clients, seconds, url=server.flight_url, token=token, db="", table=table,
        rows=rows, max_procs=2,
    )  # fmt: skip


def _flooded(
    server: c.BenchServer, table: str, rows: int, seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The victim's mix while another token floods; (victim result, flood counts)."""
    flooder = _token(server, "bench-flooder")
    victim = _token(server, "bench-victim")
    flood = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.flood", server.flight_url, flooder, table,
         str(FLOOD_THREADS), str(seconds + 15)],
        cwd=c.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert flood.stdout is not None
        if flood.stdout.readline().strip() != "READY":
            raise RuntimeError(
                f"flood client did not start: {flood.stderr.read() if flood.stderr else ''}"
            )
        loaded = _mix(server, victim, 1, seconds, table, rows)
        out, err = flood.communicate(timeout=seconds + 300)
    except BaseException:
        flood.kill()
        raise
    counts = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-500:]}
    return loaded, counts


def run(quick: bool) -> dict[str, Any]:
    rows = 1_000_000
    seconds = 4.0 if quick else 8.0
    table = c.table_name(rows)
    data_dir = c.dataset([rows])
    notes = [c.load_note() + " (before)"]
    # -- audit cost ---------------------------------------------------------------
    order = [True, False] if quick else [True, False, False, True]
    qps: dict[bool, list[float]] = {True: [], False: []}
    rounds = []
    for audit in order:
        c.log(f"governance: audit {'on' if audit else 'off'}, 16 clients")
        settings = {"RESULT_CACHE_BYTES": "0", "AUDIT_ENABLED": str(audit).lower(), **NO_LIMITS}
        with c.running_server(data_dir, settings) as server:
            token = _token(server, "bench-audit")
            lv = _mix(server, token, 16, seconds, table, rows)
        qps[audit].append(lv["qps"])
        rounds.append({"audit": audit, "qps": lv["qps"], "p50_ms": lv["p50_ms"],
                       "p99_ms": lv["p99_ms"], "errors": lv["errors"], "load": c.load1()})  # fmt: skip
    on, off = statistics.median(qps[True]), statistics.median(qps[False])
    audit_load = c.load1()
    # -- fair admission -----------------------------------------------------------------
    c.log("governance: victim unloaded, then under a 32-query flood (TOKEN_MAX_CONCURRENT=2)")
    with c.running_server(
        data_dir, {"RESULT_CACHE_BYTES": "0", "TOKEN_MAX_CONCURRENT": "2"}
    ) as server:
        unloaded = _mix(server, _token(server, "bench-alone"), 1, seconds, table, rows)
        loaded, flood = _flooded(server, table, rows, seconds)
    fair_load = c.load1()
    unfair: dict[str, Any] | None = None
    if not quick:
        c.log("governance: the same flood without a per-token limit (contrast)")
        with c.running_server(data_dir, {"RESULT_CACHE_BYTES": "0", **NO_LIMITS}) as server:
            unfair_loaded, unfair_flood = _flooded(server, table, rows, seconds)
        unfair = {"victim": _brief(unfair_loaded), "flood": unfair_flood}
    notes.append(c.load_note() + " (after)")
    p99_ratio = (
        loaded["p99_ms"] / unloaded["p99_ms"] if loaded["p99_ms"] and unloaded["p99_ms"] else None
    )
    metrics = [
        c.metric(
            "small-query mix, 16 clients, plain Flight: throughput with the audit log",
            on,
            "q/s",
            reference=off,
            reference_label="audit log off",
            aim=f"ratio >= {AIM_AUDIT_RATIO:g}",
            met=off > 0 and on / off >= AIM_AUDIT_RATIO,
            spread=(min(qps[True]), max(qps[True])),
            load=audit_load,
        ),
        c.metric(
            f"victim's small-query p99 under a {FLOOD_THREADS}-query flood by another token "
            f"(unloaded p50 {unloaded['p50_ms']:.1f} ms)",
            loaded["p99_ms"],
            "ms",
            reference=unloaded["p99_ms"],
            reference_label="victim's p99 on an idle server",
            ratio=p99_ratio,
            aim=f"ratio <= {AIM_P99_RATIO:g}",
            met=p99_ratio is not None and p99_ratio <= AIM_P99_RATIO,
            load=fair_load,
        ),
    ]
    if unfair is not None:
        ratio = (
            unfair["victim"]["p99_ms"] / unloaded["p99_ms"]
            if unfair["victim"]["p99_ms"] and unloaded["p99_ms"]
            else None
        )
        metrics.append(
            c.metric(
                "contrast: the same flood without a per-token limit, victim's p99",
                unfair["victim"]["p99_ms"],
                "ms",
                reference=unloaded["p99_ms"],
                reference_label="victim's p99 on an idle server",
                ratio=ratio,
            )
        )
    notes.append(f"flood with admission: {flood}")
    if unfair is not None:
        notes.append(f"flood without per-token limit: {unfair['flood']}")
    return {
        "name": NAME,
        "title": "Governance: audit log cost, fair admission under a flood",
        "measures": (
            "Throughput of the small-query mix with and without the audit log; a small-"
            "query client's p99 while another token floods with heavy queries."
        ),
        "data": f"{table} ({rows:,} rows)",
        "reference": "the same server with the audit log off; the victim alone",
        "results": {
            "audit_rounds": rounds,
            "victim_unloaded": _brief(unloaded),
            "victim_loaded": _brief(loaded),
            "flood": flood,
            "unfair": unfair,
        },
        "metrics": metrics,
        "plots": [],
        "notes": notes,
    }


def _brief(lv: dict[str, Any]) -> dict[str, Any]:
    return {
        k: lv.get(k)
        for k in ("queries", "qps", "p50_ms", "p95_ms", "p99_ms", "errors", "first_error")
    }
