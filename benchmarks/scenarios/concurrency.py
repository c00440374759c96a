"""Concurrency (issues 6 and 11): agent-style small queries at 1, 4, 16 and 64 clients.

Small queries: each client runs a closed loop (next query as soon as the last one
is read) over a mix of point lookups (`WHERE id = k`), small aggregates (GROUP BY
over 10,000 rows) and `LIMIT 100` scans, with fresh literals each call, for a fixed
time; all clients start together. Clients are threads spread over up to 4 client
processes. Three drivers run the same mix:

- ``adbc``: ADBC Flight SQL (`adbc_driver_flightsql.dbapi`), what BI tools and
  notebooks use.
- ``flight``: plain `pyarrow.flight` (GetFlightInfo + DoGet), same server.
- ``duckdb``: the reference: the same queries in-process on a copy of the table,
  same number of threads, no server and no protocol.

Aims (issue 11) at 16 clients, for both protocols: throughput at least half the
in-process reference's at the same concurrency, and p99 at most 5x p50. Concurrent
big scans are measured in `dataplane`, beside the bare Flight server.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common as c

NAME = "concurrency"
AIM_QPS_RATIO = 0.5  # throughput / in-process DuckDB's, 16 clients
AIM_P99_OVER_P50 = 5.0
AIM_CLIENTS = 16
LEVELS = (1, 4, 16, 64)


def _split(level: int, max_procs: int) -> tuple[int, int]:
    """(processes, threads per process) for a number of clients."""
    procs = min(level, max_procs)
    return procs, level // procs


def small_queries(
    driver: str,
    level: int,
    seconds: float,
    *,
    url: str,
    token: str,
    db: str,
    table: str,
    rows: int,
    max_procs: int = 4,
) -> dict[str, Any]:
    procs, threads = _split(level, max_procs)
    args = [
        ["small", "--driver", driver, "--table", table, "--rows", rows, "--threads", threads,
         "--seconds", seconds, "--seed", p + 1,
         *(["--url", url, "--token", token] if driver != "duckdb" else ["--db", db])]
        for p in range(procs)
    ]  # fmt: skip
    results = c.run_clients([[str(x) for x in a] for a in args], timeout=seconds + 180)
    lat = sorted(x for r in results for x in r["latencies_ms"])
    kinds = [k for r in results for k in r["kinds"]]
    by_kind = {}
    for kind in ("point", "aggregate", "limit100"):
        ks = sorted(
            x
            for r in results
            for x, k in zip(r["latencies_ms"], r["kinds"], strict=True)
            if k == kind
        )
        by_kind[kind] = {"count": len(ks), "p50_ms": c.percentile(ks, 50)}
    errors = sum(r["errors"] for r in results)
    return {
        "driver": driver,
        "clients": level,
        "processes": procs,
        "threads_per_process": threads,
        "seconds": seconds,
        "queries": len(lat),
        "qps": len(lat) / seconds,
        "p50_ms": c.percentile(lat, 50),
        "p95_ms": c.percentile(lat, 95),
        "p99_ms": c.percentile(lat, 99),
        "max_ms": lat[-1] if lat else None,
        "errors": errors,
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "by_kind": by_kind,
        "mix": {k: kinds.count(k) for k in set(kinds)},
    }


def _why(e: Exception) -> str:
    """The last line of a client's failure (its exception), shortened."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return (lines[-1] if lines else str(e))[:400]


