"""Bad arguments to the CLI are one line on stderr, naming the option: no traceback, no
usage block. Wrong URL schemes are refused before any connection; an unreachable
server is said to be unreachable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.server import REPO, free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    return subprocess.run(
        [sys.executable, "-m", "agentdata", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sql", "--flight-url", "http://127.0.0.1:8000", "SELECT 1"], "--flight-url"),
        (["sql", "--flight-url", "127.0.0.1:8815", "SELECT 1"], "grpc://"),
        (["job", "ls", "--url", "grpc://127.0.0.1:8815"], "Flight URL"),
        (["token", "list", "--url", "localhost:8000"], "http://"),
        (["export", "SELECT 1", "--url", "ftp://example"], "--url"),
        (["mcp", "--url", "grpc://127.0.0.1:8815"], "--url"),
        (["serve", "--reload", "--host", "0.0.0.0"], "development only"),
    ],
)
def test_wrong_url_or_setting_is_one_line(args: list[str], expected: str) -> None:
    result = _run(*args, *(["--token", "t"] if args[0] not in ("serve",) else []))
    line = _one_line_error(result)
    assert expected in line
    assert result.returncode == 2


def test_unreachable_server_is_one_line() -> None:
    dead = free_port()
    flight = _run("sql", "--flight-url", f"grpc://127.0.0.1:{dead}", "--token", "t", "SELECT 1")
    assert f"cannot reach grpc://127.0.0.1:{dead}" in _one_line_error(flight)
    rest = _run("job", "ls", "--url", f"http://127.0.0.1:{dead}", "--token", "t")
    assert f"cannot reach http://127.0.0.1:{dead}" in _one_line_error(rest)
