"""Maintenance rules: clean-up that runs where the data is, in the server process.

    rule      every (setting)                 does
    jobs      maintenance_jobs_every_s  (6 h)  delete succeeded/cancelled jobs older than
                                               maintenance_completed_job_age_s (24 h) and
                                               failed ones older than
                                               maintenance_failed_job_age_s (72 h)
    exports   maintenance_exports_every_s (4 h) delete export artefacts older than
                                               maintenance_export_age_s (24 h), and any
                                               artefact past its own expiry
    stale     maintenance_stale_every_s (15 m) mark running jobs without progress for
                                               maintenance_stale_after_s (1 h) as failed
    audit     maintenance_audit_every_s (1 h)  delete audit records older than
                                               audit_retention_s (30 d)

Ages count from a job's end (`finished_at`) and an artefact's creation. Each run is a
job of kind `maintenance` whose result counts what it removed. Artefacts go through
`ArtefactStore.delete`, which removes the file and its record in one step, so a run
never leaves a file without a record or a record without a file.

Schedules: Celery beat with Redis, the in-process scheduler without (agentdata.runner);
both take the periods from `schedule(settings)`. A Celery worker triggers a run with
`POST /api/v1/maintenance/{rule}/run` (workers never touch files themselves); the
embedded runner, already in the server, calls `run_task` directly. Either way the
task's outcome is `task_outcome` of the run's job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentdata.errors import AgentdataError, InternalError, InvalidArgument, from_code
from agentdata.jobs import Job, JobState, JobStore
from agentdata.settings import Settings
from agentdata.tasks import TaskContext
from agentdata.tokens import Principal

if TYPE_CHECKING:
    from agentdata.core import Core

log = logging.getLogger("agentdata.maintenance")


@dataclass(frozen=True)
class Rule:
    name: str
    period_setting: str
    description: str


RULES: dict[str, Rule] = {
    "jobs": Rule(
        "jobs",
        "maintenance_jobs_every_s",
        "Delete finished jobs: succeeded/cancelled after maintenance_completed_job_age_s, "
        "failed after maintenance_failed_job_age_s.",
    ),
    "exports": Rule(
        "exports",
        "maintenance_exports_every_s",
        "Delete export artefacts older than maintenance_export_age_s, and expired artefacts.",
    ),
    "stale": Rule(
        "stale",
        "maintenance_stale_every_s",
        "Fail running jobs that made no progress for maintenance_stale_after_s.",
    ),
    "audit": Rule(
        "audit",
        "maintenance_audit_every_s",
        "Delete audit records older than audit_retention_s.",
    ),
}


def check_rule(rule: str) -> Rule:
    try:
        return RULES[rule]
    except KeyError:
        raise InvalidArgument(
            f"unknown maintenance rule {rule!r}; rules: {', '.join(RULES)}"
        ) from None


def schedule(settings: Settings) -> dict[str, float]:
    """rule -> period in seconds, for the rules whose schedule is on (period > 0)."""
    periods = {name: float(getattr(settings, r.period_setting)) for name, r in RULES.items()}
    return {name: p for name, p in periods.items() if p > 0}


def ages(settings: Settings) -> dict[str, float]:
    return {
        "completed_job_age_s": settings.maintenance_completed_job_age_s,
        "failed_job_age_s": settings.maintenance_failed_job_age_s,
        "export_age_s": settings.maintenance_export_age_s,
        "stale_after_s": settings.maintenance_stale_after_s,
        "audit_retention_s": settings.audit_retention_s,
    }


def last_runs(jobs: JobStore) -> dict[str, float | None]:
    """When each rule last started a run (from the job records, so it survives restarts)."""
    found = jobs.newest_by_param("maintenance", "rule")
    return {name: found.get(name) for name in RULES}


def run_rule(
    core: Core,
    principal: Principal,
    rule: str,
    *,
    task_id: str | None = None,
    attempt: int = 1,
) -> Job:
    """Run one rule now, as a job of kind `maintenance`; returns the finished job.

    A run asked for by a task (`task_id`) that is a retry of an earlier failed attempt
    continues that attempt's job, so one job holds every attempt of one scheduled run.
    A failure the retry policy will retry (`agentdata.retries.maintenance_policy`)
    leaves the job `retrying`; the task then raises, and Celery (or the runner)
    retries it after a backoff.
    """
    check_rule(rule)
    principal.require_admin()
    settings = core.settings
    job = _retried_job(core, rule, task_id) if attempt > 1 else None
    if job is None:
        job = core.jobs.create(
            "maintenance", {"rule": rule, **_rule_ages(rule, settings)}, owner=principal.token_id
        )
    core.jobs.start(job.id, task_id=task_id)
    now = time.time()
    try:
        if rule == "jobs":
            result = _delete_old_jobs(core, settings, now, keep=job.id)
        elif rule == "exports":
            result = _delete_old_exports(core, settings, now)
        elif rule == "audit":
            log_ = core.engine.audit
            deleted = log_.delete_before(now - settings.audit_retention_s) if log_ else 0
            result = {"deleted_audit_records": deleted}
        else:
            result = _fail_stale_jobs(core, settings, now, keep=job.id)
    except AgentdataError as e:
        log.warning("maintenance %s failed: %s", rule, e.message)
        return _failed(core, job, rule, e, task_id=task_id, attempt=attempt)
    except Exception as e:  # a bug, or the file system: still end the run's job with why
        log.exception("maintenance %s failed", rule)
        error = InternalError(f"{type(e).__name__}: {e}")
        return _failed(core, job, rule, error, task_id=task_id, attempt=attempt)
    if any(v for k, v in result.items() if isinstance(v, int)):
        log.info("maintenance %s: %s", rule, result)
    return core.jobs.succeed(job.id, result)


def run_task(core: Core, params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """The maintenance task in the server process (the embedded runner): run rule
    `params["rule"]` here, as the admin, and answer as the Celery task does
    (`workers.maintenance.maintenance_task`, which asks the server over REST)."""
    rule = check_rule(str(params.get("rule"))).name
    admin = core.tokens.verify(core.settings.resolved_admin_token())
    job = run_rule(core, admin, rule, task_id=ctx.task_id, attempt=ctx.attempt)
    return task_outcome(job.to_dict())


def task_outcome(job: dict[str, Any]) -> dict[str, Any]:
    """A maintenance task's result for its run's job (`Job.to_dict()` or the REST answer);
    raises the run's error when it failed or is `retrying`, so the runner (or Celery)
    records the task as failed and its retry policy applies."""
    rule = str((job.get("params") or {}).get("rule"))
    if job["state"] in (JobState.FAILED, JobState.RETRYING):
        error = job.get("error") or {}
        raise from_code(error.get("code"), f"{error.get('step', rule)}: {error.get('message')}")
    return {
        "job_id": job["id"],
        "rule": rule,
        "state": job["state"],
        "result": job.get("result"),
        "error": job.get("error"),
    }


def _retried_job(core: Core, rule: str, task_id: str | None) -> Job | None:
    """The job an earlier attempt of this task left `retrying`, if any."""
    if task_id is None:
        return None
    return core.jobs.latest(
        kind="maintenance", task_id=task_id, states=(JobState.RETRYING,), param=("rule", rule)
    )


def _failed(
    core: Core, job: Job, rule: str, error: AgentdataError, *, task_id: str | None, attempt: int
) -> Job:
    """Fail the run's job, or leave it `retrying` when its task will be retried."""
    from agentdata.retries import maintenance_policy

    if task_id is not None and maintenance_policy(core.settings).will_retry(error, attempt):
        return core.jobs.retrying(
            job.id,
            {
                "step": rule,
                "code": error.code,
                "message": f"{error.message} (attempt {attempt}; retrying)",
            },
        )
    return core.jobs.fail(job.id, step=rule, code=error.code, message=error.message)


