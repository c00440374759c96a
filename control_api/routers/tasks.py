"""/api/v1/tasks: what the task machinery is doing (admin only).

With Redis the answers come from Celery's inspection (workers, running and reserved
tasks) and the broker (queue lengths); in embedded mode from the in-process pool's
own bookkeeping (its queue, its threads). `runner` says which.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agentdata.errors import NotFound
from agentdata.jobs import JobStore
from control_api.deps import AdminDep, DispatcherDep, JobsDep
from control_api.timestamps import with_rfc3339

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

#: The times a task record may carry (Unix seconds in the core, RFC 3339 here).
_TIMES = ("submitted_at", "started_at", "finished_at")


def _job_of(jobs: JobStore, task_id: str, *, history: bool = False) -> dict[str, Any] | None:
    job = jobs.latest(task_id=task_id)
    if job is None:
        return None
    out: dict[str, Any] = {"id": job.id, "kind": job.kind, "state": job.state}
    if history:
        out["attempts"] = job.attempts
        out["attempt_history"] = [
            with_rfc3339(a, "started_at", "ended_at") for a in job.attempt_history
        ]
    return out


@router.get("/status/{task_id}")
def task_status(
    task_id: str, dispatcher: DispatcherDep, jobs: JobsDep, admin: AdminDep
) -> dict[str, Any]:
    """One task's state (and result or error), with the job it runs and that job's
    attempts: when each started and ended, and its error (step, code)."""
    job = _job_of(jobs, task_id, history=True)
    try:
        out = dispatcher.status(task_id)
    except NotFound:
        if job is None:
            raise
        # A task of an earlier server process: only its job remembers it.
        out = {"task_id": task_id, "state": "UNKNOWN", "runner": dispatcher.mode}
    if out.get("state") == "PENDING" and job is None:
        raise NotFound(f"no task {task_id!r} (unknown to the broker and to every job)")
    out["job"] = job
    return with_rfc3339(out, *_TIMES)


@router.get("/active")
def active_tasks(dispatcher: DispatcherDep, jobs: JobsDep, admin: AdminDep) -> dict[str, Any]:
    """Tasks running now (and, with Celery, reserved by a worker)."""
    tasks = [with_rfc3339(t, *_TIMES) for t in dispatcher.active()]
    for t in tasks:
        job = _job_of(jobs, t["task_id"]) if t.get("task_id") else None
        t["job"] = job
    return {"runner": dispatcher.mode, "tasks": tasks}


@router.get("/queues")
def task_queues(dispatcher: DispatcherDep, admin: AdminDep) -> dict[str, Any]:
    """Each queue and the tasks waiting in it."""
    return {"runner": dispatcher.mode, "queues": dispatcher.queues()}


@router.get("/workers")
def task_workers(dispatcher: DispatcherDep, admin: AdminDep) -> dict[str, Any]:
    """Workers that answer now: their pool, concurrency and load."""
    return {"runner": dispatcher.mode, "workers": dispatcher.workers()}
