"""Data plane (issue 2): `SELECT *` of a 10M-row table through agentdata vs its ceilings.

Three subjects fetch the same 5-column table (BIGINT, INTEGER, DOUBLE, VARCHAR,
TIMESTAMP; ~46 bytes/row as Arrow), each timed by a separate client process from
GetFlightInfo to the last batch read (batches are dropped as they arrive):

(a) `agentdata serve`: ticket, SQL check, DuckDB reader, GeneratorStream, reader token.
(b) a bare `pyarrow.flight` server over the same table pre-built in memory, in the
    same batch size: the transport ceiling (no SQL, no auth, no Python per batch).
(c) DuckDB in-process reading the same table to the end as Arrow batches: the engine
    ceiling (no network).

Runs are interleaved (a, b, c), (b, c, a), ... and paired: the ratios a/b and a/c are
medians of per-round ratios. Server peak RSS growth is sampled during every (a) run
against the RSS just before it; server CPU seconds per fetch are reported for (a)
and (b) because CPU time, unlike wall time, hardly moves with other load.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import bare_flight
from benchmarks import common as c

NAME = "dataplane"
AIM_RATIO_B = 1.15
AIM_RSS_MB = 300.0


def run(quick: bool) -> dict[str, Any]:
    rows = 2_000_000 if quick else 10_000_000
    runs = 3 if quick else 5
    batch_rows = 65_536
    table = c.table_name(rows)
    sql = f"SELECT * FROM {table}"
    data_dir = c.dataset([rows])
    ref = c.reference_db(rows)
    notes: list[str] = [c.load_note() + " (before)"]

    server = c.start_server(data_dir, {"BATCH_ROWS": str(batch_rows)})
    bare_proc, bare_port = bare_flight.start(str(ref), f"SELECT * FROM {table}", batch_rows)
    bare_url = f"grpc://127.0.0.1:{bare_port}"
    rss_traces: list[list[tuple[float, int]]] = []
    rss_growth: list[int] = []
    cpu: dict[str, list[float]] = {"a": [], "b": []}
    info: dict[str, Any] = {}
    try:
        token = server.create_token("reader", name="bench-dataplane")
        a_args = ["fetch", "--url", server.flight_url, "--token", token, "--sql", sql]
        b_args = ["fetch", "--url", bare_url, "--sql", sql]
        # Warm both servers (DuckDB's buffer pool, gRPC channels) outside the timings.
        c.warm(server.flight_url, sql, token)
        c.warm(bare_url, sql)

        def subject_a() -> float:
            before_cpu = c.cpu_seconds(server.pid)
            with c.RssSampler(server.pid, 0.01) as sampler:
                result = c.run_client(a_args)
            cpu["a"].append(c.cpu_seconds(server.pid) - before_cpu)
            rss_traces.append(sampler.samples)
            rss_growth.append(sampler.peak - sampler.first)
            info["rows"], info["bytes"] = result["rows"], result["bytes"]
            return float(result["seconds"][0])

        def subject_b() -> float:
            before_cpu = c.cpu_seconds(bare_proc.pid)
            result = c.run_client(b_args)
            cpu["b"].append(c.cpu_seconds(bare_proc.pid) - before_cpu)
            if result["rows"] != rows:
                raise RuntimeError(f"bare server sent {result['rows']} rows, expected {rows}")
            return float(result["seconds"][0])

        def subject_c() -> float:
            result = c.run_client(
                ["duckdb", "--db", str(ref), "--sql", sql, "--batch-rows", str(batch_rows)]
            )
            return float(result["seconds"][0])

        times = c.interleaved(runs, {"a": subject_a, "b": subject_b, "c": subject_c})
    finally:
        bare_proc.kill()
        bare_proc.wait()
        server.stop()
    notes.append(c.load_note() + " (after)")
    if info.get("rows") != rows:
        raise RuntimeError(f"agentdata sent {info.get('rows')} rows, expected {rows}")

    a_over_b = [a / b for a, b in zip(times["a"], times["b"], strict=True)]
    a_over_c = [a / c_ for a, c_ in zip(times["a"], times["c"], strict=True)]
    mb = info["bytes"] / c.MB
    med = {k: statistics.median(v) for k, v in times.items()}
    growth_mb = max(rss_growth) / c.MB
    cpu_ratio = statistics.median(cpu["a"]) / statistics.median(cpu["b"])
    metrics = [
        c.metric("(a) agentdata SELECT *", med["a"], "s", spread=_spread(times["a"])),
        c.metric("(b) bare pyarrow.flight", med["b"], "s", spread=_spread(times["b"])),
        c.metric("(c) DuckDB in-process", med["c"], "s", spread=_spread(times["c"])),
        c.metric(
            "time a / b (transport ceiling)",
            statistics.median(a_over_b),
            "x",
            reference_label="(b)",
            ratio=statistics.median(a_over_b),
            aim=f"<= {AIM_RATIO_B}",
            met=statistics.median(a_over_b) <= AIM_RATIO_B,
            spread=_spread(a_over_b),
        ),
        c.metric(
            "time a / c (in-process DuckDB)",
            statistics.median(a_over_c),
            "x",
            reference_label="(c)",
            ratio=statistics.median(a_over_c),
            spread=_spread(a_over_c),
        ),
        c.metric(
            "throughput (a)", mb / med["a"], "MB/s", reference=mb / med["b"], reference_label="(b)"
        ),
        c.metric(
            "server CPU seconds per fetch a / b",
            cpu_ratio,
            "x",
            reference_label="(b)",
            ratio=cpu_ratio,
        ),
        c.metric(
            "server peak RSS growth during (a)",
            growth_mb,
            "MB",
            aim=f"< {AIM_RSS_MB:g}",
            met=growth_mb < AIM_RSS_MB,
            spread=(min(rss_growth) / c.MB, growth_mb),
        ),
    ]
    plots = [_plot(times, rss_traces, rows, mb)]
    return {
        "name": NAME,
        "title": "Data plane: SELECT * of a wide table, agentdata vs transport and engine ceilings",
        "measures": (
            "Wall time for a separate client process to fetch every row of one table "
            "(GetFlightInfo + DoGet, batches dropped as read), and the server's RSS growth."
        ),
        "data": (
            f"{table}: {rows:,} rows x 5 columns (BIGINT, INTEGER, DOUBLE, VARCHAR, "
            f"TIMESTAMP), {mb:.0f} MB as Arrow, {batch_rows:,}-row batches"
        ),
        "reference": (
            "(b) bare pyarrow.flight RecordBatchStream over the same table in memory "
            "(transport ceiling); (c) DuckDB in-process to Arrow on a copy of the table "
            "(engine ceiling). Interleaved, paired per round."
        ),
        "results": {
            "rows": rows,
            "bytes": info["bytes"],
            "runs": runs,
            "seconds": {k: c.stats(v) for k, v in times.items()},
            "ratio_a_over_b": c.stats(a_over_b),
            "ratio_a_over_c": c.stats(a_over_c),
            "server_cpu_seconds": {k: c.stats(v) for k, v in cpu.items()},
            "rss_growth_mb": c.stats([g / c.MB for g in rss_growth]),
        },
        "metrics": metrics,
        "plots": plots,
        "notes": notes,
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
    right.set_xlabel("seconds since client start")
    right.set_ylabel("server RSS growth (MB)")
    right.set_title("agentdata server RSS during (a)")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = c.RESULTS / "dataplane.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
