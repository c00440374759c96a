"""The in-process task runner and scheduler: `agentdata serve` without Redis.

A fixed pool of threads takes tasks from a FIFO queue and calls the same task
functions a Celery worker calls (the task registry, `workers.registry`, which the
launcher hands to the runner: the core never imports a worker module), with a
context whose URLs point at this very server over loopback: an export here reads
over Flight and uploads over REST exactly as it would on a worker machine.
Maintenance is the exception: its rules run in the server anyway, so the runner
calls them directly (`agentdata.maintenance.run_task`), not through the REST call a
Celery worker makes.

Two lanes, as a Celery deployment has two queues: `tasks` (exports, syncs; the
`embedded_workers` threads) and `maintenance` (one thread of its own), so clean-up is
never stuck behind long exports. Monitoring is the runner's own bookkeeping, so it is
exact: queue depth is the tasks waiting in a lane, `busy` the threads running one,
`threads` those alive. Finished tasks are
remembered (the last `HISTORY` of them) for `status`.

The scheduler replaces Celery beat: one thread that submits each maintenance rule
when its period has passed since the rule's last run. Last runs are read from the
job records at start, so a restart neither repeats a run nor skips one, and a rule
is not submitted again while its previous run is still queued or running.

A task that dies without reporting (the server went away under it) has its job
failed by the runner, so no job stays "running" because of this process. Jobs left
queued, running or retrying by a previous process of an embedded server (it was
killed, or stopped mid-task) are picked up at start, since nothing else could be
running them: exports and syncs go back on the queue under their kind's retry policy
(`agentdata.retries`; the interrupted attempt counts as one, and its entry in the
job's attempt history says the server restarted), with a fresh credential of the same
scope; a job that was still queued simply goes back. Anything else is failed.

Wiring: the runner is the core's dispatcher, and what it runs in-process (maintenance
rules, scheduled syncs, resumed jobs) acts through that complete core, which starts
jobs through this very runner. So the launcher builds the runner first, from the
settings and the task registry, hands it to `Core.open`, and starts it with the
finished core and the URLs the servers listen on: `runner.start(core, endpoints)`.
Nothing is set on the core afterwards.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentdata import export_runs, maintenance, metrics, sync_runs
from agentdata.errors import AgentdataError, Conflict, InternalError, NotFound, Unavailable
from agentdata.jobs import ACTIVE_STATES, Job, JobState
from agentdata.tasks import (
    TASK_KINDS,
    Endpoints,
    TaskContext,
    TaskFunction,
    TaskRegistry,
    new_task_id,
    redacted,
    task_kind,
)

if TYPE_CHECKING:
    from agentdata.core import Core
    from agentdata.retries import RetryPolicy
    from agentdata.settings import Settings

log = logging.getLogger("agentdata.runner")

#: Task states as Celery names them, so both runners answer in one vocabulary.
_CELERY_STATES = {
    "queued": "PENDING",
    "running": "STARTED",
    "retrying": "RETRY",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
}
#: Finished tasks remembered for `status`.
HISTORY = 1000
_STOP = object()

#: How to run a job again that a server restart interrupted: `f(core, job) -> params`,
#: its task's params with a fresh credential. Kinds not listed here are failed.
RESUME: dict[str, Callable[[Core, Job], dict[str, Any]]] = {
    "export": export_runs.resume_params,
    "sync": sync_runs.resume_params,
}


@dataclass
class _Task:
    task_id: str
    kind: str
    params: dict[str, Any]
    lane: str = "tasks"
    submitted_at: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | succeeded | failed
    started_at: float | None = None
    finished_at: float | None = None
    thread: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: Retries already done (see the kind's retry policy); the next run is attempt retries+1.
    retries: int = 0

    @property
    def job_id(self) -> str | None:
        value = self.params.get("job_id")
        return str(value) if value else None

    def public(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "kind": self.kind,
            "state": _CELERY_STATES[self.state],
            "job_id": self.job_id,
            "worker": self.thread,
            "queue": self.lane,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": redacted(self.result) if self.result else None,
            "error": self.error,
            "runner": InProcessRunner.mode,
        }


@dataclass
class _Lane:
    """One queue and the threads that serve it."""

    name: str
    size: int
    queue: queue.Queue[Any] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)


def lane_of(kind: str) -> str:
    return "maintenance" if task_kind(kind).queue == "maintenance" else "tasks"


class InProcessRunner:
    """Thread pools with FIFO queues, running task functions against this server."""

    mode = "embedded"

    def __init__(
        self,
        settings: Settings,
        *,
        tasks: TaskRegistry,
        threads: int | None = None,
        warm_up: Callable[[], None] | None = None,
    ) -> None:
        """A runner for the task functions of `tasks` (`threads` in the task lane, by
        default the `embedded_workers` setting); it runs nothing until `start`."""
        self.settings = settings
        self._core: Core | None = None
        self._endpoints: Endpoints | None = None
        self.size = max(1, settings.embedded_workers if threads is None else threads)
        self._registry = tasks
        self._functions: dict[str, TaskFunction] = {k: e.function for k, e in tasks.items()}
        # Already in the server: run the rules here rather than over loopback REST.
        self._functions["maintenance"] = lambda params, ctx: maintenance.run_task(
            self.core, params, ctx
        )
        self._warm_up = warm_up
        self._lanes = {
            "tasks": _Lane("tasks", self.size),
            "maintenance": _Lane("maintenance", 1),
        }
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.scheduler: Scheduler | None = None
        self.sync_scheduler: sync_runs.SyncScheduler | None = None
        self.work_dir = settings.data_dir / "tmp" / "tasks"
        self.name = f"embedded@{socket.gethostname()}"

    @property
    def core(self) -> Core:
        """The core this runner serves (given to `start`)."""
        if self._core is None:
            raise Unavailable("the task runner has not started")
        return self._core

    # -- life cycle -----------------------------------------------------------------------
    def start(self, core: Core, endpoints: Endpoints | None = None) -> None:
        """Recover the jobs a previous process left, start the threads and schedulers.

        `core` is the complete core holding this runner; `endpoints` where tasks reach
        this server (None: derived from the settings, when no server listens)."""
        self._core = core
        self._endpoints = endpoints
        # One line per REST call of every task would drown the server log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._recover_interrupted_jobs()
        if self._warm_up is not None:
            threading.Thread(
                target=_warm_up, args=(self._warm_up,), name="agentdata-task-warm-up", daemon=True
            ).start()
        for lane in self._lanes.values():
            for i in range(lane.size):
                prefix = "agentdata-task" if lane.name == "tasks" else "agentdata-maintenance"
                t = threading.Thread(
                    target=self._work, args=(lane,), name=f"{prefix}-{i + 1}", daemon=True
                )
                t.start()
                lane.threads.append(t)
        periods = maintenance.schedule(self.settings)
        if periods:
            self.scheduler = Scheduler(self, periods)
            self.scheduler.start()
        self.sync_scheduler = sync_runs.SyncScheduler(core)
        self.sync_scheduler.start()
        log.info(
            "in-process task runner: %d threads; maintenance every %s",
            self.size,
            ", ".join(f"{r} {p:g}s" for r, p in periods.items()) or "(off)",
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop taking tasks; fail the queued ones; give running ones `timeout_s` to end."""
        self._stopping.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.sync_scheduler is not None:
            self.sync_scheduler.stop()
        for lane in self._lanes.values():
            while True:
                try:
                    item = lane.queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Task):
                    self._finish(
                        item, "failed", error={"code": "unavailable", "message": "server stopped"}
                    )
                    self._fail_job(
                        item, "queue", Unavailable("the server stopped before this task ran")
                    )
            for _ in lane.threads:
                lane.queue.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes.values():
            for t in lane.threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def _recover_interrupted_jobs(self) -> None:
        """Jobs a previous process left unfinished: resume or fail (module docstring)."""
        # All of them first: recovering a running job makes it `retrying`, and it must
        # not be found again under that state.
        unfinished = [
            job
            for state in ACTIVE_STATES
            for job in self.core.jobs.list(state=state.value, limit=10_000)[0]
        ]
        for job in unfinished:
            try:
                self._recover(job)
            except Exception:  # one job's trouble must not stop the server starting
                log.exception("could not recover job %s", job.id)

    def _recover(self, job: Job) -> None:
        jobs = self.core.jobs
        if job.cancel_requested:
            jobs.mark_cancelled(job.id)
            return
        state = JobState(job.state)
        interrupted = Unavailable(f"the server restarted during attempt {job.attempts} of this job")
        policy = self.retry_policy(job.kind)
        if state is JobState.RUNNING:
            again = policy is not None and policy.will_retry(interrupted, job.attempts)
        else:  # queued (never ran) or retrying (its retry was due in the lost process)
            again = True
        params = None
        reason = "the server restarted before this job finished"
        resume = RESUME.get(job.kind)
        if again and resume is not None:
            try:
                params = resume(self.core, job)
            except AgentdataError as e:
                reason = f"{reason}, and it cannot be resumed: {e.message}"
        if params is None:
            jobs.fail(job.id, step="runner", code=Unavailable.code, message=reason)
            log.warning(
                "job %s (%s) was %s when the server stopped: failed", job.id, job.kind, state
            )
            return
        delay = 0.0
        if state is JobState.RUNNING:
            jobs.retrying(
                job.id,
                {
                    "step": "runner",
                    "code": interrupted.code,
                    "message": f"{interrupted.message}; retrying",
                },
            )
            assert policy is not None
            delay = policy.delay_s(job.attempts - 1)
        task = _Task(
            job.task_id or new_task_id(),
            job.kind,
            params,
            lane=lane_of(job.kind),
            retries=job.attempts,
        )
        with self._lock:
            self._tasks[task.task_id] = task
        log.warning(
            "job %s (%s) was %s when the server stopped: attempt %d in %.1fs",
            job.id,
            job.kind,
            state,
            job.attempts + 1,
            delay,
        )
        if delay > 0:
            task.state = "retrying"
            timer = threading.Timer(delay, self._requeue, (task,))
            timer.daemon = True
            timer.start()
        else:
            self._lanes[task.lane].queue.put(task)

    # -- dispatching ------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], *, task_id: str | None = None) -> str:
        task_kind(kind)
        if self._stopping.is_set():
            raise Unavailable("the server is shutting down")
        task = _Task(task_id or new_task_id(), kind, params, lane=lane_of(kind))
        with self._lock:
            self._tasks[task.task_id] = task
            self._trim()
        self._lanes[task.lane].queue.put(task)
        return task.task_id

    def _trim(self) -> None:
        finished = [t for t in self._tasks.values() if t.finished_at is not None]
        for t in finished[: max(0, len(finished) - HISTORY)]:
            del self._tasks[t.task_id]

    def _work(self, lane: _Lane) -> None:
        while True:
            item = lane.queue.get()
            if item is _STOP:
                return
            self._run(item)

    def retry_policy(self, kind: str) -> RetryPolicy | None:
        """How tasks of `kind` are retried: the registry's policy (Celery applies the same)."""
        entry = self._registry.get(kind)
        if entry is None or entry.retry is None:
            return None
        return entry.retry(self.settings)

    def _run(self, task: _Task) -> None:
        with self._lock:
            task.state, task.started_at = "running", time.time()
            task.thread = threading.current_thread().name
        ctx = TaskContext(
            task_id=task.task_id,
            endpoints=self._endpoints or Endpoints.from_settings(self.settings),
            work_dir=self.work_dir,
            service_token=self.settings.resolved_admin_token,
            progress_every_s=self.settings.export_progress_every_s,
            runner=self.mode,
            attempt=task.retries + 1,
            settings=self.settings,
        )
        try:
            result = self._functions[task.kind](task.params, ctx)
        except Exception as e:
            if self._retry_later(task, e):
                return
            error = e if isinstance(e, AgentdataError) else None
            self._finish(
                task,
                "failed",
                error={
                    "code": error.code if error else "internal",
                    "message": error.message if error else f"{type(e).__name__}: {e}",
                },
            )
            if error is None:
                log.exception("task %s (%s) crashed", task.task_id, task.kind)
            self._fail_job(task, "task", error or AgentdataError(f"{type(e).__name__}: {e}"))
            return
        self._finish(task, "succeeded", result=result)
        if task.kind == "export":
            # An export that could not record its end (e.g. its credential expired) must
            # not leave the job running for the stale rule to find an hour later.
            self._settle_job(task)

    def _retry_later(self, task: _Task, error: Exception) -> bool:
        """Apply the kind's retry policy (as Celery's autoretry does): re-queue the task
        after the policy's backoff; False when it is not retried."""
        policy = self.retry_policy(task.kind)
        if policy is None or not policy.will_retry(error, task.retries + 1):
            return False
        delay = policy.delay_s(task.retries)
        with self._lock:
            task.state, task.retries = "retrying", task.retries + 1
            task.error = {
                "code": getattr(error, "code", "internal"),
                "message": getattr(error, "message", str(error)),
            }
        log.info(
            "task %s (%s) failed (%s); retry %d in %.1fs",
            task.task_id,
            task.kind,
            type(error).__name__,
            task.retries,
            delay,
        )
        timer = threading.Timer(delay, self._requeue, (task,))
        timer.daemon = True
        timer.start()
        return True

    def _requeue(self, task: _Task) -> None:
        if self._stopping.is_set():
            self._finish(task, "failed", error={"code": "unavailable", "message": "server stopped"})
            self._fail_job(
                task, "queue", Unavailable("the server stopped before this task's retry")
            )
            return
        with self._lock:
            task.state = "queued"
        self._lanes[task.lane].queue.put(task)

    def _finish(
        self,
        task: _Task,
        state: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            task.state, task.finished_at = state, time.time()
            task.result, task.error = result, error
            # The credential is not needed any more; do not keep it in memory.
            task.params = redacted(task.params)

    def _settle_job(self, task: _Task) -> None:
        job_id = task.job_id
        if job_id is None:
            return
        try:
            job = self.core.jobs.get(job_id)
            if job.state not in (JobState.QUEUED, JobState.RUNNING):
                return
            if job.cancel_requested:
                self.core.jobs.mark_cancelled(job_id)
            else:
                self.core.jobs.fail(
                    job_id,
                    step="task",
                    code=InternalError.code,
                    message="the task ended without recording its outcome",
                )
        except NotFound:
            pass

    def _fail_job(self, task: _Task, step: str, error: AgentdataError) -> None:
        """End the task's job if the task could not (e.g. the server stopped under it)."""
        job_id = task.job_id
        if job_id is None or self._core is None:
            return
        try:
            job = self.core.jobs.get(job_id)
            if not JobState(job.state).finished:
                self.core.jobs.fail(job_id, step=step, code=error.code, message=error.message)
        except (NotFound, Conflict):
            pass
        except Exception:
            log.exception("could not fail job %s", job_id)

    # -- monitoring -------------------------------------------------------------------------
    def status(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r} in this server's runner")
            return task.public()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            running = [t.public() for t in self._tasks.values() if t.state == "running"]
        for t in running:
            t["state"] = "running"
        return running

    def queued(self) -> list[dict[str, Any]]:
        with self._lock:
            return [t.public() for t in self._tasks.values() if t.state == "queued"]

    def queues(self) -> list[dict[str, Any]]:
        with self._lock:
            depth = {name: 0 for name in self._lanes}
            for t in self._tasks.values():
                if t.state == "queued":
                    depth[t.lane] += 1
        return [
            {
                "name": name,
                "depth": depth[name],
                "kinds": sorted(k for k in TASK_KINDS if lane_of(k) == name),
                "broker": None,
            }
            for name in self._lanes
        ]

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            busy = {name: 0 for name in self._lanes}
            done = {"succeeded": 0, "failed": 0}
            for t in self._tasks.values():
                if t.state == "running":
                    busy[t.lane] += 1
                if t.state in done:
                    done[t.state] += 1
        lanes = []
        for lane in self._lanes.values():
            alive = sum(1 for t in lane.threads if t.is_alive())
            lanes.append(
                {
                    "queue": lane.name,
                    "concurrency": lane.size,
                    "threads": alive,
                    "busy": busy[lane.name],
                    "idle": max(0, alive - busy[lane.name]),
                }
            )
        main = lanes[0]
        return [
            {
                "name": self.name,
                "runner": self.mode,
                "pid": os.getpid(),
                "pool": "threads",
                # The task pool; the maintenance lane's own thread is listed under lanes.
                "concurrency": main["concurrency"],
                "threads": main["threads"],
                "busy": main["busy"],
                "idle": main["idle"],
                "queues": list(self._lanes),
                "lanes": lanes,
                "tasks_done": done,
                "scheduler": self.scheduler.describe() if self.scheduler else None,
            }
        ]

    def probes(self) -> dict[str, Callable[[], object]]:
        """Nothing beyond this process to check for readiness."""
        return {}

    def refresh_gauges(self) -> None:
        """Queue depth and running tasks per lane, for /metrics."""
        for q in self.queues():
            metrics.TASK_QUEUE_DEPTH.labels(q["name"]).set(q["depth"])
        for lane in self.workers()[0]["lanes"]:
            metrics.TASKS_RUNNING.labels(lane["queue"]).set(lane["busy"])

    def close(self) -> None:
        self.stop()

    def pending_rule(self, rule: str) -> bool:
        """Whether a run of maintenance `rule` is queued, running or waiting to retry."""
        with self._lock:
            return any(
                t.kind == "maintenance"
                and t.params.get("rule") == rule
                and t.state in ("queued", "running", "retrying")
                for t in self._tasks.values()
            )


def _warm_up(warm_up: Callable[[], None]) -> None:
    """Import the task code before the first task needs it (seconds, on a cold start)."""
    try:
        warm_up()
    except Exception:  # a missing optional module shows up when a task runs
        log.debug("task warm-up failed", exc_info=True)


class Scheduler:
    """Submits maintenance runs on their periods (the in-process stand-in for beat)."""

    def __init__(self, runner: InProcessRunner, periods: dict[str, float]) -> None:
        self.runner = runner
        self.periods = periods
        self._stop = threading.Event()
        self._last: dict[str, float | None] = {}
        self._thread = threading.Thread(target=self._loop, name="agentdata-scheduler", daemon=True)

    def start(self) -> None:
        self._last = dict(maintenance.last_runs(self.runner.core.jobs))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def next_due(self) -> dict[str, float]:
        return {
            rule: (self._last.get(rule) or 0.0) + period for rule, period in self.periods.items()
        }

    def describe(self) -> dict[str, Any]:
        return {
            "rules": {
                rule: {"every_s": period, "last_run_at": self._last.get(rule), "next_run_at": due}
                for (rule, period), due in zip(
                    self.periods.items(), self.next_due().values(), strict=True
                )
            }
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for rule, due in self.next_due().items():
                if due <= now and not self.runner.pending_rule(rule):
                    try:
                        self.runner.submit("maintenance", {"rule": rule})
                    except Unavailable:
                        return
                    self._last[rule] = now
            wait = min(self.next_due().values()) - time.time()
            self._stop.wait(min(max(wait, 0.2), 60.0))
