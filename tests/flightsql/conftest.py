"""Fixtures for Flight SQL tests: ADBC connections to the module's real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import pytest

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
    handshake): an ADBC Flight SQL DB-API connection, closed at the end of the module."""
    opened: list[Any] = []

    def _connect(token: str | None = None, **credentials: str) -> Any:
        db_kwargs = dict(credentials)
        if token is not None:
            db_kwargs["adbc.flight.sql.authorization_header"] = f"Bearer {token}"
        # autocommit: the server offers no Flight SQL transactions (each statement commits).
        conn = flightsql.connect(
            f"grpc://127.0.0.1:{server.flight_port}", db_kwargs=db_kwargs, autocommit=True
        )
        # Tests write `connect(token).cursor()`: keep every cursor, to close it first.
        cursor = conn.cursor

        def tracked_cursor(*args: Any, **kwargs: Any) -> Any:
            cur = cursor(*args, **kwargs)
            opened.append(cur)
            return cur

        conn.cursor = tracked_cursor
        opened.append(conn)
        return conn

    yield _connect
    for resource in reversed(opened):  # cursors before the connections they belong to
        try:
            resource.close()
        except Exception:
            pass


@pytest.fixture(scope="module")
def customers_only_token(server: ServerProcess) -> str:
    """A reader limited to demo.customers."""
    return str(
        server.create_token("reader", name="customers-only", tables=["demo.customers"])["token"]
    )
