"""Scale curve (issue 6): `SELECT *` time for 1M, 10M and 50M rows through agentdata.

One server, one client process per fetch, sizes interleaved round by round; time per
row at each size is compared with the smallest size's. Streaming cost should grow
linearly with rows (flat time per row, within 20%); a fixed cost per query shows as
a higher time per row at the small end, memory pressure as one at the big end.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import common as c

NAME = "scale"
AIM_FLAT = 1.20


def run(quick: bool) -> dict[str, Any]:
    sizes = [1_000_000, 2_000_000, 10_000_000] if quick else [1_000_000, 10_000_000, 50_000_000]
    runs = 3
    data_dir = c.dataset(sizes)
    notes = [c.load_note() + " (before)"]
    times: dict[int, list[float]] = {}
    peaks: dict[int, list[float]] = {n: [] for n in sizes}
    cpu: dict[int, list[float]] = {n: [] for n in sizes}
    nbytes: dict[int, int] = {}
    with c.running_server(data_dir) as server:
        token = server.create_token("reader", name="bench-scale")

        def subject(n: int) -> Any:
            # Every client first reads the same 1M rows untimed: a fresh process and
            # gRPC channel cost ~0.1 s on their first stream, a fixed cost that is
            # not streaming and would make the small end look slow.
            args = ["fetch", "--url", server.flight_url, "--token", token,
                    "--sql", f"SELECT * FROM {c.table_name(n)}",
                    "--warm-sql", f"SELECT * FROM {c.table_name(sizes[0])}"]  # fmt: skip

            def fetch() -> float:
                before = [0.0]

                def go() -> None:  # after the client's warm-up, before its timed fetch
                    before[0] = c.cpu_seconds(server.pid)

                with c.RssSampler(server.pid, 0.02) as sampler:
                    (result,) = c.run_clients([args], on_go=go)
                cpu[n].append(c.cpu_seconds(server.pid) - before[0])
                if result["rows"] != n:
                    raise RuntimeError(f"{c.table_name(n)}: got {result['rows']} rows")
                nbytes[n] = result["bytes"]
                peaks[n].append((sampler.peak - sampler.first) / c.MB)
                return float(result["seconds"][0])

            return fetch

        for n in sizes:  # warm-up: DuckDB's buffer pool
            c.warm(server.flight_url, f"SELECT * FROM {c.table_name(n)}", token)
        by_name = c.interleaved(runs, {str(n): subject(n) for n in sizes})
        times = {int(k): v for k, v in by_name.items()}
    notes.append(c.load_note() + " (after)")

    ns_per_row = {n: [t / n * 1e9 for t in times[n]] for n in sizes}
    med = {n: statistics.median(v) for n, v in ns_per_row.items()}
    base = med[sizes[0]]
    spread_ratio = max(med.values()) / min(med.values())
    cpu_ns = {n: statistics.median(cpu[n]) / n * 1e9 for n in sizes}
    cpu_ratio = max(cpu_ns.values()) / min(cpu_ns.values())
    metrics = []
    for n in sizes:
        metrics.append(
            c.metric(
                f"SELECT * {n / 1e6:g}M rows: time",
                statistics.median(times[n]),
                "s",
                spread=(min(times[n]), max(times[n])),
            )
        )
        metrics.append(
            c.metric(
                f"SELECT * {n / 1e6:g}M rows: time per row",
                med[n],
                "ns/row",
                reference=base,
                reference_label=f"{sizes[0] / 1e6:g}M",
                spread=(min(ns_per_row[n]), max(ns_per_row[n])),
            )
        )
    metrics.append(
        c.metric(
            "time per row, largest / smallest across sizes",
            spread_ratio,
            "x",
            ratio=spread_ratio,
            aim=f"<= {AIM_FLAT}",
            met=spread_ratio <= AIM_FLAT,
        )
    )
    metrics.append(
        c.metric(
            "server CPU time per row, largest / smallest (less sensitive to other load)",
            cpu_ratio,
            "x",
            ratio=cpu_ratio,
        )
    )
    metrics.append(
        c.metric(
            f"server peak RSS growth at {sizes[-1] / 1e6:g}M rows",
            max(peaks[sizes[-1]]),
            "MB",
        )
    )
    plots = [_plot(sizes, times, ns_per_row)]
    return {
        "name": NAME,
        "title": "Scale curve: SELECT * time from 1M to 50M rows",
        "measures": (
            "Wall time of a full-table fetch by a separate client process, per table size "
            "(each client first reads the smallest table once, untimed, to warm its channel)."
        ),
        "data": (
            "bench.t<N>: 5 columns (BIGINT, INTEGER, DOUBLE, VARCHAR, TIMESTAMP), ~46 bytes/row "
            f"as Arrow; sizes {', '.join(f'{n:,}' for n in sizes)} rows"
        ),
        "reference": f"time per row at the smallest size ({sizes[0]:,} rows); aim: flat within 20%",
        "results": {
            "sizes": sizes,
            "seconds": {str(n): c.stats(times[n]) for n in sizes},
            "ns_per_row": {str(n): c.stats(ns_per_row[n]) for n in sizes},
            "bytes": {str(n): nbytes[n] for n in sizes},
            "rss_growth_mb": {str(n): c.stats(peaks[n]) for n in sizes},
            "server_cpu_ns_per_row": {str(n): cpu_ns[n] for n in sizes},
        },
        "metrics": metrics,
        "plots": plots,
        "notes": notes,
    }


def _plot(
    sizes: list[int], times: dict[int, list[float]], ns_per_row: dict[int, list[float]]
) -> str:
    plt = c.plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [n / 1e6 for n in sizes]
    med_t = [statistics.median(times[n]) for n in sizes]
    left.errorbar(
        xs,
        med_t,
        yerr=[[m - min(times[n]) for m, n in zip(med_t, sizes, strict=True)],
              [max(times[n]) - m for m, n in zip(med_t, sizes, strict=True)]],
        fmt="o-",
        capsize=5,
    )  # fmt: skip
    per_row0 = statistics.median(times[sizes[0]]) / sizes[0]
    left.plot(xs, [per_row0 * n for n in sizes], "--", color="grey", label="linear from smallest")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("rows (millions)")
    left.set_ylabel("seconds")
    left.set_title("SELECT * time (median, min-max)")
    left.legend(fontsize=8)
    med = [statistics.median(ns_per_row[n]) for n in sizes]
    right.plot(xs, med, "o-")
    right.axhspan(
        med[0] / AIM_FLAT, med[0] * AIM_FLAT, color="green", alpha=0.1, label="±20% of smallest"
    )
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("rows (millions)")
    right.set_ylabel("ns per row")
    right.set_title("Time per row")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = c.RESULTS / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
