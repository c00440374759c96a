"""Shared fixtures: a real `agentdata serve` process per test module (or per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole test module (demo dataset with 20k orders)."""
    srv = start_server(tmp_path_factory.mktemp("srv") / "data")
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that stop or break it."""
    srv = start_server(tmp_path / "data")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> str:
    return server.admin_token


@pytest.fixture(scope="module")
def reader_token(server: ServerProcess) -> str:
    return str(server.create_token("reader", name="reader")["token"])


@pytest.fixture(scope="module")
def writer_token(server: ServerProcess) -> str:
    return str(server.create_token("writer", name="writer")["token"])
