"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from agentdata import __version__
from agentdata.core import Core
from control_api.errors import install_error_handlers
from control_api.routers import (
    artefacts,
    exports,
    health,
    jobs,
    maintenance,
    syncs,
    tasks,
    tokens,
)


def create_app(core: Core) -> FastAPI:
    """Build the control plane over `core` (one app per core; tests build their own)."""
    app = FastAPI(
        title="agentdata control plane",
        version=__version__,
        description="Tokens, artefacts, exports, jobs and syncs for the agentdata data server. "
        "Every route except /healthz and /readyz needs `Authorization: Bearer <token>`.",
    )
    app.state.core = core
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(tokens.router)
    app.include_router(artefacts.router)
    app.include_router(jobs.router)
    app.include_router(exports.router)
    app.include_router(tasks.router)
    app.include_router(maintenance.router)
    app.include_router(syncs.router)
    return app
