"""Starting export jobs: one sequence for every channel (REST `POST /api/v1/exports`,
MCP's `export` tool).

    started = start_export(core, principal, "SELECT * FROM demo.orders", fmt="parquet")
    started.job.id   # poll GET /api/v1/jobs/{id}; its result names the artefact

The SQL is checked at once (parse, role, table allow-list, cost guard, result schema),
so bad SQL and forbidden tables fail before any job exists. The job then starts as
every job does (`agentdata.tasks.start_job`): its task runs with a credential
delegated from the caller (`TokenService.delegate`), so the same limits apply when it
reads the result over Flight, as for any query of this token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from agentdata import audit
from agentdata.artefacts import safe_name
from agentdata.errors import InvalidArgument
from agentdata.exports import ExportSpec
from agentdata.jobs import Job
from agentdata.sqlguard import Kind
from agentdata.tasks import start_job
from agentdata.tokens import Principal

if TYPE_CHECKING:
    from agentdata.core import Core


@dataclass(frozen=True)
class StartedExport:
    """A queued export job, with what the caller may want to show about it."""

    job: Job
    task_id: str
    spec: ExportSpec
    schema: pa.Schema


def start_export(
    core: Core,
    principal: Principal,
    sql: str,
    *,
    fmt: str = "parquet",
    compression: str | None = None,
    name: str | None = None,
    truncate: bool = False,
) -> StartedExport:
    """Check `sql` for `principal` and queue an export job writing its result to an artefact.

    With `truncate`, a result over the token's max_rows is cut at max_rows (the job's
    result says `truncated`) instead of failing the job with `resource_exhausted`."""
    spec = ExportSpec.parse(fmt, compression)
    if name is not None:
        safe_name(name)  # refused now, not when the finished file is stored
    with audit.channel("export"):
        stmt, schema = core.engine.schema_of(principal, sql)
    if stmt.kind is not Kind.READ:
        raise InvalidArgument("exports run queries only (SELECT, WITH, ...), not writes")
    spec.check_schema(schema)
    params: dict[str, Any] = {
        "sql": sql,
        "format": spec.format,
        "compression": spec.compression,
        "name": name,
        "expires_in_s": core.settings.export_ttl_s,
        "truncate": truncate,
    }
    started = start_job(core, "export", params, principal=principal)
    return StartedExport(job=started.job, task_id=started.task_id, spec=spec, schema=schema)


def resume_params(core: Core, job: Job) -> dict[str, Any]:
    """The task params of export `job` again, with a fresh credential (the same identity
    and limits as its first): for a job a server restart interrupted."""
    token = core.tokens.redelegate(job.id, ttl_s=core.settings.task_token_ttl_s)
    return {**job.params, "job_id": job.id, "token": token}
