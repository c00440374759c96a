"""The Celery app: Redis as broker and result backend, configured from Settings.

    agentdata worker --redis-url redis://host:6379/0 --server-url http://host:8000
    celery -A workers.celery_app worker        # the same app, settings from AGENTDATA_*

Delivery is at-least-once: a task is acknowledged after it ran (`acks_late`) and
returned to the queue if its worker dies mid-task (`task_reject_on_worker_lost`);
each worker process takes one task at a time (`worker_prefetch_multiplier=1`), so a
long export never holds others back. Messages are JSON only. Exports and maintenance
have queues of their own, so clean-up is never stuck behind a long export; a plain
`agentdata worker` consumes all of them.

Beat's schedule is the maintenance periods from Settings (`agentdata.maintenance`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from kombu import Exchange, Queue  # type: ignore[attr-defined]  # kombu has no type hints

from agentdata.errors import InvalidArgument
from agentdata.maintenance import schedule
from agentdata.settings import Settings
from agentdata.tasks import DEFAULT_QUEUE, TASK_KINDS, queue_names


def create_app(settings: Settings | None = None, *, register_tasks: bool = True) -> Celery:
    """A Celery app for `settings` (from the environment when None).

    `register_tasks=False` gives a sending-only app (the server's dispatcher), which
    needs no task code.
    """
    settings = settings or Settings()
    if not settings.redis_url:
        raise InvalidArgument(
            "Celery needs a Redis URL: set AGENTDATA_REDIS_URL (without Redis, "
            "`agentdata serve` runs tasks in-process)"
        )
    backend = settings.redis_url
    if not register_tasks:
        backend = f"{__name__}:SendOnlyRedisBackend+{settings.redis_url}"
    app = Celery("agentdata", broker=settings.redis_url, backend=backend)
    queues = queue_names()
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        result_expires=timedelta(days=1),
        task_default_queue=DEFAULT_QUEUE,
        # One direct exchange per queue, bound by its own name: a task lands in exactly one.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
            for name in queues
        ],
        task_default_exchange=DEFAULT_QUEUE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={k.celery_name: {"queue": k.queue} for k in TASK_KINDS.values()},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # With acks_late, Redis redelivers a task not acknowledged within the visibility
        # timeout; it must outlast the longest task (bounded by its credential's life).
        broker_transport_options=_transport_options(settings),
        result_backend_transport_options={"retry_policy": {"timeout": 3.0}},
        beat_schedule=beat_schedule(settings),
        worker_hijack_root_logger=False,
        timezone="UTC",
    )
    app.agentdata_settings = settings
    if register_tasks:
        from workers.tasks import register

        register(app)
    return app


class SendOnlyRedisBackend(RedisBackend):
    """The result backend of a process that sends tasks and reads their state, but never
    blocks on a result: it does not subscribe to each task's result channel (which
    Celery does on every send, and which nobody would ever drain here)."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One beat entry per maintenance rule whose period is on, and the scheduled-sync tick."""
    spec = TASK_KINDS["maintenance"]
    entries = {
        f"maintenance-{rule}": {
            "task": spec.celery_name,
            "schedule": timedelta(seconds=period),
            "kwargs": {"params": {"rule": rule}},
            "options": {"queue": spec.queue},
        }
        for rule, period in schedule(settings).items()
    }
    if settings.sync_schedule_every_s > 0:
        # The server decides which syncs are due (agentdata.sync_runs); beat only asks.
        tick = TASK_KINDS["sync_schedule"]
        entries["syncs-due"] = {
            "task": tick.celery_name,
            "schedule": timedelta(seconds=settings.sync_schedule_every_s),
            "kwargs": {"params": {}},
            "options": {"queue": tick.queue, "expires": settings.sync_schedule_every_s},
        }
    return entries


def _transport_options(settings: Settings) -> dict[str, Any]:
    """Redis redelivers a task not acknowledged within the visibility timeout (acks_late):
    by default it must outlast the longest task (bounded by its credential's life); a
    short one (`broker_visibility_timeout_s`) recovers from dead workers sooner, and the
    sweep that hands their tasks back then runs as often."""
    if settings.broker_visibility_timeout_s is None:
        return {"visibility_timeout": max(3600, settings.task_token_ttl_s)}
    timeout = max(1, settings.broker_visibility_timeout_s)
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": max(1, min(10, timeout // 2)),
        "unacked_restore_throttle": 1,
    }


_default: Celery | None = None


def default_app() -> Celery:
    """The app for `celery -A workers.celery_app`, from AGENTDATA_* variables (built once)."""
    global _default
    if _default is None:
        _default = create_app()
    return _default


def __getattr__(name: str) -> Any:
    # `celery -A workers.celery_app` looks up `app` (or `celery`); build it only then, so
    # importing this module never needs Redis settings.
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(name)
