"""`agentdata token create|list|revoke` and `agentdata sql`: the CLI as a REST/Flight
client of a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.flight as fl
import pytest

from tests.support.server import REPO, ServerProcess


def _cli(
    server: ServerProcess, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in server.env.items() if not k.startswith("AGENTDATA_")}
    env["AGENTDATA_URL"] = server.http_url
    env["AGENTDATA_FLIGHT_URL"] = server.flight_url
    env["AGENTDATA_TOKEN"] = token or server.admin_token
    return subprocess.run(
        [sys.executable, "-m", "agentdata", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_token_create_list_revoke(server: ServerProcess) -> None:
    created = _cli(
        server,
        "token",
        "create",
        "cli-agent",
        "--role",
        "reader",
        "--table",
        "demo.*",
        "--max-rows",
        "10",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    assert (
        record["role"] == "reader" and record["tables"] == ["demo.*"] and record["max_rows"] == 10
    )
    token = record["token"]
    # The new token works on Flight, within its limits.
    assert server.query(token, "SELECT count(*) AS n FROM demo.products").to_pydict() == {
        "n": [1000]
    }

    listed = _cli(server, "token", "list")
    assert listed.returncode == 0
    line = next(ln for ln in listed.stdout.splitlines() if record["id"] in ln)
    assert "active" in line and "cli-agent" in line
    assert token not in listed.stdout

    revoked = _cli(server, "token", "revoke", record["id"])
    assert revoked.returncode == 0 and record["id"] in revoked.stdout
    with pytest.raises(fl.FlightUnauthenticatedError):
        server.query(token, "SELECT 1")
    assert "revoked" in next(
        ln for ln in _cli(server, "token", "list").stdout.splitlines() if record["id"] in ln
    )


def test_token_cli_errors_are_clear(server: ServerProcess, reader_token: str) -> None:
    denied = _cli(server, "token", "create", "x", token=reader_token)
    assert denied.returncode != 0 and "permission_denied" in denied.stderr
    missing = _cli(server, "token", "revoke", "no-such-id")
    assert missing.returncode != 0 and "not_found" in missing.stderr


def test_sql_command_prints_results_and_errors(server: ServerProcess, reader_token: str) -> None:
    out = _cli(
        server,
        "sql",
        "SELECT id, name FROM demo.products ORDER BY id LIMIT 3",
        "--format",
        "json",
        token=reader_token,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    bad = _cli(server, "sql", "DROP TABLE demo.products", token=reader_token)
    assert bad.returncode != 0 and "permission_denied" in bad.stderr
