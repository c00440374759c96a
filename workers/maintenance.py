"""The maintenance task on a Celery worker: ask the server to run one clean-up rule.

The rules themselves (`agentdata.maintenance`) run in the server, where the files and
records are, through `POST /api/v1/maintenance/{rule}/run`: a worker or the beat
schedule never touches a file. (Without Redis the embedded runner calls the rule
directly, in the server process: `agentdata.maintenance.run_task`.) This function
authenticates with the worker token (an admin token, never logged) and returns the
run's job. A run that failed raises, so the task is recorded as failed too, and
retried once (`agentdata.retries.maintenance_policy`): the retry continues the same
job, whose attempt history shows both.
"""

from __future__ import annotations

import logging
from typing import Any

from agentdata.errors import Unauthenticated
from agentdata.maintenance import check_rule, task_outcome
from agentdata.tasks import TaskContext
from workers.client import ServerClient

log = logging.getLogger("agentdata.worker.maintenance")


def maintenance_task(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run maintenance rule `params["rule"]` on the server; returns the run's job summary."""
    rule = check_rule(str(params.get("rule"))).name
    if ctx.service_token is None:
        raise Unauthenticated("maintenance needs an admin token (AGENTDATA_WORKER_TOKEN)")
    with ServerClient(ctx.endpoints, ctx.service_token()) as client:
        job = client.request(
            "POST",
            f"/api/v1/maintenance/{rule}/run",
            json={"task_id": ctx.task_id, "attempt": ctx.attempt},
        )
    summary = task_outcome(job)
    log.info("maintenance %s: %s", rule, job.get("result"))
    return summary
