"""The maintenance task: ask the server to run one clean-up rule.

The rules themselves (`agentdata.maintenance`) run in the server, where the files and
records are, through `POST /api/v1/maintenance/{rule}/run`: a worker or the beat
schedule never touches a file. This function is what Celery beat's entries and the
in-process scheduler submit; it authenticates with the worker token (an admin token,
never logged) and returns the run's job. A run that failed raises, so the task is
recorded as failed too, and retried once (`agentdata.retries.maintenance_policy`): the
retry continues the same job, whose attempt history shows both.
"""

from __future__ import annotations

import logging
from typing import Any

from agentdata.errors import Unauthenticated
from agentdata.maintenance import check_rule
from workers.client import ServerClient, TaskContext, error_from_code

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
    summary = {
        "job_id": job["id"],
        "rule": rule,
        "state": job["state"],
        "result": job.get("result"),
        "error": job.get("error"),
    }
    if job["state"] in ("failed", "retrying"):  # retrying: the policy runs it again
        error = job.get("error") or {}
        raise error_from_code(
            error.get("code"), f"{error.get('step', rule)}: {error.get('message')}"
        )
    log.info("maintenance %s: %s", rule, job.get("result"))
    return summary
