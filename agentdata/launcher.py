"""`agentdata serve`: the Flight server, the control plane and MCP in one process, over one core.

Start-up: make the data dir private (umask 077; existing entries 0700/0600), open the
core (loading the demo on a first start), start Flight (it listens as soon as it is
built), then run uvicorn in the main thread. Shutdown on SIGINT or
SIGTERM: cancel running queries at once (open streams end with UNAVAILABLE), let
uvicorn finish its requests, stop Flight, checkpoint and close the database, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from agentdata.core import Core
from agentdata.datadir import make_private, private_umask
from agentdata.settings import Settings
from agentdata.tasks import connectable_host

log = logging.getLogger("agentdata")

#: Extra start/stop hooks (the in-process task runner and scheduler register here).
Component = tuple[Callable[[Core], None], Callable[[Core], None]]


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


def serve(settings: Settings, components: list[Component] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
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

    core = Core.open(settings, snowflake=SyncSnowflakeSide())
    if settings.admin_token is None:
        log.info(
            "admin token file: %s (mode 0600; the token itself is never logged)",
            settings.admin_token_path,
        )
    flight = build_flight_server(core, sql_service=FlightSqlService(core))
    started: list[Component] = []
    try:
        for start, stop in components or default_components(settings):
            start(core)
            started.append((start, stop))
        http_sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        http_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        http_sock.bind((settings.host, settings.http_port))
        http_port = http_sock.getsockname()[1]
        core.endpoints.update(_loopback_urls(settings, flight.port, http_port))
        app = create_app(core)
        mount_mcp(app, core)  # MCP at /mcp, same port and tokens
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
        for _start, stop in reversed(started):
            with contextlib.suppress(Exception):
                stop(core)
        flight.stop()
        core.close()
        log.info("agentdata stopped cleanly")
    return 0


def default_components(settings: Settings | None = None) -> list[Component]:
    """Components `serve` runs beside the servers: where tasks go.

    Without a Redis URL, the in-process task runner and scheduler (agentdata.runner),
    handed the task functions of the registry (workers.registry); with one, dispatch
    to Celery workers plus a broker readiness probe (workers.dispatcher).
    """
    if settings is not None and settings.redis_url:
        from workers.dispatcher import celery_component

        return [celery_component()]
    from agentdata.runner import runner_component
    from workers.registry import REGISTRY, warm_up

    return [runner_component(REGISTRY, warm_up)]


def _loopback_urls(settings: Settings, flight_port: int, http_port: int) -> dict[str, str]:
    """How in-process tasks reach this server (a wildcard bind address means loopback)."""
    host = connectable_host(settings.host)
    tls = settings.tls_cert is not None
    return {
        "http": f"{'https' if tls else 'http'}://{host}:{http_port}",
        "flight": f"{'grpc+tls' if tls else 'grpc'}://{host}:{flight_port}",
    }


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
