"""Start a real `agentdata serve` process on free ports, for end-to-end tests.

The server binds port 0 (the kernel picks free ports, so two test processes can
never race for one) and the ports it got are read back from its ready line:

    agentdata ready: flight=grpc://127.0.0.1:40123 http=http://127.0.0.1:40124 ...
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as fl

REPO = Path(__file__).resolve().parents[2]

#: The deadline of a Flight call made through `ServerProcess.options` (a whole stream's).
CALL_TIMEOUT_S = 120.0
#: The line `agentdata serve` logs once both servers listen (agentdata.launcher).
READY = re.compile(rb"agentdata ready: flight=\S+://\S*:(\d+) http=\S+://\S*:(\d+)")


def free_port() -> int:
    """A port free now, for tests that need one nothing listens on (a dead address);
    servers bind port 0 instead (see `start_server`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server and handy clients for it."""

    data_dir: Path
    flight_port: int
    http_port: int
    admin_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Set when the server runs with TLS: how HTTP clients verify it (and present a cert).
    tls: ssl.SSLContext | None = None

    @property
    def flight_url(self) -> str:
        return f"{'grpc+tls' if self.tls else 'grpc'}://127.0.0.1:{self.flight_port}"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    def flight(self) -> fl.FlightClient:
        return fl.connect(self.flight_url)

    @staticmethod
    def options(token: str, timeout: float = CALL_TIMEOUT_S) -> fl.FlightCallOptions:
        """Call options bearing `token`. Every call has a deadline: a server that stops
        answering fails the test instead of blocking it inside gRPC for ever."""
        return fl.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {token}".encode())], timeout=timeout
        )

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(
            base_url=self.http_url, headers=headers, timeout=60, verify=self.tls or True
        )

    def create_token(self, role: str = "reader", **kwargs: Any) -> dict[str, Any]:
        with self.http() as c:
            r = c.post(
                "/api/v1/tokens",
                json={"name": kwargs.pop("name", f"t-{role}"), "role": role, **kwargs},
            )
            assert r.status_code == 201, r.text
            return r.json()

    def query(self, token: str, sql: str) -> pa.Table:
        client = self.flight()
        opts = self.options(token)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        return client.do_get(info.endpoints[0].ticket, opts).read_all()

    def execute(self, token: str, sql: str) -> int:
        client = self.flight()
        (result,) = list(client.do_action(fl.Action("execute", sql.encode()), self.options(token)))
        return int(json.loads(result.body.to_pybytes())["rows"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    demo_rows: int = 20_000,
    args: list[str] | None = None,
    wait: float = 60,
    tls: ssl.SSLContext | None = None,
) -> ServerProcess:
    """Start `agentdata serve` and wait until both ports answer.

    With TLS on (AGENTDATA_TLS_* in `env`), pass `tls`: the client context that trusts
    the server's CA (and holds a client certificate under mutual TLS); the health poll
    then speaks HTTPS with it.
    """
    admin = "adt_test_" + os.urandom(12).hex()
    full_env = {
        **os.environ,
        "AGENTDATA_DATA_DIR": str(data_dir),
        "AGENTDATA_FLIGHT_PORT": "0",
        "AGENTDATA_HTTP_PORT": "0",
        "AGENTDATA_LOG_LEVEL": "INFO",
        "AGENTDATA_ADMIN_TOKEN": admin,
        "AGENTDATA_DEMO_ROWS": str(demo_rows),
        "AGENTDATA_MEMORY_LIMIT": "1GB",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env.pop("AGENTDATA_REDIS_URL", None) if "AGENTDATA_REDIS_URL" not in (env or {}) else None
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log_file:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentdata", "serve", *(args or [])],
            cwd=REPO,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(data_dir, 0, 0, admin, proc, log_path, full_env, tls)
    return _wait_healthy(server, wait, log_start)


def restart_server(server: ServerProcess, *, wait: float = 60) -> ServerProcess:
    """Kill `server` (SIGKILL: no clean shutdown, as when a machine dies) and start it
    again with the same ports, data dir, admin token and settings."""
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()
    log_start = server.log_path.stat().st_size
    with open(server.log_path, "ab") as log_file:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentdata", "serve"],
            cwd=REPO,
            env=server.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    again = ServerProcess(
        server.data_dir,
        server.flight_port,
        server.http_port,
        server.admin_token,
        proc,
        server.log_path,
        server.env,
        server.tls,
    )
    return _wait_healthy(again, wait, log_start)


def _wait_healthy(server: ServerProcess, wait: float, log_start: int) -> ServerProcess:
    """Wait until the server logs its ports (past `log_start` in its log) and answers
    /healthz (it exiting, or the deadline, is an error). A server started on port 0
    keeps the ports it got across `restart_server`."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        if not server.http_port:
            with open(server.log_path, "rb") as f:
                f.seek(log_start)
                ready = READY.search(f.read())
            if ready is None:
                time.sleep(0.05)
                continue
            server.flight_port, server.http_port = int(ready[1]), int(ready[2])
            server.env.update(
                AGENTDATA_FLIGHT_PORT=str(server.flight_port),
                AGENTDATA_HTTP_PORT=str(server.http_port),
            )
        try:
            health = httpx.get(f"{server.http_url}/healthz", timeout=1, verify=server.tls or True)
            if health.status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not start in {wait}s:\n{server.log()}")
