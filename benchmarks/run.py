"""Run every benchmark scenario and write the report.

    python -m benchmarks.run            # full sizes (make bench)
    python -m benchmarks.run --quick    # reduced sizes, a few minutes (make bench-quick)
    python -m benchmarks.run --only dataplane --only scale
    python -m benchmarks.run --list

Each scenario (a module in benchmarks/scenarios, see its package docstring for the
contract) runs in a child process of its own, with a timeout: a scenario that fails,
hangs or crashes is reported as failed and the others still run. The report goes to
benchmarks/results/ (full) or benchmarks/results/quick/ (--quick):

    latest.json   machine, versions, and every scenario's dict
    summary.md    a table (scenario, metric, value, reference, ratio, aim, met?),
                  then each scenario's description, notes and plots
    *.png         the plots the scenarios drew

With --only, the named scenarios replace their entries in an existing latest.json of
the same mode; the others are kept.

A full run also refreshes the block between `<!-- bench:summary:start -->` and
`<!-- bench:summary:end -->` in README.md and docs/performance.md (where present)
with the summary table and the plots, so the published figures are always the last
full run's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pkgutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import common as c

REQUIRED_KEYS = ("name", "measures", "data", "reference", "results", "metrics")


def discover() -> list[str]:
    """Scenario module names, in a stable order (alphabetical)."""
    import benchmarks.scenarios as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def results_dir(quick: bool) -> Path:
    return c.RESULTS / "quick" if quick else c.RESULTS


# -- one scenario, in a child process ----------------------------------------------------


def run_child(name: str, quick: bool, out: Path) -> int:
    """Import and run one scenario; write its dict (or its failure) as JSON to `out`."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"benchmarks.scenarios.{name}")
        result = module.run(quick)
        if not isinstance(result, dict):
            raise TypeError(f"run() returned {type(result).__name__}, not dict")
        if isinstance(result.get("notes"), str):
            # A string here printed one character per line in the summary.
            result["notes"] = [result["notes"]]
        missing = [k for k in REQUIRED_KEYS if k not in result]
        if missing:
            result.setdefault("notes", []).append(f"contract: missing keys {missing}")
        result.setdefault("name", name)
        result["status"] = "ok"
    except BaseException as e:
        result = {
            "name": name,
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-6000:],
        }
    result["duration_s"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(result, default=_jsonable))
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | tuple):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def run_scenario(name: str, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one scenario in a child process; never raises."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", name, "--out", str(out)]
        if quick:
            cmd.append("--quick")
        env = {**os.environ, "AGENTDATA_BENCH_RESULTS": str(results_dir(quick))}
        # A session of its own, so a timeout also ends the servers and clients it started.
        proc = subprocess.Popen(cmd, cwd=c.REPO, env=env, start_new_session=True)
        try:
            proc.wait(timeout)
            if out.exists():
                return json.loads(out.read_text())  # type: ignore[no-any-return]
            error = f"scenario process exited with {proc.returncode} and no result"
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout:g}s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of this scenario only
            proc.wait()
    return {
        "name": name,
        "status": "failed",
        "error": error,
        "duration_s": round(time.monotonic() - started, 1),
    }


# -- the report --------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        v = float(value)
        if v == 0:
            text = "0"
        elif abs(v) >= 1000:
            text = f"{v:,.0f}"
        elif abs(v) >= 100:
            text = f"{v:.0f}"
        elif abs(v) >= 10:
            text = f"{v:.1f}"
        elif abs(v) >= 0.1:
            text = f"{v:.2f}"
        else:
            text = f"{v:.3g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"# agentdata benchmarks ({report['mode']})",
        "",
        f"Generated {report['generated_at']} by `{report['command']}` in "
        f"{report['duration_s']:.0f} s, commit `{m.get('commit') or '?'}`.",
        "",
        f"Machine: {m['cores']} cores ({m.get('cpu') or 'unknown CPU'}), "
        f"{m['memory_gb']} GB RAM, {m['os']}; load average at start "
        f"{', '.join(str(x) for x in m['load_avg'])}. "
        f"Python {v.get('python')}, pyarrow {v.get('pyarrow')}, duckdb {v.get('duckdb')}, "
        f"adbc-driver-flightsql {v.get('adbc-driver-flightsql', '?')}.",
        "",
        "Values are medians of several runs (min–max in brackets); ratios are "
        "value / reference measured side by side in the same run; load is the "
        f"machine's 1-minute load average when the figure was taken ({m['cores']} cores).",
        "",
        "| scenario | metric | value | reference | ratio | aim | met? | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in report["scenarios"]:
        if s.get("status") != "ok":
            lines.append(
                f"| {s['name']} | **failed** | {_cell(s.get('error', '?'))[:300]} | | | | | |"
            )
            continue
        for row in s.get("metrics", []):
            value = fmt(row.get("value"), row.get("unit", ""))
            if row.get("spread") and row.get("value") is not None:
                lo, hi = row["spread"]
                value += f" ({fmt(lo)}–{fmt(hi)})"
            ref = row.get("reference")
            ref_text = fmt(ref, row.get("unit", "") if isinstance(ref, int | float) else "")
            if row.get("reference_label"):
                ref_text = (
                    f"{ref_text} ({row['reference_label']})"
                    if ref is not None
                    else row["reference_label"]
                )
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        s["name"],
                        row.get("metric", ""),
                        value,
                        ref_text,
                        fmt(row.get("ratio"), "x") if row.get("ratio") is not None else "—",
                        row.get("aim") or "",
                        {True: "yes", False: "**no**", None: ""}[row.get("met")],
                        fmt(row.get("load")) if row.get("load") is not None else "",
                    )
                )
                + " |"
            )
    for s in report["scenarios"]:
        lines += ["", f"## {s['name']}: {s.get('title', s['name'])}", ""]
        if s.get("status") != "ok":
            lines += [f"**Failed** after {s.get('duration_s', '?')} s: `{s.get('error')}`", ""]
            if s.get("traceback"):
                lines += ["```", s["traceback"].strip()[-2500:], "```"]
            continue
        for key in ("measures", "data", "reference"):
            if s.get(key):
                lines.append(f"- **{key.capitalize()}:** {s[key]}")
        lines.append(f"- **Took:** {s.get('duration_s', '?')} s")
        for note in s.get("notes", []):
            lines.append(f"- Note: {note}")
        for plot in s.get("plots", []):
            lines += ["", f"![{s['name']}]({plot})"]
    return "\n".join(lines) + "\n"


