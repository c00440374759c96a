"""The wiring: the core is built complete and frozen, and every adapter takes the
collaborators it uses, so its handlers run over fakes (no data dir for Flight and
MCP, one swapped dependency for REST; no server process)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.flight as fl
import pytest

from agentdata.core import Core
from agentdata.errors import Unauthenticated
from agentdata.settings import Settings
from agentdata.tasks import NoDispatcher
from agentdata.tokens import Principal, Role
from control_api.deps import get_dispatcher, get_engine
from flight_server import build_flight_server
from mcp_server.tools import AgentTools
from tests.support.inprocess import FakeCallContext, RestClient, open_core

ADMIN = Principal(token_id="admin-id", name="admin", role=Role.ADMIN)


class FakeTokens:
    """A token verifier that knows one token."""

    def verify(self, token: str | None) -> Principal:
        if token != "good":
            raise Unauthenticated("not the good token")
        return ADMIN


class FakeEngine:
    """Just what the handlers under test call."""

    def __init__(self, *, healthy: bool = True) -> None:
        self.healthy = healthy

    def health(self) -> dict[str, Any]:
        if not self.healthy:
            raise RuntimeError("the fake database is down")
        return {"database": "fake", "running_queries": 42}

    def cancel_all(self, reason: str) -> int:
        return 0


class FakeDispatcher(NoDispatcher):
    mode = "fake"

    def queues(self) -> list[dict[str, Any]]:
        return [{"name": "fakes", "depth": 3, "kinds": ["export"], "broker": None}]


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    core = open_core(tmp_path / "data")
    yield core
    core.close()


def test_the_core_is_frozen_and_complete(core: Core) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        core.dispatcher = FakeDispatcher()  # type: ignore[misc]
    # Opened without a dispatcher, it says so with an object built up front.
    assert isinstance(core.dispatcher, NoDispatcher)
    assert core.dispatcher.probes() == {}


# -- Flight --------------------------------------------------------------------------
@pytest.fixture
def flight(tmp_path: Path) -> Iterator[fl.FlightServerBase]:
    settings = Settings(data_dir=tmp_path / "unused", host="127.0.0.1", flight_port=0)
    server = build_flight_server(FakeEngine(), FakeTokens(), settings)  # type: ignore[arg-type]
    yield server
    server.stop()
    server.wait()


def test_a_flight_handler_runs_over_a_fake_engine(flight: fl.FlightServerBase) -> None:
    [result] = flight.do_action(FakeCallContext(ADMIN), fl.Action("health", b""))
    assert json.loads(result) == {"status": "ok", "database": "fake", "running_queries": 42}


def test_the_flight_server_authenticates_with_the_verifier_it_is_given(
    flight: fl.FlightServerBase,
) -> None:
    client = fl.connect(f"grpc://127.0.0.1:{flight.port}")
    try:
        good = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer good")])
        [result] = client.do_action(fl.Action("health", b""), good)
        assert json.loads(result.body.to_pybytes())["running_queries"] == 42
        bad = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer bad")])
        with pytest.raises(fl.FlightUnauthenticatedError, match="not the good token"):
            list(client.do_action(fl.Action("health", b""), bad))
    finally:
        client.close()


# -- REST ----------------------------------------------------------------------------
def test_a_rest_route_runs_over_a_fake_engine(core: Core) -> None:
    rest = RestClient(core)
    rest.app.dependency_overrides[get_engine] = lambda: FakeEngine(healthy=False)
    r = rest.request("GET", "/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "error: the fake database is down"}
    # Only that collaborator was swapped: the real core still answers the rest.
    assert isinstance(core.engine.health(), dict)


def test_a_rest_route_runs_over_a_fake_dispatcher(core: Core) -> None:
    rest = RestClient(core)
    assert rest.request("GET", "/api/v1/tasks/queues").status_code == 503  # no dispatcher
    rest.app.dependency_overrides[get_dispatcher] = FakeDispatcher
    r = rest.request("GET", "/api/v1/tasks/queues")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "runner": "fake",
        "queues": [{"name": "fakes", "depth": 3, "kinds": ["export"], "broker": None}],
    }


# -- MCP -----------------------------------------------------------------------------
def test_an_mcp_tool_starts_exports_through_what_it_is_given() -> None:
    started: list[tuple[str, str, str, bool]] = []

    def start_export(principal: Principal, sql: str, *, fmt: str, truncate: bool) -> Any:
        started.append((principal.token_id, sql, fmt, truncate))
        return SimpleNamespace(
            job=SimpleNamespace(id="job-1", state="queued"),
            spec=SimpleNamespace(format=fmt),
            schema=[],
        )

    tools = AgentTools(
        FakeEngine(),  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        start_export=start_export,
        max_result_chars=1000,
        flight_url="grpc://example:8815",
    )
    answer = tools.export(ADMIN, "SELECT 1", "csv")
    assert started == [("admin-id", "SELECT 1", "csv", False)]
    assert answer.data == {"job_id": "job-1", "state": "queued", "format": "csv", "columns": []}
