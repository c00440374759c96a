"""Fixtures for Flight SQL tests: ADBC connections to the module's real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.adbc import AdbcConnections
from tests.support.server import ServerProcess, start_server

Connect = Callable[..., Any]


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for every Flight SQL test module (they write distinct tables)."""
    srv = start_server(tmp_path_factory.mktemp("flightsql") / "data")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def connect(server: ServerProcess) -> Iterator[Connect]:
    """`connect(token)` (Bearer header) or `connect(username=..., password=...)` (Basic
    handshake): an ADBC Flight SQL DB-API connection, closed (with every cursor it
    opened) at the end of the module."""
    opened = AdbcConnections()

    def _connect(token: str | None = None, **credentials: str) -> Any:
        return opened.connect(f"grpc://127.0.0.1:{server.flight_port}", token, credentials)

    yield _connect
    opened.close()


@pytest.fixture(scope="module")
def customers_only_token(server: ServerProcess) -> str:
    """A reader limited to demo.customers."""
    return str(
        server.create_token("reader", name="customers-only", tables=["demo.customers"])["token"]
    )
