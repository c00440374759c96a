"""Containment timings: how soon a query over its timeout or a revoked token is stopped,
and whether a bystander waits meanwhile.

The containment tests (tests/security/) check that these things happen; how soon
they happen is wall time, which depends on the machine and its load, so it is
measured here, with the load beside each figure, instead of asserted in a test.
One server, fresh tokens each repetition; each repetition takes, in turn:

- **Timeout overrun.** A token with `timeout_s=1` runs HEAVY_SQL (a 2x10^11-pair
  cross join that never finishes on its own) over plain Flight. The overrun is the
  time from the deadline (the DoGet sent, plus the timeout) to the client seeing
  `[deadline_exceeded]`. Measuring from the client's send, not the server's arrival,
  counts the network hop against the server. Aim: <= 2 s.
- **Bystander latency.** Another token (timeout_s=10) runs HEAVY_SQL, which takes
  every DuckDB thread; half a second after the server reports it running (the
  server's CPU use over that half second is recorded), a third token's
  `SELECT 1` on an already connected, warmed client is timed from GetFlightInfo to
  the row read. The heavy query is then cancelled (the `cancel` action). Aim: < 1 s.
- **Revocation cut.** A token streams STREAM_SQL read slowly (a batch every 20 ms,
  as in tests/security/test_containment_revocation.py); the admin revokes the token
  (DELETE /api/v1/tokens/{id}); the cut latency is the time from sending that
  request to the stream failing with `[unauthenticated]` on the client. Batches
  already buffered in the client are read (slowly) first: that is what a client
  sees. Aim: <= 1 s.

Clients are threads of the scenario process: each waits on the network (pyarrow
releases the GIL), and the server is a process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.flight as fl

from benchmarks import common as c

NAME = "containment"
TIMEOUT_S = 1.0
AIM_OVERRUN_S = 2.0
AIM_BYSTANDER_S = 1.0
AIM_CUT_S = 1.0
#: Never finishes in any timeout used here: a filtered 2x10^11-pair cross join.
HEAVY_SQL = "SELECT count(*) FROM range(200000000) a, range(1000) b WHERE a.range + b.range < 0"
#: Far more rows than a slowly read stream gets through before it is cut.
STREAM_SQL = "SELECT range AS n FROM range(200000000)"
#: How long the slow reader spends on each batch (pacing, as in the revocation test).
PACE_S = 0.02
#: How long the heavy query runs before the bystander's probe.
SETTLE_S = 0.5
#: A guard against a hung measurement, not a bound: past it the run counts as missed.
GUARD_S = 60.0


def run(quick: bool) -> dict[str, Any]:
    reps = 3 if quick else 5
    notes = [c.load_note() + " (before)"]
    work = c.scratch_dir(f"{NAME}-{os.getpid()}")
    try:
        return _measure(reps, work, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(reps: int, work: Path, notes: list[str]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"timeout": [], "bystander": [], "revocation": []}
    with c.running_server(work / "data") as server:
        for i in range(reps):
            c.log(f"containment: repetition {i + 1}/{reps}")
            runs["timeout"].append(_timeout_overrun(server))
            runs["bystander"].append(_bystander(server))
            runs["revocation"].append(_revocation_cut(server))
        load = c.load1()
    notes.append(c.load_note() + " (after)")
    busy = [r["server_cores_busy_before"] for r in runs["bystander"] if "latency_s" in r]
    if busy:
        notes.append(
            f"the heavy query kept {min(busy):.2f}-{max(busy):.2f} of {os.cpu_count()} cores "
            "busy (server CPU s per wall s) just before each bystander probe"
        )
    for kind, rows in runs.items():
        for r in rows:
            if r.get("error"):
                notes.append(f"{kind}: a run ended otherwise than expected: {r['error']}")
    metrics = [
        *_rows(
            f"query over its {TIMEOUT_S:g} s timeout: deadline to client's [deadline_exceeded]",
            runs["timeout"],
            "overrun_s",
            f"<= {AIM_OVERRUN_S:g} s",
            lambda v: v <= AIM_OVERRUN_S,
            load,
        ),
        *_rows(
            "bystander's SELECT 1 (another token) while a heavy query runs",
            runs["bystander"],
            "latency_s",
            f"< {AIM_BYSTANDER_S:g} s",
            lambda v: v < AIM_BYSTANDER_S,
            load,
        ),
        *_rows(
            "revoked token's running stream: revocation sent to client's [unauthenticated]",
            runs["revocation"],
            "cut_s",
            f"<= {AIM_CUT_S:g} s",
            lambda v: v <= AIM_CUT_S,
            load,
        ),
    ]
    return {
        "name": NAME,
        "title": "Containment timings: timeout overrun, bystander latency, revocation cut",
        "measures": (
            f"Over {reps} repetitions on one server: how long after its {TIMEOUT_S:g} s "
            "deadline a heavy query's client sees [deadline_exceeded]; how long another "
            "token's SELECT 1 takes while a heavy query runs; how long after a revocation "
            "is sent a slowly read stream of that token fails with [unauthenticated]."
        ),
        "data": (
            f"no tables: the heavy query is `{HEAVY_SQL}`, the stream `{STREAM_SQL}` "
            f"read one batch every {PACE_S * 1000:g} ms."
        ),
        "reference": (
            "the bounds the containment issue sets (timeout + 2 s; under 1 s; 1 s); "
            "the tests check the behaviour, this the timing."
        ),
        "results": {"repetitions": reps, "load": load, **runs},
        "metrics": metrics,
        "plots": [],
        "notes": notes,
    }


def _rows(
    label: str,
    runs: list[dict[str, Any]],
    key: str,
    aim: str,
    within: Any,
    load: float,
) -> list[dict[str, Any]]:
    """Median and max rows for one timing; a run without a figure (a wrong error, a
    hang) makes both rows missed."""
    values = [float(r[key]) for r in runs if r.get(key) is not None]
    st = c.stats(values)
    complete = len(values) == len(runs)
    med, worst = st["median"], st["max"]
    return [
        c.metric(
            f"{label}, median",
            med,
            "s",
            aim=aim,
            met=complete and med is not None and bool(within(med)),
            spread=(st["min"], st["max"]) if values else None,
            load=load,
        ),
        c.metric(
            f"{label}, max of {len(runs)}",
            worst,
            "s",
            aim=aim,
            met=complete and worst is not None and bool(within(worst)),
            load=load,
        ),
    ]


# -- the three measurements ----------------------------------------------------------


def _token(server: c.BenchServer, name: str, **fields: Any) -> dict[str, Any]:
    """A fresh reader token's record (with its secret under "token")."""
    r = httpx.post(
        f"{server.http_url}/api/v1/tokens",
        json={"name": name, "role": "reader", **fields},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    r.raise_for_status()
    return dict(r.json())


def _timeout_overrun(server: c.BenchServer) -> dict[str, Any]:
    token = _token(server, "bench-timeout", timeout_s=TIMEOUT_S)["token"]
    client = fl.connect(server.flight_url)
    try:
        opts = c.bearer(token, GUARD_S)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(HEAVY_SQL.encode()), opts)
        # The server's clock for the query starts when the DoGet arrives; ours, earlier.
        sent = time.monotonic()
        try:
            client.do_get(info.endpoints[0].ticket, opts).read_all()
        except fl.FlightError as e:
            seen = time.monotonic()
            if "[deadline_exceeded]" not in str(e):
                return {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            return {"overrun_s": seen - sent - TIMEOUT_S, "elapsed_s": seen - sent}
        return {"error": "the heavy query finished"}
    finally:
        client.close()
        _wait_idle(server)


def _bystander(server: c.BenchServer) -> dict[str, Any]:
    heavy_token = _token(server, "bench-heavy", timeout_s=10)["token"]
    probe_token = _token(server, "bench-bystander")["token"]
    probe = fl.connect(server.flight_url)
    heavy = fl.connect(server.flight_url)
    probe_opts = c.bearer(probe_token, GUARD_S)
    heavy_opts = c.bearer(heavy_token, GUARD_S)
    outcome: list[str] = []
    try:
        _select_one(probe, probe_opts)  # connect and warm: set-up is not what is timed
        info = heavy.get_flight_info(
            fl.FlightDescriptor.for_command(HEAVY_SQL.encode()), heavy_opts
        )
        ticket = info.endpoints[0].ticket

        def drain() -> None:
            # DoGet itself blocks until the first batch, which a count(*) sends last.
            try:
                heavy.do_get(ticket, heavy_opts).read_all()
                outcome.append("finished")
            except fl.FlightError as e:
                outcome.append(str(e)[:200])

        worker = threading.Thread(target=drain, daemon=True)
        worker.start()
        if not _wait_running(server, GUARD_S):
            return {"error": f"the heavy query never showed as running: {outcome}"}
        # Let the heavy query spread over DuckDB's threads, and record that it did: the
        # server's CPU seconds per wall second over this window (cores kept busy).
        cpu0, wall0 = c.cpu_seconds(server.pid), time.monotonic()
        time.sleep(SETTLE_S)
        busy = (c.cpu_seconds(server.pid) - cpu0) / (time.monotonic() - wall0)
        started = time.monotonic()
        _select_one(probe, probe_opts)
        latency = time.monotonic() - started
        still_running = _running_queries(server) > 0 and not outcome
        # The ticket names the query: its owner may cancel it (the `cancel` action).
        list(heavy.do_action(fl.Action("cancel", ticket.ticket), heavy_opts))
        worker.join(GUARD_S)
        result: dict[str, Any] = {
            "latency_s": latency,
            "server_cores_busy_before": busy,
            "heavy_ran_throughout": still_running,
        }
        if not still_running:
            result["error"] = f"the heavy query ended during the probe: {outcome}"
        return result
    finally:
        probe.close()
        heavy.close()
        _wait_idle(server)


def _revocation_cut(server: c.BenchServer) -> dict[str, Any]:
    record = _token(server, "bench-revoked")
    client = fl.connect(server.flight_url)
    try:
        opts = c.bearer(record["token"], GUARD_S)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(STREAM_SQL.encode()), opts)
        reader = client.do_get(info.endpoints[0].ticket, opts)
        error, before = _read_slowly(reader, time.monotonic() + 0.3)
        if error is not None or before == 0:
            return {"error": f"no stream to cut ({before} batches): {error}"}
        sent = time.monotonic()
        r = httpx.delete(
            f"{server.http_url}/api/v1/tokens/{record['id']}",
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=30,
        )
        answered = time.monotonic()
        r.raise_for_status()
        error, after = _read_slowly(reader, sent + GUARD_S)
        seen = time.monotonic()
        if error is None or "[unauthenticated]" not in str(error):
            return {"error": f"the stream was not cut as expected: {error!r}"}
        with contextlib.suppress(Exception):
            reader.cancel()
        return {
            "cut_s": seen - sent,
            "revoke_call_s": answered - sent,
            "batches_before": before,
            "batches_after": after,
        }
    finally:
        client.close()
        _wait_idle(server)


