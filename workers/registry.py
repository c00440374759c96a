"""The task registry: each task kind's function and retry policy.

    entry = REGISTRY["export"]
    entry.function(params, ctx)          # the plain task function
    entry.retry(settings)                # its RetryPolicy (None: never retried)

Celery (`workers.tasks`) defines one task per entry; the launcher hands the same
registry to the embedded runner (`agentdata.runner`), so both run the same functions
under the same policies. Kinds and queues come from `agentdata.tasks.TASK_KINDS`; it
and this registry name the same kinds (tests/unit/test_tasks.py).

Task code is imported on first call (`warm_up` imports it ahead of time): the sync task
pulls in the Snowflake connector, which takes seconds, and a server should not wait for
it before it listens.
"""

from __future__ import annotations

import importlib
from typing import Any

from agentdata.retries import export_policy, maintenance_policy, sync_policy
from agentdata.tasks import TaskContext, TaskEntry, TaskFunction


class _Deferred:
    """A task function imported when first called (`module:attribute`)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._function: TaskFunction | None = None

    def load(self) -> TaskFunction:
        if self._function is None:
            module, _, attribute = self.ref.partition(":")
            self._function = getattr(importlib.import_module(module), attribute)
        return self._function

    def __call__(self, params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        return self.load()(params, ctx)

    def __repr__(self) -> str:
        return f"<task function {self.ref}>"


REGISTRY: dict[str, TaskEntry] = {
    "export": TaskEntry(_Deferred("workers.exports:export_task"), export_policy),
    "maintenance": TaskEntry(_Deferred("workers.maintenance:maintenance_task"), maintenance_policy),
    "sync": TaskEntry(_Deferred("workers.sync.run:sync_task"), sync_policy),
    # Beat's tick is not retried: the next tick replaces it.
    "sync_schedule": TaskEntry(_Deferred("workers.sync.run:schedule_task")),
}


def warm_up() -> None:
    """Import every task function now (seconds on a cold start), and pyarrow's first use
    of Python values, which imports pandas when installed."""
    for entry in REGISTRY.values():
        if isinstance(entry.function, _Deferred):
            entry.function.load()
    import pyarrow as pa

    pa.array(["warm-up"])
