"""/api/v1/maintenance: the clean-up rules, their schedule, and running one now (admin only).

`POST /api/v1/maintenance/{rule}/run` is how Celery beat (through a worker) triggers a
run, and how an admin runs one now: the rule runs here, in the server, as a job of
kind `maintenance`, and the answer is that finished job (`retrying` when the task's
retry will run it again, in the same job). The embedded runner, already in this
process, calls the same rule directly (`agentdata.maintenance.run_task`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from agentdata import maintenance
from agentdata.bounds import Name
from agentdata.timestamps import rfc3339
from control_api.deps import AdminDep, CoreDep, JobsDep, SettingsDep
from control_api.routers.jobs import JobOut

router = APIRouter(prefix="/api/v1/maintenance", tags=["maintenance"])


class RunRequest(BaseModel):
    task_id: Name | None = Field(
        None, max_length=200, description="The task that asked for this run (recorded on the job)."
    )
    attempt: int = Field(
        1,
        ge=1,
        le=1000,
        description="The task's attempt: a retry continues the job its first attempt left "
        "`retrying`.",
    )


@router.get("")
def list_rules(settings: SettingsDep, jobs: JobsDep, admin: AdminDep) -> dict[str, Any]:
    """Each rule with its period, ages and last run."""
    periods = maintenance.schedule(settings)
    last = maintenance.last_runs(jobs)
    return {
        "scheduler": "celery beat" if settings.redis_url else "in-process",
        "ages": maintenance.ages(settings),
        "rules": [
            {
                "name": name,
                "description": rule.description,
                "every_s": periods.get(name),
                "last_run_at": _when(last.get(name)),
            }
            for name, rule in maintenance.RULES.items()
        ],
    }


@router.post("/{rule}/run", response_model=JobOut)
def run_rule(rule: str, core: CoreDep, admin: AdminDep, body: RunRequest | None = None) -> JobOut:
    """Run one rule now; answers its job (state succeeded, or failed with the step)."""
    job = maintenance.run_rule(
        core,
        admin,
        rule,
        task_id=body.task_id if body else None,
        attempt=body.attempt if body else 1,
    )
    return JobOut(**job.to_dict())


def _when(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)
