"""Health, readiness and metrics (the table catalogue is in `tables`).

/healthz and /readyz answer without a token (orchestrators probe them); /readyz
shows the checks behind its answer to admin tokens only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentdata import __version__
from agentdata.metrics import REGISTRY
from control_api.deps import CoreDep, EngineDep, MaybePrincipalDep, PrincipalDep, ProbesDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no auth, no dependencies)."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": 'Not ready: `{"status": "not ready"}` (and the checks, for admins).',
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
def readyz(engine: EngineDep, probes: ProbesDep, principal: MaybePrincipalDep) -> JSONResponse:
    """The database (and, when configured, the broker) answers: 200 or 503.

    Anyone may ask (probes carry no token) and gets only `{"status": ...}`; an admin
    token also gets each check's result, which may name the failing component's error.
    """
    checks: dict[str, Any] = {}
    ok = True
    try:
        engine.health()
        checks["database"] = "ok"
    except Exception as e:  # readiness reports, it does not raise
        ok = False
        checks["database"] = f"error: {e}"
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception as e:
            ok = False
            checks[name] = f"error: {type(e).__name__}"
    body: dict[str, Any] = {"status": "ready" if ok else "not ready"}
    if principal is not None and principal.is_admin:
        body["checks"] = checks
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
def prometheus_metrics(core: CoreDep, principal: PrincipalDep) -> Response:
    """Prometheus text format (the core refreshes the gauges of every store and the
    task dispatcher first)."""
    core.refresh_gauges()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
