"""In-process harnesses for the fast test tier: no `agentdata serve` process.

Everything is built here, in one place, from a real core on a temp data dir (so a
change to how the adapters are constructed is made once):

- `RestClient`: the control plane app over the core, called through
  `httpx.ASGITransport` (no socket, no uvicorn).
- `FlightHarness`: the real Flight server (with Flight SQL) listening on a loopback
  port of this process (pyarrow's server listens as soon as it is built: no
  `serve()` call, no subprocess), a real `pyarrow.flight` client for it, and
  `context(...)` for calling its handler methods directly:

      h.server.list_flights(h.context(token), b"")

`harness(data_dir)` opens all three and closes them (Flight server, then core) at
the end. End-to-end tests against a real server process live beside the unit tier
(tests/support/server.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as fl

from agentdata.core import Core
from agentdata.engine import Engine
from agentdata.meta import MetaStore
from agentdata.settings import Settings
from agentdata.tokens import Principal
from control_api import create_app
from flight_server import AgentdataFlightServer, build_flight_server
from flight_server.auth import MIDDLEWARE_KEY, AuthMiddleware
from flight_server.flightsql import FlightSqlService
from tests.support.server import CALL_TIMEOUT_S

#: The bootstrap admin token of every in-process core.
ADMIN = "adt_unit_" + "a" * 40


@contextmanager
def open_engine(directory: Path, *setup_sql: str) -> Iterator[Engine]:
    """A bare engine (no core, no servers) on `directory`, for tests of the engine
    alone; `setup_sql` runs first, through the writer."""
    meta = MetaStore(directory / "meta.sqlite")
    engine = Engine(directory / "db.duckdb", meta, memory_limit="256MB")
    try:
        if setup_sql:
            with engine.writer() as cur:
                for sql in setup_sql:
                    cur.execute(sql)
        yield engine
    finally:
        engine.close()
        meta.close()


def open_core(data_dir: Path, *, demo_rows: int | None = None, **settings: Any) -> Core:
    """A real core on `data_dir`: no demo unless `demo_rows` is given, a fixed admin
    token, a small memory limit, Flight on a free loopback port."""
    if demo_rows is not None:
        settings["demo_rows"] = demo_rows
    return Core.open(
        Settings(
            data_dir=data_dir,
            demo=demo_rows is not None,
            admin_token=ADMIN,
            jwt_secret="j" * 40,
            host="127.0.0.1",
            flight_port=0,
            memory_limit="1GB",
            **settings,
        )
    )


class RestClient:
    """The control plane over one core, called in process."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.app = create_app(core)

    def request(
        self, method: str, url: str, *, token: str | None = ADMIN, **kwargs: Any
    ) -> httpx.Response:
        """One request as `token` (None: no Authorization header)."""

        async def call() -> httpx.Response:
            # raise_app_exceptions=False: a 500 is answered, as uvicorn would.
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            headers.update(kwargs.pop("headers", {}))
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await c.request(method, url, headers=headers, **kwargs)

        return asyncio.run(call())

    def post_raw(self, url: str, body: str) -> httpx.Response:
        """POST a JSON text as is (Python's JSON reader accepts NaN and Infinity)."""
        return self.request(
            "POST", url, content=body.encode(), headers={"Content-Type": "application/json"}
        )

    def count(self, url: str) -> int:
        """How many items a listing answers (a page's `items`, or a plain list)."""
        body = self.request("GET", url).json()
        return len(body["items"] if isinstance(body, dict) else body)

    def create_token(self, role: str = "reader", **fields: Any) -> dict[str, Any]:
        """Issue a token through the API; answers the created record with its secret."""
        body = {"name": fields.pop("name", f"t-{role}"), "role": role, **fields}
        r = self.request("POST", "/api/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()


class FakeCallContext:
    """What the handlers read from a `ServerCallContext`: the auth middleware (holding
    the caller's principal) and whether the call was cancelled."""

    def __init__(self, principal: Principal) -> None:
        self.middleware = AuthMiddleware(principal, None)
        self.cancelled = False

    def get_middleware(self, key: str) -> AuthMiddleware | None:
        return self.middleware if key == MIDDLEWARE_KEY else None

    def is_cancelled(self) -> bool:
        return self.cancelled


@dataclass
class FlightHarness:
    """The Flight server of a core, on a loopback port of this process."""

    core: Core
    server: AgentdataFlightServer

    def __post_init__(self) -> None:
        self.client = fl.connect(f"grpc://127.0.0.1:{self.server.port}")

    @staticmethod
    def options(token: str) -> fl.FlightCallOptions:
        return fl.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {token}".encode())], timeout=CALL_TIMEOUT_S
        )

    def context(self, token: str = ADMIN) -> Any:
        """A call context for calling handlers directly, as the bearer of `token`
        (verified as the middleware would: a bad token raises [unauthenticated])."""
        return FakeCallContext(self.core.tokens.verify(token))

    def query(self, token: str, sql: str) -> pa.Table:
        """GetFlightInfo then DoGet of `sql`, over the wire."""
        opts = self.options(token)
        info = self.client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        return self.client.do_get(info.endpoints[0].ticket, opts).read_all()

    def execute(self, token: str, sql: str) -> dict[str, Any]:
        """The `execute` action over the wire; answers its first (JSON) result."""
        results = list(
            self.client.do_action(fl.Action("execute", sql.encode()), self.options(token))
        )
        return json.loads(results[0].body.to_pybytes())

    def close(self) -> None:
        """Close the client, then stop the server (cancelling running queries)."""
        self.client.close()
        self.server.stop()
        self.server.wait()


def build_flight(core: Core) -> FlightHarness:
    """The Flight server with Flight SQL, exactly as `agentdata serve` builds it."""
    server = build_flight_server(
        core.engine,
        core.tokens,
        core.settings,
        sql_service=FlightSqlService(core.engine, started_ttl_s=core.settings.started_query_ttl_s),
    )
    return FlightHarness(core, server)


@dataclass
class Harness:
    core: Core
    rest: RestClient
    flight: FlightHarness


@contextmanager
def harness(data_dir: Path, *, demo_rows: int | None = None, **settings: Any) -> Iterator[Harness]:
    """A core on `data_dir` with its control plane and Flight server; all closed after."""
    core = open_core(data_dir, demo_rows=demo_rows, **settings)
    try:
        flight = build_flight(core)
        try:
            yield Harness(core, RestClient(core), flight)
        finally:
            flight.close()
    finally:
        core.close()
