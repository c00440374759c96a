"""`agentdata serve --reload`: a development server that restarts when its source
changes, and that refuses to start with production settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agentdata.reload import child_argv, production_reason
from agentdata.settings import Settings
from tests.support.server import REPO, free_port


def test_production_settings_refuse_reload(tmp_path: Path) -> None:
    assert production_reason(Settings(host="127.0.0.1")) is None
    assert production_reason(Settings(host="::1")) is None
    assert production_reason(Settings(host="localhost")) is None
    assert "0.0.0.0" in str(production_reason(Settings(host="0.0.0.0")))
    assert "10.0.0.5" in str(production_reason(Settings(host="10.0.0.5")))
    assert "TLS" in str(production_reason(Settings(tls_cert=tmp_path / "cert.pem")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env["AGENTDATA_TLS_CERT"] = str(tmp_path / "cert.pem")
    refused = subprocess.run(
        [sys.executable, "-m", "agentdata", "serve", "--reload", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "Error: --reload is for development only, and TLS is configured (AGENTDATA_TLS_CERT)"
    )
    assert not (tmp_path / "data.duckdb").exists()  # nothing was opened


def test_the_child_serves_with_the_same_arguments_but_reload() -> None:
    argv = ["serve", "--reload", "--reload-dir", "src", "--http-port", "0", "--reload-dir=x"]
    assert child_argv(argv)[1:] == ["-m", "agentdata", "serve", "--http-port", "0"]


def _wait(what: str, check: object, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_changed_source_file_restarts_the_server(tmp_path: Path) -> None:
    watched = tmp_path / "src"
    watched.mkdir()
    module = watched / "module.py"
    module.write_text("VALUE = 1\n")
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env.update(
        AGENTDATA_DATA_DIR=str(tmp_path / "data"),
        AGENTDATA_HTTP_PORT=str(http_port),
        AGENTDATA_FLIGHT_PORT=str(free_port()),
        AGENTDATA_ADMIN_TOKEN="adt_reload_" + "x" * 20,
        AGENTDATA_DEMO_ROWS="1000",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentdata", "serve", "--reload", "--reload-dir", str(watched)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready_lines() -> int:
        return log.read_text(errors="replace").count("agentdata ready")

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait("the first start", lambda: ready_lines() == 1 and healthy())
        assert "watching" in log.read_text() and str(watched) in log.read_text()
        module.write_text("VALUE = 2\n")
        os.utime(module, (time.time() + 5, time.time() + 5))  # a new mtime, however coarse
        _wait("the restart", lambda: ready_lines() == 2 and healthy())
        text = log.read_text()
        assert "module.py changed; restarting the server" in text
        assert text.count("agentdata stopped cleanly") == 1  # the first child, gracefully
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0
    assert log.read_text().count("agentdata stopped cleanly") == 2
