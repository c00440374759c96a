"""MCP over streamable HTTP at `/mcp` on the REST port, behind the same Bearer tokens.

    POST /mcp   Authorization: Bearer <token>   (JSON-RPC; answers JSON)
    -> 401 application/problem+json without a valid token, like every REST route

Every HTTP request is verified on its own (so revocation applies to the very next
call) and the principal rides in the request's ASGI scope, where a tool reads it
back through the SDK's per-request context (`principal_of`); `mcp_server.mount` puts
the transport on the control plane's app (`mount_mcp`). The transport is
stateless: no MCP session is kept between requests, so nothing binds a session to
a credential, nothing needs expiring, and any server behind a load balancer can
answer. Responses are plain JSON (no SSE): the tools answer in one message.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from agentdata.errors import Unauthenticated
from agentdata.tokens import Principal, TokenVerifier

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
    """ASGI middleware: verify `Authorization: Bearer`, or raise Unauthenticated (401)."""

    def __init__(self, app: ASGIApp, tokens: TokenVerifier) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        # A meta-store lookup of microseconds: fine on the event loop. Unauthenticated
        # propagates to the app's one HTTP error mapping (control_api.errors): a 401
        # problem+json like every REST route's.
        principal = self.tokens.verify(token.strip() if scheme.lower() == "bearer" else None)
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)
