"""Data plane (issues 2 and 11): `SELECT *` of a 10M-row table, agentdata vs its ceilings.

Three subjects fetch the same 5-column table (BIGINT, INTEGER, DOUBLE, VARCHAR,
TIMESTAMP; ~46 bytes/row as Arrow):

(a) `agentdata serve`: ticket, SQL check, DuckDB reader, stream, reader token. Its
    results cache is off here: this measures the scan path (see `result_cache`).
(b) a bare `pyarrow.flight` server over the same table pre-built in memory, in the
    same batch size: the transport ceiling (no SQL, no auth, no Python per batch).
(c) DuckDB in-process reading the same table to the end as Arrow batches: the engine
    ceiling (no network).

One long-lived client process (`benchmarks.common.FetchSession`) connects to all
three once and times only each fetch (GetFlightInfo to the last batch read, batches
dropped as they arrive), in interleaved rounds (a, b, c), (b, c, a), ...: ratios a/b
and a/c are medians of per-round ratios. Around every fetch the scenario reads the
server's CPU seconds (user + system, all threads): unlike wall time, CPU per fetch
hardly moves with other load, and it is what limits many concurrent scans. The
server's peak RSS growth is sampled during every (a) fetch.

Then 4 client processes scan at once, against agentdata and against the bare server
in turn: aggregate throughput (all bytes / time from the common start to the last
batch) of agentdata over the bare server's.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

from benchmarks import bare_flight
from benchmarks import common as c

NAME = "dataplane"
#: Issue 11 aims: wall time within 1.2x of the bare Flight ceiling (long-lived client),
#: at most 3x its server CPU per fetch, and 4 concurrent scans at >= 0.8x its aggregate.
AIM_WALL_RATIO = 1.2
AIM_CPU_RATIO = 3.0
AIM_CONCURRENT_RATIO = 0.8
CONCURRENT_SCANS = 4
AIM_RSS_MB = 300.0


def run(quick: bool) -> dict[str, Any]:
    rows = 2_000_000 if quick else 10_000_000
    runs = 3 if quick else 5
    concurrent_rounds = 1 if quick else 3
    batch_rows = 65_536
    table = c.table_name(rows)
    sql = f"SELECT * FROM {table}"
    data_dir = c.dataset([rows])
    ref = c.reference_db(rows)
    notes: list[str] = [c.load_note() + " (before)"]

    server = c.start_server(data_dir, {"BATCH_ROWS": str(batch_rows), "RESULT_CACHE_BYTES": "0"})
    bare_proc, bare_port = bare_flight.start(str(ref), sql, batch_rows)
    bare_url = f"grpc://127.0.0.1:{bare_port}"
    rss_traces: list[list[tuple[float, int]]] = []
    rss_growth: list[int] = []
    cpu: dict[str, list[float]] = {"a": [], "b": []}
    info: dict[str, Any] = {}
    loads: dict[str, float] = {}
    concurrent: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    try:
        token = server.create_token("reader", name="bench-dataplane")
        pids = {"a": server.pid, "b": bare_proc.pid}
        with c.FetchSession(
            {"a": server.flight_url, "b": bare_url, "c": f"duckdb:{ref}"},
            {"a": token},
            batch_rows=batch_rows,
        ) as session:
            # Warm every subject (DuckDB's buffer pool, gRPC channels) outside the timings.
            for name in ("a", "b", "c"):
                session.fetch(name, sql)

            def subject(name: str) -> float:
                pid = pids.get(name)
                before = c.cpu_seconds(pid) if pid else 0.0
                if name == "a":
                    with c.RssSampler(server.pid, 0.01) as sampler:
                        result = session.fetch(name, sql)
                    rss_traces.append(sampler.samples)
                    rss_growth.append(sampler.peak - sampler.first)
                    info["bytes"], info["cache"] = result["bytes"], result.get("cache")
                else:
                    result = session.fetch(name, sql)
                if pid:
                    cpu[name].append(c.cpu_seconds(pid) - before)
                if result["rows"] != rows:
                    raise RuntimeError(f"({name}) sent {result['rows']} rows, expected {rows}")
                return float(result["seconds"])

            times = c.interleaved(runs, {n: functools.partial(subject, n) for n in ("a", "b", "c")})
        loads["single"] = c.load1()

        def scans(name: str) -> dict[str, Any]:
            url, tok = (server.flight_url, token) if name == "a" else (bare_url, "")
            got = _concurrent_scans(url, tok, sql, rows, pids[name])
            concurrent[name].append(got)
            return got

        c.interleaved(concurrent_rounds, {"a": lambda: scans("a"), "b": lambda: scans("b")})
        loads["concurrent"] = c.load1()
    finally:
        bare_proc.kill()
        bare_proc.wait()
        server.stop()
    notes.append(c.load_note() + " (after)")
    if info.get("cache") == "hit":
        raise RuntimeError("(a) was answered from the results cache; this measures scans")

    a_over_b = [a / b for a, b in zip(times["a"], times["b"], strict=True)]
    a_over_c = [a / c_ for a, c_ in zip(times["a"], times["c"], strict=True)]
    mb = info["bytes"] / c.MB
    med = {k: statistics.median(v) for k, v in times.items()}
    growth_mb = max(rss_growth) / c.MB
    # Mean, not median: the kernel counts CPU time in 10 ms ticks, which is coarse next
    # to the bare server's few tens of ms per fetch; the total over all runs is exact
    # to one tick per fetch.
    cpu_med = {k: statistics.fmean(v) for k, v in cpu.items()}
    cpu_ratio = cpu_med["a"] / cpu_med["b"]
    wall_ratio = statistics.median(a_over_b)
    agg = {k: [r["mb_per_s"] for r in v] for k, v in concurrent.items()}
    agg_ratios = [a / b for a, b in zip(agg["a"], agg["b"], strict=True)]
    agg_ratio = statistics.median(agg_ratios)
    conc_cpu = {k: statistics.median(r["cpu_per_scan_s"] for r in v) for k, v in concurrent.items()}
    single, many = loads["single"], loads["concurrent"]
    metrics = [
        c.metric("(a) agentdata SELECT *", med["a"], "s", spread=_spread(times["a"]), load=single),
        c.metric("(b) bare pyarrow.flight", med["b"], "s", spread=_spread(times["b"]), load=single),
        c.metric("(c) DuckDB in-process", med["c"], "s", spread=_spread(times["c"]), load=single),
        c.metric(
            "wall time a / b (transport ceiling, long-lived client)",
            wall_ratio,
            "x",
            reference_label="(b)",
            ratio=wall_ratio,
            aim=f"<= {AIM_WALL_RATIO}",
            met=wall_ratio <= AIM_WALL_RATIO,
            spread=_spread(a_over_b),
            load=single,
        ),
        c.metric(
            "wall time a / c (in-process DuckDB)",
            statistics.median(a_over_c),
            "x",
            reference_label="(c)",
            ratio=statistics.median(a_over_c),
            spread=_spread(a_over_c),
            load=single,
        ),
        c.metric(
            "throughput (a)",
            mb / med["a"],
            "MB/s",
            reference=mb / med["b"],
            reference_label="(b)",
            load=single,
        ),
        c.metric(
            "server CPU seconds per fetch (mean), (a)",
            cpu_med["a"],
            "s",
            reference=cpu_med["b"],
            reference_label="(b)",
            aim=f"ratio <= {AIM_CPU_RATIO:g}",
            met=cpu_ratio <= AIM_CPU_RATIO,
            spread=_spread(cpu["a"]),
            load=single,
        ),
        c.metric(
            f"{CONCURRENT_SCANS} concurrent scans: aggregate throughput (a)",
            statistics.median(agg["a"]),
            "MB/s",
            reference=statistics.median(agg["b"]),
            reference_label=f"(b), {CONCURRENT_SCANS} clients",
            ratio=agg_ratio,
            aim=f">= {AIM_CONCURRENT_RATIO}",
            met=agg_ratio >= AIM_CONCURRENT_RATIO,
            spread=_spread(agg["a"]),
            load=many,
        ),
        c.metric(
            f"{CONCURRENT_SCANS} concurrent scans: server CPU seconds per scan (a)",
            conc_cpu["a"],
            "s",
            reference=conc_cpu["b"],
            reference_label="(b)",
            load=many,
        ),
        c.metric(
            "server peak RSS growth during (a)",
            growth_mb,
            "MB",
            aim=f"< {AIM_RSS_MB:g}",
            met=growth_mb < AIM_RSS_MB,
            spread=(min(rss_growth) / c.MB, growth_mb),
            load=single,
        ),
    ]
    notes.append(
        "Server CPU seconds are read from /proc around each fetch (user + system, all "
        "threads of the server process, in 10 ms ticks, hence means over the runs); the "
        "bare server's CPU is the floor for sending these bytes over gRPC at all."
    )
    if quick:
        notes.append(f"quick mode: {rows:,} rows, {runs} rounds, one round of concurrent scans")
    plots = [_plot(times, rss_traces, rows, mb)]
    return {
        "name": NAME,
        "title": "Data plane: SELECT * of a wide table, agentdata vs transport and engine ceilings",
        "measures": (
            "Wall time and server CPU seconds for one long-lived client to fetch every row "
            "of one table (GetFlightInfo + DoGet, batches dropped as read), the server's RSS "
            f"growth, and the aggregate throughput of {CONCURRENT_SCANS} client processes "
            "scanning at once."
        ),
        "data": (
            f"{table}: {rows:,} rows x 5 columns (BIGINT, INTEGER, DOUBLE, VARCHAR, "
            f"TIMESTAMP), {mb:.0f} MB as Arrow, {batch_rows:,}-row batches"
        ),
        "reference": (
            "(b) bare pyarrow.flight RecordBatchStream over the same table in memory "
            "(transport ceiling), for single fetches and for the concurrent scans; (c) "
            "DuckDB in-process to Arrow on a copy of the table (engine ceiling). "
            "Interleaved, paired per round, all through the same client."
        ),
        "results": {
            "rows": rows,
            "bytes": info["bytes"],
            "runs": runs,
            "seconds": {k: c.stats(v) for k, v in times.items()},
            "ratio_a_over_b": c.stats(a_over_b),
            "ratio_a_over_c": c.stats(a_over_c),
            "server_cpu_seconds": {k: c.stats(v) for k, v in cpu.items()},
            "server_cpu_ratio_a_over_b": cpu_ratio,
            "concurrent_scans": concurrent,
            "concurrent_ratio_a_over_b": c.stats(agg_ratios),
            "rss_growth_mb": c.stats([g / c.MB for g in rss_growth]),
            "load": loads,
        },
        "metrics": metrics,
        "plots": plots,
        "notes": notes,
    }


def _concurrent_scans(url: str, token: str, sql: str, rows: int, pid: int) -> dict[str, Any]:
    """`CONCURRENT_SCANS` client processes fetch `sql` at once (started together)."""
    cpu_at_go: list[float] = []
    results = c.run_clients(
        [["fetch", "--url", url, "--token", token, "--sql", sql] for _ in range(CONCURRENT_SCANS)],
        timeout=900,
        on_go=lambda: cpu_at_go.append(c.cpu_seconds(pid)),
    )
    cpu = c.cpu_seconds(pid) - cpu_at_go[0]
    for r in results:
        if r["rows"] != rows:
            raise RuntimeError(f"a concurrent scan returned {r['rows']} rows, expected {rows}")
    wall = max(r["end"] for r in results) - results[0]["go"]
    total = sum(r["bytes"] for r in results)
    return {
        "wall_s": wall,
        "per_stream_s": [r["seconds"][0] for r in results],
        "mb_per_s": total / c.MB / wall,
        "cpu_s": cpu,
        "cpu_per_scan_s": cpu / CONCURRENT_SCANS,
    }


def _spread(values: list[float]) -> tuple[float, float]:
    return (min(values), max(values))


def _plot(
    times: dict[str, list[float]], rss: list[list[tuple[float, int]]], rows: int, mb: float
) -> str:
    plt = c.plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = {"a": "(a) agentdata", "b": "(b) bare Flight", "c": "(c) DuckDB in-proc"}
    names = list(labels)
    meds = [statistics.median(times[n]) for n in names]
    errs = [
        [m - min(times[n]) for m, n in zip(meds, names, strict=True)],
        [max(times[n]) - m for m, n in zip(meds, names, strict=True)],
    ]
    left.bar([labels[n] for n in names], meds, yerr=errs, capsize=6, color=["C0", "C2", "C1"])
    left.set_ylabel("seconds (median, min-max)")
    left.set_title(f"SELECT * of {rows / 1e6:g}M rows ({mb:.0f} MB Arrow)")
    for i, trace in enumerate(rss):
        if not trace:
            continue
        base = trace[0][1]
        right.plot(
            [t for t, _ in trace], [(r - base) / c.MB for _, r in trace], label=f"run {i + 1}"
        )
    right.axhline(AIM_RSS_MB, color="red", linestyle="--", label="aim")
    right.set_xlabel("seconds since the fetch started")
    right.set_ylabel("server RSS growth (MB)")
    right.set_title("agentdata server RSS during (a)")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = c.RESULTS / "dataplane.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
