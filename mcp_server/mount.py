"""Mounting MCP on the control plane's app: `/mcp` on the REST port, behind `BearerAuth`.

Apart from `mcp_server.http` (the transport's auth) so that the tools' server
(`mcp_server.server`), which reads the principal back through `mcp_server.http`, and
the mount, which builds that server, import in one direction only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route

from agentdata.export_runs import start_export
from mcp_server.http import MCP_PATH, BearerAuth
from mcp_server.server import build_mcp
from mcp_server.tools import AgentTools

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentdata.core import Core
    from agentdata.tokens import TokenVerifier


def mount_mcp(app: FastAPI, core: Core, *, flight_url: str | None = None) -> None:
    """Serve MCP at `/mcp` on `app` (the control plane's FastAPI app) over `core`'s
    engine, jobs and tokens; `flight_url` is the Flight SQL URL its hints name."""
    tools = AgentTools(
        core.engine,
        core.jobs,
        start_export=functools.partial(start_export, core),
        max_result_chars=core.settings.mcp_max_result_chars,
        flight_url=flight_url,
    )
    mount_tools(app, tools, core.tokens)


def mount_tools(app: FastAPI, tools: AgentTools, tokens: TokenVerifier) -> None:
    """Serve MCP at `/mcp` on `app` with `tools`, behind Bearer tokens checked by `tokens`."""
    # The SDK logs every stateless request's end at INFO; that is noise in our log.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    server = build_mcp(tools)
    server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        # DNS-rebinding protection guards servers that trust whoever reaches them;
        # this one trusts only the Bearer token, which a rebinding page cannot know,
        # and must answer under whatever host name it is deployed.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    endpoint = BearerAuth(StreamableHTTPASGIApp(manager), tokens)
    # A route, not a mount: `/mcp` itself answers (a mount would redirect to `/mcp/`).
    app.router.routes.append(Route(MCP_PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    app.router.lifespan_context = _with_manager(app.router.lifespan_context, manager.run)


def _with_manager(
    previous: Callable[[Any], AbstractAsyncContextManager[Any]],
    run: Callable[[], AbstractAsyncContextManager[None]],
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """The app's lifespan, with the MCP session manager running inside it."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with run(), previous(app) as state:
            yield state

    return lifespan
