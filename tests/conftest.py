"""Shared fixtures: a real `agentdata serve` process per test module (or per test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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


#: Below this much free space under the temp dir, the run says so first: servers' data,
#: spill files and logs of a whole run take about a GiB.
LOW_DISK_GIB = 3.0


def _free_disk_gib() -> float:
    return shutil.disk_usage(tempfile.gettempdir()).free / 2**30


def _machine() -> str:
    """Free disk under the temp dir, available memory and load: what a run that fails
    only on some machine is first asked about."""
    available = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"temp disk free {_free_disk_gib():.1f} GiB, memory available {available}, load {load}"


def pytest_sessionstart(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _free_disk_gib() < LOW_DISK_GIB:
        reporter.write_line(f"warning: low disk, tests may fail for it: {_machine()}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"machine at the end: {_machine()}")
