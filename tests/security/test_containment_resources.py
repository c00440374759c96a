"""Bounded resources: one token's query cannot take the server's memory or time.

The server runs with AGENTDATA_MEMORY_LIMIT=1GB. A query built to allocate gigabytes
in one value (repeat, lpad, regexp_replace, a list from range, string_agg, a doubling
recursive CTE) by a token with timeout_s=5 ends with [resource_exhausted] or with
[deadline_exceeded] from that timeout; meanwhile the server's resident memory grows by
less than memory_limit + 512 MiB over what it was before the query (the memory guard's
bound plus its reaction time) and another token's `SELECT 1` is answered. SQL text
longer than AGENTDATA_MAX_SQL_BYTES (default 256 KiB) is [invalid_argument]; a 200 KB
IN list is answered or stopped by its token's timeout. How fast all this happens (the
issue's timeout + 2 s and under-a-second bounds) is a measurement, not a test here.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.flight as fl
import pytest

from tests.security.conftest import Lab, Outcome, open_lab, run_flight, run_flightsql

MEMORY_LIMIT_BYTES = 1_000_000_000  # "1GB" to DuckDB is 10^9 bytes
#: What a heavy query may add to the server's RSS: the memory guard stops queries past
#: idle + memory_limit + 256 MiB headroom + 2 batches per stream (agentdata.memory_guard);
#: the rest is the guard's reaction (it samples every 50 ms while a value grows fast).
RSS_GROWTH_BOUND_BYTES = MEMORY_LIMIT_BYTES + 512 * 1024**2
TIMEOUT_S = 5.0
#: How long a bystander's `SELECT 1` may take before it counts as refused: a guard against
#: hanging, not a latency bound (latency under load is measured in benchmarks/).
PROBE_TIMEOUT_S = 30.0
MAX_SQL_BYTES = 262_144

STOPPED = {"resource_exhausted", "deadline_exceeded"}

HEAVY = [
    pytest.param("SELECT length(repeat('z', 4000000000)) AS n", id="repeat"),
    pytest.param(
        "SELECT length(regexp_replace(repeat('ab', 100000000), 'a', repeat('x', 1000), 'g')) AS n",
        id="regexp_replace",
    ),
    # lpad's length is an INTEGER: 4000000000 does not even bind, 2000000000 (2 GB) does.
    pytest.param("SELECT length(lpad('x', 2000000000, 'y')) AS n", id="lpad"),
    pytest.param("SELECT len(range(0, 4000000000)) AS n", id="range-as-list"),
    pytest.param(
        "SELECT length(string_agg(repeat('z', 100), ',')) AS n FROM range(100000000)",
        id="string_agg",
    ),
    pytest.param(
        "WITH RECURSIVE r(s) AS (SELECT 'zz' UNION ALL SELECT s || s FROM r "
        "WHERE length(s) < 4000000000) SELECT max(length(s)) AS n FROM r",
        id="recursive-cte",
    ),
]


@dataclass(frozen=True)
class Bounded:
    """The module's lab and its tokens: `slow` (timeout_s=5) runs the heavy queries,
    `quick` is the bystander, `one_second` (timeout_s=1) sends the long IN list."""

    lab: Lab
    slow: str
    quick: str
    one_second: str

    def alive(self) -> bool:
        return self.lab.server.proc.poll() is None


def open_bounded(data_dir: Path) -> Bounded:
    lab = open_lab(data_dir, env={"AGENTDATA_MEMORY_LIMIT": "1GB"})
    server = lab.server
    return Bounded(
        lab=lab,
        slow=str(server.create_token("reader", name="five-seconds", timeout_s=TIMEOUT_S)["token"]),
        quick=str(server.create_token("reader", name="bystander")["token"]),
        one_second=str(server.create_token("reader", name="one-second", timeout_s=1)["token"]),
    )


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Bounded]]:
    """Every server this module started (a test kills one whose memory runs away)."""
    labs: list[Bounded] = []
    yield labs
    for b in labs:
        b.lab.close()


@pytest.fixture
def bounded(started: list[Bounded], tmp_path_factory: pytest.TempPathFactory) -> Bounded:
    """The module's server, started afresh if an earlier test had to kill it."""
    if not started or not started[-1].alive():
        started.append(open_bounded(tmp_path_factory.mktemp("bounded") / "data"))
    return started[-1]


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssWatch(threading.Thread):
    """Samples a process's resident memory every 50 ms, keeping the peak. Past `bound`
    it kills the process: a runaway server would take the test machine down with it."""

    def __init__(self, pid: int, bound: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.bound = pid, bound
        self.peak = 0
        self.killed = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = _rss_bytes(self.pid)
            if rss is None:
                return
            self.peak = max(self.peak, rss)
            if rss > self.bound:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                return
            self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _running_queries(lab: Lab) -> int | None:
    try:
        (result,) = list(
            lab.client.do_action(
                fl.Action("health", b""), lab.server.options(lab.server.admin_token, timeout=5)
            )
        )
    except Exception:
        return None
    return int(json.loads(result.body.to_pybytes())["running_queries"])


def _wait_idle(lab: Lab, timeout: float) -> bool:
    """True once the server runs no query (polled until `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_queries(lab) == 0:
            return True
        time.sleep(0.1)
    return False


def _probe(b: Bounded) -> Outcome:
    return run_flight(b.lab.server, b.quick, "SELECT 1 AS one", timeout=PROBE_TIMEOUT_S)


@pytest.mark.parametrize("sql", HEAVY)
def test_a_heavy_query_is_stopped_in_time_and_in_memory(bounded: Bounded, sql: str) -> None:
    lab = bounded.lab
    # Relative to the RSS before the query, as the server's own guard is (an absolute
    # bound would move with whatever the server imported and cached before).
    before = _rss_bytes(lab.server.proc.pid) or 0
    bound = before + RSS_GROWTH_BOUND_BYTES
    watch = RssWatch(lab.server.proc.pid, bound)
    watch.start()
    result: dict[str, Any] = {}

    def heavy() -> None:
        result["outcome"] = run_flight(lab.server, bounded.slow, sql, timeout=60)

    runner = threading.Thread(target=heavy, daemon=True)
    runner.start()
    probes: list[Outcome] = []
    try:
        while runner.is_alive():
            probes.append(_probe(bounded))
            runner.join(0.25)  # the next probe when the heavy query is still running
        probes.append(_probe(bounded))
    finally:
        runner.join(70)
        watch.stop()
    # Whatever happened, the next test needs an idle server (or a new one).
    idle = not watch.killed and _wait_idle(lab, timeout=15)
    if not idle and bounded.alive():
        os.kill(lab.server.proc.pid, signal.SIGKILL)
        lab.server.proc.wait()

    assert not watch.killed, (
        f"server RSS passed {bound / 2**20:.0f} MiB (its RSS before the query, "
        f"{before / 2**20:.0f} MiB, + memory_limit + 512 MiB); "
        "it was killed"
    )
    outcome: Outcome = result["outcome"]
    assert outcome.code in STOPPED, outcome.describe()
    if outcome.code == "deadline_exceeded":  # the token's timeout, not the client's 60 s
        assert f"its {TIMEOUT_S:g}s timeout" in (outcome.error or ""), outcome.describe()
    assert idle, "the query still ran on the server after its caller got an answer"
    failed = [p.describe() for p in probes if not p.ok]
    assert not failed, f"a bystander's SELECT 1 failed: {failed}"
    lab.assert_no_leak(outcome.text(), echo=sql, secrets=False)


def _padded(n_bytes: int, filler: str = "z") -> str:
    """`SELECT 1 AS one` and a comment, `n_bytes` of UTF-8 in all (or one more, when a
    two-byte filler cannot land exactly)."""
    head = "SELECT 1 AS one -- "
    room = n_bytes - len(head.encode())
    width = len(filler.encode())
    return head + filler * -(-room // width)


def _adbc(b: Bounded, token: str) -> Any:
    import adbc_driver_flightsql.dbapi as dbapi

    return dbapi.connect(
        f"grpc://127.0.0.1:{b.lab.server.flight_port}",
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
        autocommit=True,
    )


def _export(b: Bounded, token: str, sql: str) -> Outcome:
    with b.lab.server.http(token) as http:
        r = http.post("/api/v1/exports", json={"sql": sql, "format": "csv"})
    if r.status_code == 202:
        http_job = r.json()
        with b.lab.server.http() as admin:
            admin.delete(f"/api/v1/jobs/{http_job['job_id']}")  # accepted: don't leave it running
        return Outcome(error=None)
    try:
        body = r.json()
    except ValueError:
        body = {"detail": r.text}
    return Outcome(
        error=f"[{body.get('code')}] {body.get('detail')}", error_type=f"HTTP {r.status_code}"
    )


@pytest.mark.parametrize("channel", ["flight", "flight-sql", "export"])
@pytest.mark.parametrize(
    "sql",
    [
        pytest.param(_padded(MAX_SQL_BYTES + 1), id="one-byte-over"),
        # Fewer than 256 Ki characters, more than 256 KiB: the limit is on bytes.
        pytest.param(_padded(MAX_SQL_BYTES + 1, "é"), id="over-in-bytes-not-characters"),
        pytest.param(_padded(4 * MAX_SQL_BYTES), id="four-times-over"),
    ],
)
def test_sql_longer_than_256_kib_is_invalid_argument(
    bounded: Bounded, channel: str, sql: str
) -> None:
    assert len(sql.encode()) > MAX_SQL_BYTES
    if channel == "flight":
        outcome = run_flight(bounded.lab.server, bounded.quick, sql)
    elif channel == "flight-sql":
        conn = _adbc(bounded, bounded.quick)
        try:
            outcome = run_flightsql(conn, sql)
        finally:
            conn.close()
    else:
        outcome = _export(bounded, bounded.quick, sql)
    assert outcome.code == "invalid_argument", outcome.describe()


def test_sql_of_exactly_256_kib_is_accepted(bounded: Bounded) -> None:
    sql = _padded(MAX_SQL_BYTES)
    assert len(sql.encode()) == MAX_SQL_BYTES
    outcome = run_flight(bounded.lab.server, bounded.quick, sql)
    assert outcome.ok and outcome.table is not None, outcome.describe()
    assert outcome.table.column("one").to_pylist() == [1]


def test_a_200_kb_in_list_is_answered_or_times_out_on_time(bounded: Bounded) -> None:
    ids = []
    size = 0
    for i in range(1, 10**7, 7):
        size += len(str(i)) + 2
        if size > 200_000:
            break
        ids.append(i)
    sql = f"SELECT count(*) AS n FROM demo.orders WHERE id IN ({', '.join(map(str, ids))})"
    assert 190_000 < len(sql.encode()) < MAX_SQL_BYTES
    outcome = run_flight(bounded.lab.server, bounded.one_second, sql, timeout=60)
    if outcome.ok:
        assert outcome.table is not None
        assert outcome.table.column("n").to_pylist() == [sum(1 for i in ids if i <= 20_000)]
    else:
        # Stopped by the token's 1 s timeout (the server's own), not the client's 60 s.
        assert outcome.code == "deadline_exceeded", outcome.describe()
        assert "its 1s timeout" in (outcome.error or ""), outcome.describe()
    assert _wait_idle(bounded.lab, timeout=15), "the IN-list query still runs on the server"