MARK_START = "<!-- bench:summary:start -->"
MARK_END = "<!-- bench:summary:end -->"
PUBLISHED = ("README.md", "docs/performance.md")


def summary_block(report: dict[str, Any], doc: Path) -> str:
    """The table and plots for a document, with image links relative to it."""
    m = report["machine"]
    v = m["versions"]
    table = [line for line in summary_markdown(report).splitlines() if line.startswith("|")]
    rel = os.path.relpath(c.RESULTS, doc.parent)
    plots = [
        f"![{s['name']}]({rel}/{plot})"
        for s in report["scenarios"]
        if s.get("status") == "ok"
        for plot in s.get("plots", [])
    ]
    return "\n".join(
        [
            MARK_START,
            f"Last full run: {report['generated_at']}, `{report['command']}`, commit "
            f"`{m.get('commit') or '?'}`, {m['cores']} cores, {m['memory_gb']} GB RAM, Python "
            f"{v.get('python')}, pyarrow {v.get('pyarrow')}, DuckDB {v.get('duckdb')}; load "
            f"average at start {m['load_avg'][0]}. Medians (min–max); details in "
            f"[summary.md]({rel}/summary.md).",
            "",
            *table,
            "",
            *plots,
            MARK_END,
        ]
    )


def publish(report: dict[str, Any]) -> list[Path]:
    """Refresh the marked summary block in the published documents that have one."""
    updated = []
    for name in PUBLISHED:
        doc = c.REPO / name
        if not doc.exists():
            continue
        text = doc.read_text()
        start, end = text.find(MARK_START), text.find(MARK_END)
        if start < 0 or end < start:
            continue
        new = text[:start] + summary_block(report, doc) + text[end + len(MARK_END) :]
        if new != text:
            doc.write_text(new)
            updated.append(doc)
    return updated


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes (everyday check)")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only NAME")
    p.add_argument("--list", action="store_true", help="list scenarios and exit")
    p.add_argument("--timeout", type=float, default=0, help="seconds per scenario")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.child:
        return run_child(a.child, a.quick, Path(a.out))
    names = discover()
    if a.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in a.only if n not in names]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {names}")
    selected = a.only or names
    timeout = a.timeout or (480 if a.quick else 1200)  # quick: a busy 2-core machine
    out_dir = results_dir(a.quick)
    out_dir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    machine = c.machine_info()
    results = []
    for name in selected:
        c.log(f"scenario {name}: starting ({'quick' if a.quick else 'full'})")
        result = run_scenario(name, a.quick, timeout)
        c.log(f"scenario {name}: {result.get('status')} in {result.get('duration_s')} s")
        if result.get("status") != "ok":
            c.log(f"scenario {name} failed: {result.get('error')}")
        results.append(result)

    latest = out_dir / "latest.json"
    mode = "quick" if a.quick else "full"
    if a.only and latest.exists():
        previous = json.loads(latest.read_text())
        if previous.get("mode") == mode:
            fresh = {r["name"] for r in results}
            kept = [s for s in previous.get("scenarios", []) if s["name"] not in fresh]
            results = sorted(
                kept + results, key=lambda s: names.index(s["name"]) if s["name"] in names else 99
            )
    report = {
        "mode": mode,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": ("make bench-quick" if a.quick else "make bench")
        if not a.only
        else "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "duration_s": time.monotonic() - started,
        "machine": machine,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "scenarios": results,
    }
    latest.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    summary = summary_markdown(report)
    (out_dir / "summary.md").write_text(summary)
    table = [line for line in summary.splitlines() if line.startswith("|")]
    print("\n".join(table))
    print(
        f"\nwrote {latest.relative_to(c.REPO)} and {(out_dir / 'summary.md').relative_to(c.REPO)}"
    )
    if not a.quick:
        for doc in publish(report):
            print(f"refreshed the benchmark summary in {doc.relative_to(c.REPO)}")
    failed = [r["name"] for r in results if r.get("status") != "ok"]
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
