"""Concurrency (issue 6): agent-style small queries at 1, 4, 16 and 64 clients, and 4 big scans.

Small queries: each client runs a closed loop (next query as soon as the last one
is read) over a mix of point lookups (`WHERE id = k`), small aggregates (GROUP BY
over 10,000 rows) and `LIMIT 100` scans, with fresh literals each call, for a fixed
time; all clients start together. Clients are threads spread over up to 4 client
processes. Three drivers run the same mix:

- ``adbc``: ADBC Flight SQL (`adbc_driver_flightsql.dbapi`), what BI tools and
  notebooks use; the issue's aim applies to it.
- ``flight``: plain `pyarrow.flight` (GetFlightInfo + DoGet), same server.
- ``duckdb``: the reference: the same queries in-process on a copy of the table,
  same number of threads, no server and no protocol.

Big scans: 4 client processes each `SELECT *` a 10M-row table at once, against one
scan alone: aggregate throughput and the ratio to a single stream.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import common as c

NAME = "concurrency"
AIM_QPS = 1500.0
AIM_P99_MS = 25.0
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


def scans(url: str, token: str, sql: str, rows: int, streams: int) -> dict[str, Any]:
    """`streams` client processes fetch `sql` at once; aggregate throughput."""
    results = c.run_clients(
        [["fetch", "--url", url, "--token", token, "--sql", sql] for _ in range(streams)],
        timeout=900,
    )  # fmt: skip
    for r in results:
        if r["rows"] != rows:
            raise RuntimeError(f"a scan returned {r['rows']} rows, expected {rows}")
    wall = max(r["end"] for r in results) - results[0]["go"]
    total_bytes = sum(r["bytes"] for r in results)
    return {
        "streams": streams,
        "wall_s": wall,
        "per_stream_s": [r["seconds"][0] for r in results],
        "rows_per_s": rows * streams / wall,
        "mb_per_s": total_bytes / c.MB / wall,
    }


def run(quick: bool) -> dict[str, Any]:
    small_rows = 1_000_000
    scan_rows = 2_000_000 if quick else 10_000_000
    seconds = 1.5 if quick else 8.0
    scan_runs = 1 if quick else 3
    small_table, scan_table = c.table_name(small_rows), c.table_name(scan_rows)
    data_dir = c.dataset([small_rows, scan_rows])
    ref = str(c.reference_db(small_rows))
    notes = [
        c.load_note() + " (before)",
        "Clients run on the same 2 cores as the server, so every client's CPU is "
        "taken from the server: these are lower bounds for a server on its own machine.",
    ]
    if quick:
        notes.append(f"quick mode: 1 and 16 clients only, {seconds:g} s each; one scan round")
    levels: list[dict[str, Any]] = []
    scan_results: dict[str, list[dict[str, Any]]] = {"1": [], "4": []}
    with c.running_server(data_dir) as server:
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
        for level in (1, 16) if quick else LEVELS:
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
                levels.append(lv)
        sql = f"SELECT * FROM {scan_table}"
        c.warm(server.flight_url, sql, token)
        for _ in range(scan_runs):
            scan_results["1"].append(scans(server.flight_url, token, sql, scan_rows, 1))
            scan_results["4"].append(scans(server.flight_url, token, sql, scan_rows, 4))
    notes.append(c.load_note() + " (after)")

    metrics = []
    for lv in levels:
        if lv["driver"] == "duckdb":
            continue
        ref_lv = next(
            x for x in levels if x["driver"] == "duckdb" and x["clients"] == lv["clients"]
        )
        aim16 = lv["clients"] == 16
        label = {"adbc": "ADBC Flight SQL", "flight": "pyarrow.flight"}[lv["driver"]]
        metrics.append(
            c.metric(
                f"{label}, {lv['clients']} clients: throughput",
                lv["qps"],
                "q/s",
                reference=ref_lv["qps"],
                reference_label="in-process",
                aim=f">= {AIM_QPS:g}" if aim16 else None,
                met=lv["qps"] >= AIM_QPS if aim16 else None,
            )
        )
        metrics.append(
            c.metric(
                f"{label}, {lv['clients']} clients: p99 latency (p50 {_ms(lv['p50_ms'])})",
                lv["p99_ms"],
                "ms",
                reference=ref_lv["p99_ms"],
                reference_label="in-process",
                aim=f"< {AIM_P99_MS:g}" if aim16 else None,
                met=(lv["p99_ms"] or 1e9) < AIM_P99_MS if aim16 else None,
            )
        )
        if lv["errors"]:
            notes.append(
                f"{label} at {lv['clients']} clients: {lv['errors']} errors, e.g. {lv['first_error']}"
            )
    if adbc_error:
        metrics.insert(
            0,
            c.metric(
                "ADBC Flight SQL, 16 clients: throughput (not runnable: see notes)",
                None,
                "q/s",
                aim=f">= {AIM_QPS:g}",
                met=False,
            ),
        )
    one = statistics.median(r["mb_per_s"] for r in scan_results["1"])
    four = [r["mb_per_s"] for r in scan_results["4"]]
    metrics.append(
        c.metric(
            f"4 concurrent {scan_rows / 1e6:g}M-row scans: aggregate",
            statistics.median(four),
            "MB/s",
            reference=one,
            reference_label="1 scan alone",
            spread=(min(four), max(four)),
        )
    )
    plots = [_plot(levels)]
    return {
        "name": NAME,
        "title": "Concurrency: small agent queries at 1-64 clients, and 4 concurrent big scans",
        "measures": (
            "Closed-loop throughput (queries/s) and p50/p95/p99 latency of a mix of point "
            "lookups, small aggregates and LIMIT 100 scans, per number of concurrent "
            f"clients, {seconds:g} s per level; aggregate MB/s of 4 simultaneous full scans."
        ),
        "data": (
            f"{small_table} ({small_rows:,} rows) for small queries; {scan_table} "
            f"({scan_rows:,} rows, ~{scan_rows * 46 / 1e6:.0f} MB Arrow) for scans"
        ),
        "reference": (
            "small queries: the same mix in-process on DuckDB with the same thread count "
            "(no server, no protocol); scans: one scan alone on the same server"
        ),
        "results": {"levels": levels, "scans": scan_results, "adbc_error": adbc_error},
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
    left.axhline(AIM_QPS, color="red", linestyle="--", linewidth=0.8, label="aim at 16")
    right.axhline(AIM_P99_MS, color="red", linestyle="--", linewidth=0.8, label="p99 aim at 16")
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
