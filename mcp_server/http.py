"""MCP over streamable HTTP at `/mcp` on the REST port, behind the same Bearer tokens.

    POST /mcp   Authorization: Bearer <token>   (JSON-RPC; answers JSON)
    -> 401 application/problem+json without a valid token, like every REST route

Every HTTP request is verified on its own (so revocation applies to the very next
call) and the principal rides in the request's ASGI scope, where a tool reads it
back through the SDK's per-request context (`principal_of`). The transport is
stateless: no MCP session is kept between requests, so nothing binds a session to
a credential, nothing needs expiring, and any server behind a load balancer can
answer. Responses are plain JSON (no SSE): the tools answer in one message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agentdata.errors import Unauthenticated
from agentdata.tokens import Principal, TokenService
from control_api.errors import problem

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentdata.core import Core

#: Where the verified principal rides in the request's ASGI scope["state"].
PRINCIPAL_KEY = "agentdata.principal"
#: The path MCP hosts connect to.
MCP_PATH = "/mcp"


def principal_of(request: Any) -> Principal:
    """The principal `BearerAuth` verified for this HTTP request (the SDK hands tools
    the Starlette request their message came in)."""
    scope = getattr(request, "scope", None) or {}
    principal = (scope.get("state") or {}).get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise Unauthenticated("missing token: send 'Authorization: Bearer <token>'")
    return principal


class BearerAuth:
    """ASGI middleware: verify `Authorization: Bearer`, or answer 401 problem+json."""

    def __init__(self, app: ASGIApp, tokens: TokenService) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            # A meta-store lookup of microseconds: fine on the event loop.
            principal = self.tokens.verify(token.strip() if scheme.lower() == "bearer" else None)
        except Unauthenticated as e:
            await problem(401, e.code, e.message)(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def mount_mcp(app: FastAPI, core: Core) -> None:
    """Serve MCP at `/mcp` on `app` (the control plane's FastAPI app) over `core`."""
    from mcp_server.server import build_mcp

    # The SDK logs every stateless request's end at INFO; that is noise in our log.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)
    server = build_mcp(core)
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
    endpoint = BearerAuth(StreamableHTTPASGIApp(manager), core.tokens)
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
