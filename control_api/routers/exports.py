"""/api/v1/exports: run a query into a file (CSV, JSON Lines, Parquet, Arrow IPC) as a job.

    POST /api/v1/exports {"sql": "SELECT * FROM demo.orders", "format": "parquet",
                          "compression": "zstd"}
    -> 202 {"job_id": "…", "task_id": "…", "state": "queued"}
    GET  /api/v1/jobs/{job_id}      -> state, progress; when succeeded result.artefact_id
    GET  /api/v1/artefacts/{artefact_id}/content   -> the file

The SQL is checked at once (parse, role, table allow-list, result schema), so bad SQL
is a 400 and a forbidden table a 403 before any job exists. The task then runs with a
credential delegated from the caller: the same limits (allow-list, max_rows,
timeout) apply when it reads the result over Flight, as for any query of this token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from agentdata.artefacts import safe_name
from agentdata.errors import AgentdataError, InvalidArgument, Unavailable
from agentdata.exports import COMPRESSIONS, FORMATS, ExportSpec
from agentdata.sqlguard import Kind
from control_api.deps import CoreDep, PrincipalDep

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])


class ExportRequest(BaseModel):
    sql: str = Field(min_length=1, max_length=1_000_000, description="One read statement.")
    format: str = Field(
        "parquet", description=f"One of {', '.join(FORMATS)} (json means JSON Lines)."
    )
    compression: str = Field(
        "none",
        description="; ".join(f"{f}: {', '.join(c)}" for f, c in COMPRESSIONS.items()),
    )
    name: str | None = Field(
        None, max_length=255, description="File name for the artefact (default export-<job>.<ext>)."
    )


class ExportAccepted(BaseModel):
    job_id: str
    task_id: str
    state: str
    format: str
    compression: str
    columns: list[dict[str, Any]] = Field(description="The result's columns and Arrow types.")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportAccepted,
    responses={
        400: {"description": "Bad SQL, or a format/compression that does not go together."},
        403: {"description": "The SQL reads a table outside this token's allow-list."},
        503: {"description": "The task broker is unreachable."},
    },
)
def create_export(body: ExportRequest, core: CoreDep, principal: PrincipalDep) -> ExportAccepted:
    """Start an export job; poll `GET /api/v1/jobs/{job_id}` for its artefact."""
    spec = ExportSpec.parse(body.format, body.compression)
    if body.name is not None:
        safe_name(body.name)  # refused now (400), not when the finished file is stored
    stmt, schema = core.engine.schema_of(principal, body.sql)
    if stmt.kind is not Kind.READ:
        raise InvalidArgument("exports run queries only (SELECT, WITH, ...), not writes")
    spec.check_schema(schema)
    dispatcher = core.dispatcher
    if dispatcher is None:
        raise Unavailable("this server runs no task dispatcher")
    params: dict[str, Any] = {
        "sql": body.sql,
        "format": spec.format,
        "compression": spec.compression,
        "name": body.name,
        "expires_in_s": core.settings.export_ttl_s,
    }
    job = core.jobs.create("export", params, owner=principal.token_id)
    from agentdata.dispatch import new_task_id

    task_id = new_task_id()
    core.jobs.set_task_id(job.id, task_id)
    token = core.tokens.delegate(principal, job_id=job.id, ttl_s=core.settings.task_token_ttl_s)
    try:
        dispatcher.submit("export", {**params, "job_id": job.id, "token": token}, task_id=task_id)
    except AgentdataError as e:
        core.jobs.fail(job.id, step="dispatch", code=e.code, message=e.message)
        raise
    return ExportAccepted(
        job_id=job.id,
        task_id=task_id,
        state="queued",
        format=spec.format,
        compression=spec.compression,
        columns=[{"name": f.name, "type": str(f.type)} for f in schema],
    )
