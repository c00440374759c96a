"""/api/v1/syncs: Snowflake sync specs, and runs of them as jobs (admin only).

    POST   /api/v1/syncs                 {"name": "orders", "source": "SHOP.PUBLIC.ORDERS",
                                          "target": "sales.orders", "mode": "incremental",
                                          "cursor": "UPDATED_AT", "lookback": "1 hour",
                                          "primary_key": ["ID"], "schedule": "15m"}  -> 201
    GET    /api/v1/syncs                 every spec, with its runs and last job
    GET    /api/v1/syncs/{name}          one spec and the state of its last run
    PATCH  /api/v1/syncs/{name}          change fields (the whole spec is validated again)
    DELETE /api/v1/syncs/{name}          -> 204 (the table stays)
    POST   /api/v1/syncs/{name}/run      {"full": false} -> 202 {"job_id": ..., "task_id": ...}
    POST   /api/v1/syncs/due             start the scheduled syncs that are due (beat's tick)

A run is a job of kind `sync` (`GET /api/v1/jobs/{job_id}`: state, attempts, rows and
bytes loaded, the last error with its step, and the result). Specs are validated by
`agentdata.syncs.SyncSpec`; they also load from `AGENTDATA_SYNCS_FILE` at start
(`origin: file`). See docs/sync.md.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from agentdata import sync_runs
from agentdata.bounds import PositiveCount
from agentdata.errors import NotFound
from agentdata.jobs import JobStore
from agentdata.syncs import Lookback, Schedule, SyncSpec
from control_api.deps import AdminDep, CoreDep, JobsDep, SyncsDep
from control_api.routers.jobs import AttemptOut
from control_api.timestamps import Timestamp

router = APIRouter(prefix="/api/v1/syncs", tags=["syncs"])


class LastJob(BaseModel):
    id: str
    state: str
    attempts: int
    progress_rows: int
    progress_bytes: int
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: Timestamp
    finished_at: Timestamp | None
    attempt_history: list[AttemptOut] = Field(
        default_factory=list, description="Every attempt of the run (see GET /api/v1/jobs/{id})."
    )


class SyncOut(BaseModel):
    spec: SyncSpec
    origin: str = Field(description="`api` or `file` (AGENTDATA_SYNCS_FILE).")
    runs: int = Field(description="Runs started so far.")
    last_job_id: str | None
    last_run_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    running_job_id: str | None = Field(description="The run queued or running now, if any.")
    last_job: LastJob | None = Field(description="The most recent run's job.")


class SyncList(BaseModel):
    items: list[SyncOut]


class SyncPatch(BaseModel):
    """Fields to change; the others keep their values (the name cannot change)."""

    source: str | None = None
    target: str | None = None
    mode: Literal["full", "incremental"] | None = None
    cursor: str | None = None
    lookback: Lookback | None = None
    primary_key: list[str] | None = None
    schedule: Schedule | None = None
    deletes: Literal["off", "reconcile"] | None = None
    reconcile_every: PositiveCount | None = None
    on_incompatible: Literal["fail", "resync"] | None = None
    on_duplicate_key: Literal["fold", "error"] | None = None
    null_cursor: Literal["include", "skip", "error"] | None = None
    column_types: dict[str, str] | None = Field(None, max_length=1000)
    enabled: bool | None = None


class RunRequest(BaseModel):
    full: bool = Field(False, description="Reload the whole table (stage and swap).")


class RunAccepted(BaseModel):
    job_id: str
    task_id: str | None
    state: str
    name: str


class DueStarted(BaseModel):
    started: list[dict[str, Any]] = Field(description="[{name, job_id}] (or {name, error}).")


def _out(jobs: JobStore, record: dict[str, Any]) -> SyncOut:
    name = record["spec"]["name"]
    last = None
    if record["last_job_id"]:
        try:
            job = jobs.get(record["last_job_id"])
            last = LastJob(
                id=job.id,
                state=job.state,
                attempts=job.attempts,
                progress_rows=job.progress_rows,
                progress_bytes=job.progress_bytes,
                error=job.error,
                result=job.result,
                created_at=job.created_at,
                finished_at=job.finished_at,
                attempt_history=job.attempt_history,
            )
        except NotFound:  # cleaned up by maintenance
            last = None
    return SyncOut(**record, running_job_id=sync_runs.active_job(jobs, name), last_job=last)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SyncOut,
    responses={409: {"description": "A sync of that name exists."}},
)
def create_sync(spec: SyncSpec, syncs: SyncsDep, jobs: JobsDep, admin: AdminDep) -> SyncOut:
    """Create a sync spec (it runs on its schedule, or when `.../run` is posted)."""
    syncs.create(spec, origin="api")
    return _out(jobs, syncs.record(spec.name))


@router.get("", response_model=SyncList)
def list_syncs(syncs: SyncsDep, jobs: JobsDep, admin: AdminDep) -> SyncList:
    """Every sync spec, by name, with its runs and last job."""
    return SyncList(items=[_out(jobs, r) for r in syncs.list()])


@router.post("/due", response_model=DueStarted)
def run_due(core: CoreDep, admin: AdminDep) -> DueStarted:
    """Start every scheduled sync that is due (Celery beat calls this every
    `sync_schedule_every_s`, through a worker)."""
    return DueStarted(started=sync_runs.run_due(core, admin))


@router.get("/{name}", response_model=SyncOut)
def get_sync(name: str, syncs: SyncsDep, jobs: JobsDep, admin: AdminDep) -> SyncOut:
    """One spec, its runs and the state of its last run."""
    return _out(jobs, syncs.record(name))


@router.patch("/{name}", response_model=SyncOut)
def update_sync(
    name: str, body: SyncPatch, syncs: SyncsDep, jobs: JobsDep, admin: AdminDep
) -> SyncOut:
    """Change some fields; the resulting spec is validated as a whole (400 if not valid)."""
    changes = body.model_dump(exclude_unset=True)
    syncs.update(name, changes)
    return _out(jobs, syncs.record(name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_sync(name: str, syncs: SyncsDep, admin: AdminDep) -> Response:
    """Delete a spec (its table and past jobs stay)."""
    syncs.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunAccepted,
    responses={
        404: {"description": "No sync of that name."},
        409: {"description": "A run of this sync is queued or running."},
        503: {"description": "The task broker is unreachable."},
    },
)
def run_sync(
    name: str, core: CoreDep, admin: AdminDep, body: RunRequest | None = None
) -> RunAccepted:
    """Start a run now; poll `GET /api/v1/jobs/{job_id}` for its progress and result."""
    job = sync_runs.start_run(core, admin, name, full=bool(body and body.full))
    return RunAccepted(job_id=job.id, task_id=job.task_id, state=job.state, name=name)
