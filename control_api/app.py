"""The FastAPI application factory.

The interactive API docs (`/docs`, Swagger UI; `/redoc`, ReDoc) are served with their
JavaScript, CSS and icon from this server (`/docs/assets/...`, bundled by the
`fastapi-offline` package), so they work on a machine without internet access.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from agentdata import __version__
from agentdata.core import Core
from control_api.errors import install_error_handlers
from control_api.openapi import install_openapi
from control_api.routers import (
    artefacts,
    audit,
    exports,
    health,
    jobs,
    maintenance,
    remote_tables,
    syncs,
    tables,
    tasks,
    tokens,
)

#: Where the docs pages load their assets from (served by this app, never a CDN).
DOCS_ASSETS = "/docs/assets"


def create_app(core: Core) -> FastAPI:
    """Build the control plane over `core` (one app per core; tests build their own).

    The core's collaborators go on `app.state` one by one, each behind its own request
    dependency (`control_api.deps`), so a test can override any one with a fake."""
    app = FastAPIOffline(
        title="agentdata control plane",
        version=__version__,
        description="Tokens, artefacts, exports, jobs and syncs for the agentdata data server. "
        "Every route except /healthz and /readyz needs `Authorization: Bearer <token>`. "
        "Errors are `application/problem+json` with a stable `code`; timestamps are "
        "RFC 3339 strings in UTC.",
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise ask validator.swagger.io about the document.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.core = core  # for the routes that call a use case spanning several stores
    app.state.settings = core.settings
    app.state.engine = core.engine
    app.state.meta = core.meta
    app.state.tokens = core.tokens
    app.state.jobs = core.jobs
    app.state.artefacts = core.artefacts
    app.state.syncs = core.syncs
    app.state.dispatcher = core.dispatcher
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(tables.router)
    app.include_router(tokens.router)
    app.include_router(audit.router)
    app.include_router(artefacts.router)
    app.include_router(jobs.router)
    app.include_router(exports.router)
    app.include_router(tasks.router)
    app.include_router(maintenance.router)
    app.include_router(syncs.router)
    app.include_router(remote_tables.router)
    return app
