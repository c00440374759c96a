"""/api/v1/exports: run a query into a file (CSV, JSON Lines, Parquet, Arrow IPC) as a job.

    POST /api/v1/exports {"sql": "SELECT * FROM demo.orders", "format": "parquet",
                          "compression": "zstd", "truncate": false}
    -> 202 {"job_id": "…", "task_id": "…", "state": "queued"}
    GET  /api/v1/jobs/{job_id}      -> state, progress; when succeeded result.artefact_id
    GET  /api/v1/artefacts/{artefact_id}/content   -> the file

The SQL is checked at once (parse, role, table allow-list, result schema), so bad SQL
is a 400 and a forbidden table a 403 before any job exists. The task then runs with a
credential delegated from the caller: the same limits (allow-list, max_rows,
timeout) apply when it reads the result over Flight, as for any query of this token.
The start sequence is the core's (`agentdata.export_runs`), shared with MCP's `export`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from agentdata.export_runs import start_export
from agentdata.exports import COMPRESSIONS, FORMATS
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
    truncate: bool = Field(
        False,
        description="With a token's max_rows: export the first max_rows rows (the result then "
        "says `truncated: true`) instead of failing with `resource_exhausted`.",
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
        429: {"description": "Over the token's max_scan_rows (the cost guard)."},
        503: {"description": "The task broker is unreachable."},
    },
)
def create_export(body: ExportRequest, core: CoreDep, principal: PrincipalDep) -> ExportAccepted:
    """Start an export job; poll `GET /api/v1/jobs/{job_id}` for its artefact."""
    started = start_export(
        core,
        principal,
        body.sql,
        fmt=body.format,
        compression=body.compression,
        name=body.name,
        truncate=body.truncate,
    )
    return ExportAccepted(
        job_id=started.job.id,
        task_id=started.task_id,
        state="queued",
        format=started.spec.format,
        compression=started.spec.compression,
        columns=[{"name": f.name, "type": str(f.type)} for f in started.schema],
    )
