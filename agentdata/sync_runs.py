"""Starting sync runs: now (REST, CLI) or when their schedule says so.

    job = start_run(core, principal, "orders")          # a queued job of kind "sync"
    started = run_due(core, principal)                  # every scheduled sync that is due

A run is a job of kind `sync` whose task (`workers.sync.run:sync_task`) goes to the
dispatcher: a Celery worker with Redis, the in-process runner without. The task gets
the spec as it was when the run started, the run's number (for `reconcile_every`) and
a credential delegated for the job only: a writer limited to the sync's target table,
valid while the job lives, so a sync can touch no other table.

Schedules. A spec's `schedule` is an interval (`15m`) or a cron line. A sync is due
when its interval has passed since its last run started (a sync that never ran is due
at once), or when its cron line has fired since then (or since the spec was created).
A sync whose previous run is still queued, running or retrying is never started again.
What is due is decided here, in the server, from the meta store, so schedules survive
restarts and there is one truth for both runners: Celery beat asks every
`sync_schedule_every_s` through `POST /api/v1/syncs/due` (a tiny task on a worker), and
without Redis `SyncScheduler` (a thread of the server) calls `run_due` directly.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from agentdata.errors import AgentdataError, Conflict, Unavailable
from agentdata.jobs import ACTIVE_STATES, Job, JobStore
from agentdata.sqlguard import parse_table_ref
from agentdata.syncs import schedule_seconds
from agentdata.tasks import start_job
from agentdata.tokens import Principal, Role

if TYPE_CHECKING:
    from agentdata.core import Core

log = logging.getLogger("agentdata.syncs")


def active_job(jobs: JobStore, name: str) -> str | None:
    """The id of the sync's queued, running or retrying job, if it has one."""
    job = jobs.latest(kind="sync", states=ACTIVE_STATES, param=("name", name))
    return job.id if job else None


def start_run(
    core: Core, principal: Principal, name: str, *, full: bool = False, trigger: str = "api"
) -> Job:
    """Queue one run of sync `name`; 409 while another run of it is active."""
    principal.require_admin()
    spec = core.syncs.get(name)
    running = active_job(core.jobs, name)
    if running is not None:
        raise Conflict(f"sync {name!r} is already running: job {running}")
    params: dict[str, Any] = {
        "name": name,
        "source": spec.source,
        "target": spec.target,
        "mode": spec.mode,
        "full": full,
        "trigger": trigger,
    }
    schema, table = parse_table_ref(spec.target)
    # The task's credential: a writer on the target table only, for this job only.
    scoped = Principal(
        token_id=principal.token_id,
        name=f"sync {name}",
        role=Role.WRITER,
        tables=(f"{schema}.{table}".lower(),),
        expires_at=principal.expires_at,
    )
    runs: list[int] = []

    def task_params(job: Job) -> dict[str, Any]:
        runs.append(core.syncs.started(name, job.id))
        return {"name": name, "spec": spec.model_dump(mode="json"), "run": runs[0], "full": full}

    started = start_job(
        core, "sync", params, principal=principal, acting_as=scoped, task_params=task_params
    )
    log.info("sync %s: run %d queued as job %s (%s)", name, runs[0], started.job.id, trigger)
    return started.job


def resume_params(core: Core, job: Job) -> dict[str, Any]:
    """The task params of sync run `job` again, with a fresh credential (the same scope
    as its first), for a run a server restart interrupted. The spec is the one stored
    now (the run re-plans from the committed table anyway); the run number is the
    spec's count if this job is still its latest run."""
    name = str(job.params["name"])
    spec = core.syncs.get(name)
    record = core.syncs.record(name)
    run = int(record["runs"]) if record["last_job_id"] == job.id else 1
    token = core.tokens.redelegate(job.id, ttl_s=core.settings.task_token_ttl_s)
    return {
        "job_id": job.id,
        "name": name,
        "spec": spec.model_dump(mode="json"),
        "run": run,
        "full": bool(job.params.get("full")),
        "token": token,
    }


def due(core: Core, now: float | None = None) -> list[str]:
    """Names of the enabled, scheduled syncs that are due and not running now."""
    from croniter import croniter

    now = time.time() if now is None else now
    names = []
    for record in core.syncs.list():
        spec = record["spec"]
        schedule = spec.get("schedule")
        if not spec.get("enabled", True) or schedule in (None, ""):
            continue
        last = record["last_run_at"]
        every = schedule_seconds(schedule)
        if every is not None:
            is_due = last is None or now >= last + every
        else:
            base = last if last is not None else record["created_at"]
            is_due = croniter(str(schedule), base).get_next(float) <= now
        if is_due and active_job(core.jobs, spec["name"]) is None:
            names.append(spec["name"])
    return names


def run_due(core: Core, principal: Principal, now: float | None = None) -> list[dict[str, Any]]:
    """Start every due sync; returns [{name, job_id}] (or {name, error} where it failed)."""
    started = []
    for name in due(core, now):
        try:
            job = start_run(core, principal, name, trigger="schedule")
        except Conflict:
            continue  # started by someone else meanwhile
        except AgentdataError as e:
            log.warning("scheduled sync %s not started: %s", name, e.message)
            started.append({"name": name, "error": {"code": e.code, "message": e.message}})
            continue
        started.append({"name": name, "job_id": job.id})
    return started


class SyncScheduler:
    """Embedded mode's stand-in for beat: `run_due` every `sync_schedule_every_s`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.every_s = core.settings.sync_schedule_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="agentdata-sync-scheduler", daemon=True
        )

    def start(self) -> None:
        if self.every_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        admin = self.core.tokens.verify(self.core.settings.resolved_admin_token())
        while not self._stop.wait(self.every_s):
            try:
                run_due(self.core, admin)
            except Unavailable:
                return  # shutting down
            except Exception:
                log.exception("scheduled syncs: check failed")
