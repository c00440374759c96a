"""Celery task wrappers: one Celery task per entry of the task registry.

Each kind (`agentdata.tasks.TASK_KINDS`) becomes one Celery task named by it
(`agentdata.export`, `agentdata.maintenance`, ...), taking `params` (a dict) and
calling the kind's function from `workers.registry` (the one the embedded runner calls
too), with a context built from the worker's settings and Celery's autoretry set from
the kind's retry policy. All logic (and all error reporting to the job) lives in those
functions; a wrapper only supplies the task id and the attempt number.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from agentdata.settings import Settings
from agentdata.tasks import TASK_KINDS, TaskEntry
from workers.client import worker_context
from workers.registry import REGISTRY, warm_up


def register(app: Celery) -> None:
    """Define one Celery task per task kind on `app`."""
    for kind in TASK_KINDS.values():
        _define(app, kind.kind, kind.celery_name, REGISTRY[kind.kind])
    # Import the task code now, not inside the first task (seconds on a cold start).
    warm_up()


def _define(app: Celery, kind: str, name: str, entry: TaskEntry) -> None:
    def run(self: Task, params: dict[str, Any]) -> dict[str, Any]:
        settings = self.app.agentdata_settings
        ctx = worker_context(settings, self.request.id, attempt=(self.request.retries or 0) + 1)
        return entry.function(params, ctx)

    run.__name__ = run.__qualname__ = f"{kind}_task"
    app.task(
        name=name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        **_retry_options(entry, app.agentdata_settings),
    )(run)


def _retry_options(entry: TaskEntry, settings: Settings) -> dict[str, Any]:
    """Celery's autoretry for kinds with a retry policy (`agentdata.retries`: syncs and
    exports on transient errors, maintenance once; exponential backoff with jitter);
    none for the others (beat's sync tick, which the next tick replaces)."""
    return entry.retry(settings).celery_options() if entry.retry is not None else {"max_retries": 0}
