"""Request dependencies: the collaborators routes use, and the calling principal.

`create_app` puts each of the core's collaborators on `app.state`; a route asks for the
ones it uses (`EngineDep`, `JobsDep`, `TokensDep`...), so a test can swap one for a fake
with `app.dependency_overrides[get_engine] = lambda: fake`. Routes that call a use case
spanning several stores (start an export, run a rule, revoke a token) take the core
(`CoreDep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentdata.artefacts import ArtefactStore
from agentdata.core import Core
from agentdata.engine import Engine
from agentdata.errors import Unauthenticated
from agentdata.jobs import JobStore
from agentdata.meta import MetaStore
from agentdata.settings import Settings
from agentdata.syncs import SyncStore
from agentdata.tasks import Dispatcher
from agentdata.tokens import Principal, TokenService

_bearer = HTTPBearer(
    auto_error=False, description="A token from POST /api/v1/tokens, or the admin token."
)


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


def get_core(request: Request) -> Core:
    return _state(request, "core")  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return _state(request, "settings")  # type: ignore[no-any-return]


def get_engine(request: Request) -> Engine:
    return _state(request, "engine")  # type: ignore[no-any-return]


def get_meta(request: Request) -> MetaStore:
    return _state(request, "meta")  # type: ignore[no-any-return]


def get_tokens(request: Request) -> TokenService:
    return _state(request, "tokens")  # type: ignore[no-any-return]


def get_jobs(request: Request) -> JobStore:
    return _state(request, "jobs")  # type: ignore[no-any-return]


def get_artefacts(request: Request) -> ArtefactStore:
    return _state(request, "artefacts")  # type: ignore[no-any-return]


def get_syncs(request: Request) -> SyncStore:
    return _state(request, "syncs")  # type: ignore[no-any-return]


def get_dispatcher(request: Request) -> Dispatcher:
    return _state(request, "dispatcher")  # type: ignore[no-any-return]


def get_probes(
    dispatcher: Annotated[Dispatcher, Depends(get_dispatcher)],
) -> Mapping[str, Callable[[], object]]:
    """Readiness checks beyond the database (the broker), name -> raises if down."""
    return dispatcher.probes()


CoreDep = Annotated[Core, Depends(get_core)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetaDep = Annotated[MetaStore, Depends(get_meta)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
ArtefactsDep = Annotated[ArtefactStore, Depends(get_artefacts)]
SyncsDep = Annotated[SyncStore, Depends(get_syncs)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
ProbesDep = Annotated[Mapping[str, Callable[[], object]], Depends(get_probes)]


def get_principal(
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Verify the Bearer token on every call (so revocation is immediate)."""
    return tokens.verify(credentials.credentials if credentials else None)


def get_principal_if_any(
    tokens: TokensDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller if it sent a valid token, else None (for routes open to anyone)."""
    if credentials is None:
        return None
    try:
        return tokens.verify(credentials.credentials)
    except Unauthenticated:
        return None


def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require_admin()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
MaybePrincipalDep = Annotated[Principal | None, Depends(get_principal_if_any)]
AdminDep = Annotated[Principal, Depends(get_admin)]