def _rule_ages(rule: str, settings: Settings) -> dict[str, float]:
    a = ages(settings)
    keys = {
        "jobs": ("completed_job_age_s", "failed_job_age_s"),
        "exports": ("export_age_s",),
        "stale": ("stale_after_s",),
        "audit": ("audit_retention_s",),
    }[rule]
    return {k: a[k] for k in keys}


def _delete_old_jobs(core: Core, settings: Settings, now: float, *, keep: str) -> dict[str, Any]:
    completed_before = now - settings.maintenance_completed_job_age_s
    old = core.jobs.finished_before(
        {
            JobState.SUCCEEDED: completed_before,
            JobState.CANCELLED: completed_before,
            JobState.FAILED: now - settings.maintenance_failed_job_age_s,
        },
        keep=keep,
    )
    deleted = {"succeeded": 0, "cancelled": 0, "failed": 0}
    for job_id, state in old:
        core.jobs.delete(job_id)
        deleted[state.value] += 1
    # Each job's delegated credential is a token record; once expired it can never be
    # used again, so it goes with the jobs (user tokens stay listed until revoked/expired).
    expired_credentials = core.tokens.delete_expired_job_credentials(now)
    return {
        "deleted_jobs": sum(deleted.values()),
        "deleted_by_state": deleted,
        "deleted_job_credentials": expired_credentials,
    }


def _delete_old_exports(core: Core, settings: Settings, now: float) -> dict[str, Any]:
    store = core.artefacts
    doomed: dict[str, int] = {}
    created_before = now - settings.maintenance_export_age_s
    while True:
        page, _ = store.list(
            source="export", created_before=created_before, include_expired=True, limit=500
        )
        page = [a for a in page if a.id not in doomed]
        if not page:
            break
        for art in page:
            _delete_artefact(store, art.id, art.size, doomed)
    old_exports = len(doomed)
    while True:
        expired = [a for a in store.list_expired(now, limit=500) if a.id not in doomed]
        if not expired:
            break
        for art in expired:
            _delete_artefact(store, art.id, art.size, doomed)
    return {
        "deleted_artefacts": len(doomed),
        "deleted_exports": old_exports,
        "deleted_expired": len(doomed) - old_exports,
        "freed_bytes": sum(doomed.values()),
    }


def _delete_artefact(store: Any, artefact_id: str, size: int, doomed: dict[str, int]) -> None:
    from agentdata.errors import NotFound

    try:
        store.delete(artefact_id)
    except NotFound:  # deleted meanwhile (by its owner, or a concurrent run)
        pass
    doomed[artefact_id] = size


def _fail_stale_jobs(core: Core, settings: Settings, now: float, *, keep: str) -> dict[str, Any]:
    limit = settings.maintenance_stale_after_s
    failed = []
    for found in core.jobs.idle_since(
        now - limit, (JobState.RUNNING, JobState.RETRYING), keep=keep
    ):
        job = core.jobs.get(found.id)
        seen = job.progress_at or job.started_at or job.updated_at
        if JobState(job.state) not in (JobState.RUNNING, JobState.RETRYING) or seen >= now - limit:
            continue  # it moved on since the query above
        idle = now - seen
        core.jobs.fail(
            job.id,
            step="progress",
            code="deadline_exceeded",
            message=f"no progress for {idle:.0f} s (limit {limit:g} s); marked failed by maintenance",
        )
        failed.append(job.id)
    return {"failed_jobs": len(failed), "job_ids": failed[:100]}