# -- helpers -------------------------------------------------------------------------


def _select_one(client: fl.FlightClient, opts: fl.FlightCallOptions) -> None:
    info = client.get_flight_info(fl.FlightDescriptor.for_command(b"SELECT 1 AS one"), opts)
    table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    if table.num_rows != 1:
        raise RuntimeError(f"SELECT 1 returned {table.num_rows} rows")


def _read_slowly(reader: fl.FlightStreamReader, until: float) -> tuple[Exception | None, int]:
    """Read batch by batch like a slow consumer until the stream fails or `until`
    (monotonic) passes; (the error or None, batches read)."""
    batches = 0
    while time.monotonic() < until:
        try:
            reader.read_chunk()
        except StopIteration:
            return RuntimeError(f"the stream ended normally after {batches} batches"), batches
        except Exception as e:
            return e, batches
        batches += 1
        time.sleep(PACE_S)
    return None, batches


def _running_queries(server: c.BenchServer) -> int:
    client = fl.connect(server.flight_url)
    try:
        (result,) = list(
            client.do_action(fl.Action("health", b""), c.bearer(server.admin_token, 30))
        )
    finally:
        client.close()
    return int(json.loads(result.body.to_pybytes())["running_queries"])


def _wait_running(server: c.BenchServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_queries(server) > 0:
            return True
        time.sleep(0.02)
    return False


def _wait_idle(server: c.BenchServer, timeout: float = GUARD_S) -> None:
    """Let the last measurement's query end before the next starts (it would skew it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_queries(server) == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"a query still ran on the server {timeout:g}s after its client left")
