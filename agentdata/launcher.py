"""`agentdata serve`: the Flight server, the control plane and MCP in one process, over one core.

Start-up: make the data dir private (umask 077; existing entries 0700/0600), build the
task dispatcher (Celery with a Redis URL, else the in-process runner), open the core
with it (complete from then on; the demo is loaded on a first start), bind the HTTP
socket, build Flight over the core's engine and token service (it listens as soon as
it is built), so both ports, hence the loopback URLs tasks use, are known; then start
the dispatcher with the core and those URLs, mount REST and MCP, and run uvicorn in
the main thread. Shutdown on SIGINT or SIGTERM: cancel running queries at once (open
streams end with UNAVAILABLE), let uvicorn finish its requests, stop the dispatcher,
stop Flight, checkpoint and close the database, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from agentdata.core import Core
from agentdata.datadir import make_private, private_umask
from agentdata.settings import Settings
from agentdata.tasks import Dispatcher, Endpoints, connectable_host

log = logging.getLogger("agentdata")


class _Server(uvicorn.Server):
    """uvicorn, minus its habit of re-raising the signal after a graceful exit."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            log.info("received %s: shutting down", signal.Signals(signum).name)
            self._on_signal()

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve(settings: Settings, dispatcher: Dispatcher | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code.

    `dispatcher` is where tasks go (default: `default_dispatcher(settings)`)."""
    from control_api import create_app
    from flight_server import build_flight_server
    from flight_server.flightsql import FlightSqlService
    from mcp_server import mount_mcp

    configure_logging(settings.log_level)
    # Before anything is opened: every file the process creates, and every one an
    # earlier run left, is the server user's alone (see agentdata.datadir).
    private_umask()
    make_private(settings.data_dir)
    from workers.sync.federation import SyncSnowflakeSide

    if dispatcher is None:
        dispatcher = default_dispatcher(settings)
    try:
        core = Core.open(settings, snowflake=SyncSnowflakeSide(), dispatcher=dispatcher)
    except Exception:
        dispatcher.close()
        raise
    if settings.admin_token is None:
        log.info(
            "admin token file: %s (mode 0600; the token itself is never logged)",
            settings.admin_token_path,
        )
    flight = None
    try:
        http_sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        http_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        http_sock.bind((settings.host, settings.http_port))
        http_port = http_sock.getsockname()[1]
        flight = build_flight_server(
            core.engine,
            core.tokens,
            settings,
            sql_service=FlightSqlService(core.engine, started_ttl_s=settings.started_query_ttl_s),
        )
        endpoints = loopback_endpoints(settings, flight.port, http_port)
        core.dispatcher.start(core, endpoints)
        app = create_app(core)
        mount_mcp(app, core, flight_url=endpoints.flight_url)  # MCP at /mcp, same port and tokens
        config = uvicorn.Config(
            app,
            log_level=settings.log_level.lower(),
            access_log=False,
            **_https_options(settings),
        )
        scheme = "grpc+tls" if settings.tls_cert else "grpc"
        web = "https" if settings.tls_cert else "http"
        log.info(
            "agentdata ready: flight=%s://%s:%d http=%s://%s:%d data_dir=%s",
            scheme,
            settings.host,
            flight.port,
            web,
            settings.host,
            http_port,
            settings.data_dir,
        )
        server = _Server(
            config, on_signal=lambda: core.engine.cancel_all("the server is shutting down")
        )
        server.run(sockets=[http_sock])
    finally:
        # Tasks first: a running one may still call this server to record its end.
        with contextlib.suppress(Exception):
            core.dispatcher.close()
        if flight is not None:
            flight.stop()
        core.close()
        log.info("agentdata stopped cleanly")
    return 0


def default_dispatcher(settings: Settings) -> Dispatcher:
    """Where tasks go: with a Redis URL, Celery workers (workers.dispatcher, with a
    broker readiness probe); without, the in-process task runner and scheduler
    (agentdata.runner), handed the task functions of the registry (workers.registry)."""
    if settings.redis_url:
        from workers.dispatcher import CeleryDispatcher

        return CeleryDispatcher(settings)
    from agentdata.runner import InProcessRunner
    from workers.registry import REGISTRY, warm_up

    return InProcessRunner(settings, tasks=REGISTRY, warm_up=warm_up)


def loopback_endpoints(settings: Settings, flight_port: int, http_port: int) -> Endpoints:
    """How in-process tasks reach this server (a wildcard bind address means loopback)."""
    host = connectable_host(settings.host)
    tls = settings.tls_cert is not None
    # A self-signed certificate is the root tasks trust.
    roots = Path(settings.tls_cert).read_bytes() if settings.tls_cert is not None else None
    return Endpoints(
        f"{'https' if tls else 'http'}://{host}:{http_port}",
        f"{'grpc+tls' if tls else 'grpc'}://{host}:{flight_port}",
        roots,
    )


def _https_options(settings: Settings) -> dict[str, Any]:
    if settings.tls_cert is None:
        return {}
    options: dict[str, object] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
    }
    if settings.tls_client_ca is not None:
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