def run(quick: bool) -> dict[str, Any]:
    small_rows = 1_000_000
    seconds = 3.0 if quick else 8.0
    small_table = c.table_name(small_rows)
    data_dir = c.dataset([small_rows])
    ref = str(c.reference_db(small_rows))
    notes = [
        c.load_note() + " (before)",
        "Clients run on the same 2 cores as the server, so every client's CPU is "
        "taken from the server: these are lower bounds for a server on its own machine.",
        "The server's results cache is off here (RESULT_CACHE_BYTES=0): the in-process "
        "reference has none, and the mix's LIMIT 100 texts repeat (1,000 distinct), so a "
        "cache would answer some of them for free; `result_cache` measures the cache.",
    ]
    if quick:
        notes.append(f"quick mode: 1 and 16 clients only, {seconds:g} s each")
    levels: list[dict[str, Any]] = []
    # 64 clients share one token: admission (agentdata.admission) must let them all in.
    no_admission_limits = {"TOKEN_MAX_CONCURRENT": "256", "MAX_CONCURRENT_QUERIES": "256"}
    with c.running_server(data_dir, {"RESULT_CACHE_BYTES": "0", **no_admission_limits}) as server:
        token = server.create_token("reader", name="bench-concurrency")
        adbc_error: str | None = None
        drivers = ["adbc", "flight", "duckdb"]
        common = {
            "url": server.flight_url,
            "token": token,
            "db": ref,
            "table": small_table,
            "rows": small_rows,
            "max_procs": 2 if quick else 4,  # fewer client start-ups in quick mode
        }
        for level in (1, AIM_CLIENTS) if quick else LEVELS:
            for driver in list(drivers):
                c.log(f"concurrency: {driver} x {level}")
                try:
                    lv = small_queries(driver, level, seconds, **common)  # type: ignore[arg-type]
                except RuntimeError as e:
                    if driver != "adbc":
                        raise
                    lv = {"errors": 1, "first_error": _why(e), "queries": 0}
                if driver == "adbc" and (lv["errors"] and not lv["queries"]):
                    # Flight SQL not answering: say so once, measure the others.
                    adbc_error = lv["first_error"] or "no query completed"
                    drivers.remove("adbc")
                    notes.append(
                        f"ADBC Flight SQL could not run a query, so it is not measured: {adbc_error}"
                    )
                    continue
                lv["load"] = c.load1()
                levels.append(lv)
    notes.append(c.load_note() + " (after)")

    metrics = []
    for lv in levels:
        if lv["driver"] == "duckdb":
            continue
        ref_lv = next(
            x for x in levels if x["driver"] == "duckdb" and x["clients"] == lv["clients"]
        )
        aimed = lv["clients"] == AIM_CLIENTS
        label = {"adbc": "ADBC Flight SQL", "flight": "pyarrow.flight"}[lv["driver"]]
        qps_ratio = lv["qps"] / ref_lv["qps"] if ref_lv["qps"] else None
        metrics.append(
            c.metric(
                f"{label}, {lv['clients']} clients: throughput",
                lv["qps"],
                "q/s",
                reference=ref_lv["qps"],
                reference_label="in-process DuckDB, same threads",
                aim=f"ratio >= {AIM_QPS_RATIO:g}" if aimed else None,
                met=(qps_ratio or 0) >= AIM_QPS_RATIO if aimed else None,
                load=lv["load"],
            )
        )
        tail = lv["p99_ms"] / lv["p50_ms"] if lv["p99_ms"] and lv["p50_ms"] else None
        metrics.append(
            c.metric(
                f"{label}, {lv['clients']} clients: p99 latency (p50 {_ms(lv['p50_ms'])})",
                lv["p99_ms"],
                "ms",
                reference=lv["p50_ms"],
                reference_label="its p50",
                ratio=tail,
                aim=f"p99/p50 <= {AIM_P99_OVER_P50:g}" if aimed else None,
                met=(tail or 1e9) <= AIM_P99_OVER_P50 if aimed else None,
                load=lv["load"],
            )
        )
        if lv["errors"]:
            notes.append(
                f"{label} at {lv['clients']} clients: {lv['errors']} errors, e.g. {lv['first_error']}"
            )
    for lv in levels:
        if lv["driver"] == "duckdb":
            metrics.append(
                c.metric(
                    f"in-process DuckDB, {lv['clients']} clients: throughput "
                    f"(p50 {_ms(lv['p50_ms'])}, p99 {_ms(lv['p99_ms'])})",
                    lv["qps"],
                    "q/s",
                    load=lv["load"],
                )
            )
    if adbc_error:
        metrics.insert(
            0,
            c.metric(
                f"ADBC Flight SQL, {AIM_CLIENTS} clients: throughput (not runnable: see notes)",
                None,
                "q/s",
                aim=f"ratio >= {AIM_QPS_RATIO:g}",
                met=False,
            ),
        )
    plots = [_plot(levels)]
    return {
        "name": NAME,
        "title": "Concurrency: small agent queries at 1-64 clients",
        "measures": (
            "Closed-loop throughput (queries/s) and p50/p95/p99 latency of a mix of point "
            "lookups, small aggregates and LIMIT 100 scans, per number of concurrent "
            f"clients, {seconds:g} s per level."
        ),
        "data": f"{small_table} ({small_rows:,} rows; no primary key, as in the issue's mix)",
        "reference": (
            "the same mix in-process on DuckDB with the same thread count (no server, no "
            "protocol); for tail latency, the subject's own p50"
        ),
        "results": {"levels": levels, "adbc_error": adbc_error},
        "metrics": metrics,
        "plots": plots,
        "notes": notes,
    }


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _plot(levels: list[dict[str, Any]]) -> str:
    plt = c.plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {
        "adbc": ("C0", "ADBC Flight SQL"),
        "flight": ("C2", "pyarrow.flight"),
        "duckdb": ("C7", "DuckDB in-process"),
    }
    for driver, (color, label) in styles.items():
        rows = [lv for lv in levels if lv["driver"] == driver]
        if not rows:
            continue
        xs = [lv["clients"] for lv in rows]
        left.plot(xs, [lv["qps"] for lv in rows], "o-", color=color, label=label)
        for q, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            right.plot(xs, [lv[q] for lv in rows], style, color=color, marker=".",
                       label=f"{label} {q[:3]}")  # fmt: skip
    ref16 = [lv["qps"] for lv in levels if lv["driver"] == "duckdb" and lv["clients"] == 16]
    if ref16:
        left.axhline(ref16[0] * AIM_QPS_RATIO, color="red", linestyle="--", linewidth=0.8,
                     label=f"aim at 16 ({AIM_QPS_RATIO:g}x in-process)")  # fmt: skip
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(LEVELS), [str(x) for x in LEVELS])
        ax.set_xlabel("concurrent clients")
    left.set_yscale("log")
    left.set_ylabel("queries / s")
    left.set_title("Small queries: throughput")
    right.set_yscale("log")
    right.set_ylabel("latency (ms)")
    right.set_title("Small queries: latency p50 / p95 / p99")
    left.legend(fontsize=8)
    right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = c.RESULTS / "concurrency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
