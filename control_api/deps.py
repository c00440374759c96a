"""Request dependencies: the core, and the calling principal from the Bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentdata.core import Core
from agentdata.errors import Unauthenticated
from agentdata.tokens import Principal

_bearer = HTTPBearer(
    auto_error=False, description="A token from POST /api/v1/tokens, or the admin token."
)


def get_core(request: Request) -> Core:
    return request.app.state.core  # type: ignore[no-any-return]


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Verify the Bearer token on every call (so revocation is immediate)."""
    core: Core = request.app.state.core
    return core.tokens.verify(credentials.credentials if credentials else None)


def get_principal_if_any(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller if it sent a valid token, else None (for routes open to anyone)."""
    if credentials is None:
        return None
    core: Core = request.app.state.core
    try:
        return core.tokens.verify(credentials.credentials)
    except Unauthenticated:
        return None


def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require_admin()
    return principal


CoreDep = Annotated[Core, Depends(get_core)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
MaybePrincipalDep = Annotated[Principal | None, Depends(get_principal_if_any)]
AdminDep = Annotated[Principal, Depends(get_admin)]
