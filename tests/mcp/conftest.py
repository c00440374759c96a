"""One server for the MCP tests (package scope: the tool tests and the doc examples)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture(scope="package")
def mcp_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("mcp") / "data")
    yield srv
    srv.stop()
