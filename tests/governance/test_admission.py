"""Fair admission: per-token max_concurrent, a server-wide limit, a bounded wait queue.

The first tests drive `agentdata.admission.Admission` with real threads; the last ones a
real server whose limits are small (2 queries at once, a queue of 1).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.flight as fl
import pytest

from agentdata.admission import Admission
from agentdata.errors import ResourceExhausted
from agentdata.tokens import Principal, Role
from tests.security.conftest import run_flight
from tests.support.server import ServerProcess, start_server

SLOW_SQL = "SELECT count(*) FROM range(200000000) a, range(1000) b WHERE a.range + b.range < 0"


def _who(token_id: str, max_concurrent: int | None = None, role: Role = Role.READER) -> Principal:
    return Principal(token_id=token_id, name=token_id, role=role, max_concurrent=max_concurrent)


def test_a_token_over_its_max_concurrent_is_refused_at_once() -> None:
    gate = Admission(max_concurrent=10, queue=10, wait_s=60, token_default=2)
    held = [gate.admit(_who("a")), gate.admit(_who("a"))]
    with pytest.raises(ResourceExhausted) as refused:
        gate.admit(_who("a"))
    assert "max_concurrent" in refused.value.message and "retry" in refused.value.message
    assert refused.value.detail["retry_after_s"] >= 1
    own = gate.admit(_who("b", max_concurrent=1))  # another token is not affected
    with pytest.raises(ResourceExhausted):
        gate.admit(_who("b", max_concurrent=1))  # its own field wins over the default
    gate.admit(_who("admin", role=Role.ADMIN))
    gate.admit(_who("admin", role=Role.ADMIN))
    gate.admit(_who("admin", role=Role.ADMIN))  # admins: no per-token limit
    held[0]()
    held[0]()  # releasing twice gives back one slot only
    gate.admit(_who("a"))
    with pytest.raises(ResourceExhausted):
        gate.admit(_who("a"))
    own()


def test_the_queue_hands_slots_over_in_order_and_is_bounded() -> None:
    gate = Admission(max_concurrent=1, queue=2, wait_s=60, token_default=10)
    first = gate.admit(_who("t1"))
    order: list[str] = []

    def wait(name: str) -> None:
        release = gate.admit(_who(name))
        order.append(name)
        release()

    waiters = []
    for name in ("t2", "t3"):
        thread = threading.Thread(target=wait, args=(name,))
        thread.start()
        waiters.append(thread)
        deadline = time.monotonic() + 10
        while gate.waiting < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.001)
    assert gate.waiting == 2
    with pytest.raises(ResourceExhausted) as full:
        gate.admit(_who("t4"))  # the queue is full: refused at once
    assert "waiting already" in full.value.message
    first()
    for thread in waiters:
        thread.join(10)
    assert order == ["t2", "t3"] and gate.running == 0 and gate.waiting == 0


def test_a_wait_that_runs_out_is_refused_with_a_retry_hint() -> None:
    gate = Admission(max_concurrent=1, queue=5, wait_s=0.05, token_default=10)
    release = gate.admit(_who("t1"))
    with pytest.raises(ResourceExhausted) as refused:
        gate.admit(_who("t2"))
    assert "waited" in refused.value.message and "retry in about" in refused.value.message
    assert gate.waiting == 0
    release()
    gate.admit(_who("t2"))()  # the refused token's slot was given back


# -- a real server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("admission") / "data",
        env={
            "AGENTDATA_MAX_CONCURRENT_QUERIES": "2",
            "AGENTDATA_ADMISSION_QUEUE": "1",
            "AGENTDATA_ADMISSION_WAIT_S": "30",
            "AGENTDATA_TOKEN_MAX_CONCURRENT": "1",
            "AGENTDATA_QUERY_TIMEOUT_S": "120",
        },
        demo_rows=1000,
    )
    yield server
    server.stop()


class Slow:
    """A slow query held open in a thread until cancelled."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.client = server.flight()
        self.opts = server.options(token)
        info = self.client.get_flight_info(
            fl.FlightDescriptor.for_command(SLOW_SQL.encode()), self.opts
        )
        self.ticket = info.endpoints[0].ticket
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._read)
        self.thread.start()

    def _read(self) -> None:
        try:
            self.result.append(self.client.do_get(self.ticket, self.opts).read_all())
        except Exception as e:
            self.result.append(e)

    def cancel(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = list(self.client.do_action(fl.Action("cancel", self.ticket.ticket), self.opts))
            if json.loads(reply[0].body.to_pybytes())["cancelled"]:
                break
            time.sleep(0.02)
        self.thread.join(60)
        self.client.close()


def _metric(server: ServerProcess, name: str) -> float:
    with server.http() as http:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _tokens(server: ServerProcess, n: int, prefix: str, **kw: Any) -> list[str]:
    return [
        str(server.create_token("reader", name=f"{prefix}{i}", **kw)["token"]) for i in range(n)
    ]


def test_server_token_limit(small: ServerProcess) -> None:
    (a,) = _tokens(small, 1, "limited")
    slow = Slow(small, a)
    try:
        _until(lambda: _metric(small, "agentdata_active_streams") >= 1, "the slow query")
        refused = run_flight(small, a, "SELECT 1")
        assert refused.code == "resource_exhausted" and "max_concurrent" in (refused.error or "")
        (b,) = _tokens(small, 1, "other")
        assert run_flight(small, b, "SELECT 1").ok
    finally:
        slow.cancel()
    assert run_flight(small, a, "SELECT 1").ok


def test_token_field_raises_the_default(small: ServerProcess) -> None:
    (a,) = _tokens(small, 1, "wide", max_concurrent=2)
    slow = Slow(small, a)
    try:
        _until(lambda: _metric(small, "agentdata_active_streams") >= 1, "the slow query")
        assert run_flight(small, a, "SELECT 1").ok  # its second slot
    finally:
        slow.cancel()


def test_server_limit_queues_then_refuses(small: ServerProcess) -> None:
    t1, t2, t3, t4 = _tokens(small, 4, "q")
    slows = [Slow(small, t1), Slow(small, t2)]  # the server's 2 slots
    waiter: list[Any] = []
    try:
        _until(lambda: _metric(small, "agentdata_active_streams") >= 2, "two slow queries")
        thread = threading.Thread(target=lambda: waiter.append(run_flight(small, t3, "SELECT 42")))
        thread.start()
        _until(lambda: _metric(small, "agentdata_admission_waiting") >= 1, "a queued query")
        full = run_flight(small, t4, "SELECT 1")  # the queue (1) is full: refused at once
        assert full.code == "resource_exhausted" and "retry in about" in (full.error or "")
        slows.pop(0).cancel()  # a slot frees: the queued query runs
        thread.join(60)
        assert waiter[0].ok, waiter[0].describe()
        assert waiter[0].table.column(0).to_pylist() == [42]
    finally:
        for slow in slows:
            slow.cancel()


def test_refusals_are_audited(small: ServerProcess, tmp_path: Path) -> None:
    record = small.create_token("reader", name="audited-refusal")
    slow = Slow(small, str(record["token"]))
    try:
        _until(lambda: _metric(small, "agentdata_active_streams") >= 1, "the slow query")
        assert run_flight(small, str(record["token"]), "SELECT 7").code == "resource_exhausted"
    finally:
        slow.cancel()
    with small.http() as http:
        items = http.get("/api/v1/audit", params={"token_id": record["id"]}).json()["items"]
    assert sorted(r["outcome"] for r in items) == ["cancelled", "resource_exhausted"]
