"""Celery task wrappers: thin shells around the plain task functions.

Each kind in `agentdata.dispatch.TASK_KINDS` becomes one Celery task named by it
(`agentdata.export`, `agentdata.maintenance`, ...), taking `params` (a dict) and
calling the same function the in-process runner calls, with a context built from the
worker's settings. All logic (and all error reporting to the job) lives in those
functions; a wrapper only supplies the task id and the attempt number.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task

from agentdata.dispatch import TASK_KINDS, load_function, retry_policy
from workers.client import worker_context


def register(app: Celery) -> None:
    """Define one Celery task per task kind on `app`."""
    for kind in TASK_KINDS.values():
        # Import the task code now, not inside the first task (pyarrow's first use of
        # Python values imports pandas when installed: seconds on a cold start).
        load_function(kind.kind)
        _define(app, kind.kind, kind.celery_name)
    _warm_up()


def _define(app: Celery, kind: str, name: str) -> None:
    def run(self: Task, params: dict[str, Any]) -> dict[str, Any]:
        settings = self.app.agentdata_settings  # type: ignore[attr-defined]
        ctx = worker_context(settings, self.request.id, attempt=(self.request.retries or 0) + 1)
        return load_function(kind)(params, ctx)

    run.__name__ = run.__qualname__ = f"{kind}_task"
    app.task(
        name=name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        **_retry_options(kind, app.agentdata_settings),  # type: ignore[attr-defined]
    )(run)


def _retry_options(kind: str, settings: Any) -> dict[str, Any]:
    """Celery's autoretry for kinds with a retry policy (`agentdata.retries`: syncs and
    exports on transient errors, maintenance once; exponential backoff with jitter);
    none for the others (beat's sync tick, which the next tick replaces)."""
    policy = retry_policy(kind, settings)
    return policy.celery_options() if policy is not None else {"max_retries": 0}


def _warm_up() -> None:
    import pyarrow as pa

    pa.array(["warm-up"])
