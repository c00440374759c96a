"""/api/v1/jobs: list, get, cancel, and the event endpoint workers report progress to.

A job is `agentdata.jobs.Job.to_dict()`. Non-admins see and cancel only their own
jobs (others' ids answer 404). Workers (admin tokens, or the job's owner) post
events; every event's answer is the job, so a worker that reports progress learns
from `cancel_requested` that it must stop.

    POST /api/v1/jobs/{id}/events
    {"event": "progress", "rows": 120000, "bytes": 5242880, "percent": 12.5}
    -> 200 {"id": ..., "state": "running", "cancel_requested": true, ...}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from agentdata.bounds import MAX_INT64, Count, Name
from agentdata.errors import Conflict, InvalidArgument, PermissionDenied
from agentdata.jobs import JobState
from agentdata.tasks import JobKind
from control_api.deps import JobsDep, PrincipalDep
from control_api.timestamps import Timestamp

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

JobStateName = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]


class JobError(BaseModel):
    step: str = Field(min_length=1, max_length=200, description="Where it failed, e.g. `extract`.")
    code: str = Field(min_length=1, max_length=100, description="A stable error code.")
    message: str = Field(max_length=10_000)


class AttemptOut(BaseModel):
    """One attempt of a job: when it ran and how it ended."""

    attempt: int = Field(description="1 for the first run.")
    task_id: str | None
    started_at: Timestamp
    ended_at: Timestamp | None = Field(description="None while it runs.")
    outcome: Literal["running", "retrying", "succeeded", "failed", "cancelled", "interrupted"] = (
        Field(
            description="`retrying`: it failed and another attempt was scheduled; "
            "`interrupted`: it never reported an end (its worker or the server died)."
        )
    )
    error: dict[str, Any] | None = Field(description="{step, code, message} when it failed.")


class JobOut(BaseModel):
    id: str
    kind: str
    state: JobStateName
    owner: str | None
    params: dict[str, Any]
    task_id: str | None
    progress_rows: int
    progress_bytes: int
    percent: float | None
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None = Field(description="On failure: {step, code, message}.")
    cancel_requested: bool
    created_at: Timestamp
    started_at: Timestamp | None
    updated_at: Timestamp
    progress_at: Timestamp | None
    finished_at: Timestamp | None
    attempt_history: list[AttemptOut] = Field(
        default_factory=list, description="Every attempt, oldest first."
    )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class JobEvent(BaseModel):
    """One report from whoever runs the job."""

    event: Literal["start", "progress", "retrying", "succeeded", "failed", "cancelled"]
    rows: Count | None = Field(None, description="Rows done so far.")
    bytes: Count | None = Field(None, description="Bytes done so far.")
    percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    task_id: Name | None = Field(None, max_length=200)
    result: dict[str, Any] | None = Field(None, description="On `succeeded`.")
    error: JobError | None = Field(
        None, description="Required on `failed`; optional on `retrying`."
    )


@router.get(
    "",
    response_model=JobPage,
    responses={403: {"description": "`owner` names another token, and this one is no admin."}},
)
def list_jobs(
    jobs: JobsDep,
    principal: PrincipalDep,
    kind: JobKind | None = None,
    state: JobStateName | None = None,
    owner: Annotated[str | None, Query(description="Owner token id (admins only).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
) -> JobPage:
    """Jobs visible to this token, newest first."""
    if not principal.is_admin:
        if owner is not None and owner != principal.token_id:
            raise PermissionDenied("only an admin may list another token's jobs")
        owner = principal.token_id
    page, total = jobs.list(owner=owner, kind=kind, state=state, limit=limit, offset=offset)
    return JobPage(
        items=[JobOut(**j.to_dict()) for j in page], total=total, limit=limit, offset=offset
    )


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> JobOut:
    """One job, with its progress, result or error."""
    return JobOut(**jobs.get_for(principal, job_id).to_dict())


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    responses={409: {"description": "The job has finished already."}},
)
def cancel_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> JobOut:
    """Request cancellation: a queued job is cancelled at once; a running one stops at
    its next progress report (the answer shows `cancel_requested`). 409 if finished."""
    return JobOut(**jobs.request_cancel(principal, job_id).to_dict())


@router.post(
    "/{job_id}/events",
    response_model=JobOut,
    responses={
        400: {"description": "A `failed` event without `error`."},
        409: {"description": "The job has finished (or was cancelled) already."},
    },
)
def post_job_event(job_id: str, body: JobEvent, jobs: JobsDep, principal: PrincipalDep) -> JobOut:
    """Record a worker's report (admin tokens or the job's owner); answers the job."""
    job = jobs.get_for(principal, job_id)
    if JobState(job.state).finished:
        raise Conflict(f"job already {job.state}")
    if body.task_id and body.event != "start":
        jobs.set_task_id(job_id, body.task_id)
    if body.event == "start":
        jobs.start(job_id, task_id=body.task_id)
    has_numbers = body.rows is not None or body.bytes is not None or body.percent is not None
    # A bare `progress` is a heartbeat: it still moves progress_at (stale-run detection).
    if body.event == "progress" or (has_numbers and body.event in ("start", "succeeded")):
        jobs.progress(job_id, rows=body.rows, nbytes=body.bytes, percent=body.percent)
    if body.event == "retrying":
        error = body.error.model_dump() if body.error else {"step": "unknown", "code": "retrying"}
        jobs.retrying(job_id, error)
    elif body.event == "succeeded":
        jobs.succeed(job_id, body.result or {})
    elif body.event == "failed":
        if body.error is None:
            raise InvalidArgument("a `failed` event needs `error`: {step, code, message}")
        jobs.fail(job_id, step=body.error.step, code=body.error.code, message=body.error.message)
    elif body.event == "cancelled":
        jobs.mark_cancelled(job_id)
    return JobOut(**jobs.get(job_id).to_dict())
