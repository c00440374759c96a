"""Tasks on Celery workers: the dispatcher `agentdata serve` uses with Redis.

    dispatcher = CeleryDispatcher(settings)      # a sending-only Celery app
    task_id = dispatcher.submit("export", {"job_id": ..., "sql": ..., "token": ...})

`submit` sends the task to its kind's queue (`agentdata.tasks.TASK_KINDS`); the
monitoring calls (`status`, `active`, `queues`, `workers`) answer from Celery's
inspection and the broker, in the same shapes as the embedded runner's
(`agentdata.runner`). Redis and Celery exceptions are translated here into
`agentdata.errors.Unavailable` (the broker is the job layer's edge). Credentials in
task params (`agentdata.tasks.SECRET_PARAMS`) never reach Celery's task repr.

The launcher builds a `CeleryDispatcher` when a Redis URL is set and hands it to
`Core.open`; its readiness probe (`probes`: the broker) and its gauge refresher come
with it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from agentdata.errors import Unavailable
from agentdata.settings import Settings
from agentdata.tasks import (
    TASK_KINDS,
    Endpoints,
    kind_of_celery_name,
    new_task_id,
    queue_names,
    redacted,
    task_kind,
)
from workers.celery_app import create_app

if TYPE_CHECKING:
    from agentdata.core import Core

log = logging.getLogger("agentdata.dispatch")


@contextlib.contextmanager
def broker_errors(action: str) -> Iterator[None]:
    """Redis/Celery/kombu failures leave as Unavailable (never with the URL's password)."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as e:
        from celery.exceptions import CeleryError
        from celery.exceptions import TimeoutError as CeleryTimeout
        from kombu.exceptions import KombuError, OperationalError
        from redis.exceptions import RedisError

        if isinstance(
            e, OperationalError | KombuError | RedisError | CeleryError | CeleryTimeout | OSError
        ):
            raise Unavailable(
                f"the task broker is unreachable ({action}): {type(e).__name__}"
            ) from e
        raise


#: kombu's Redis transport keeps a list per priority step; priority 0 is the bare name.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_INSPECT_TIMEOUT_S = 1.0


class CeleryDispatcher:
    """Tasks on Celery workers through Redis; monitoring from inspect and the broker."""

    mode = "celery"

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise Unavailable("Celery dispatch needs redis_url")
        self.app = create_app(settings, register_tasks=False)
        self._redis_url = settings.redis_url
        self._redis: Any = None

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self._redis_url, socket_timeout=2, socket_connect_timeout=2
            )
        return self._redis

    def probe(self) -> bool:
        """Readiness: the broker answers PING."""
        with broker_errors("ping"):
            return bool(self._client().ping())

    def submit(self, kind: str, params: dict[str, Any], *, task_id: str | None = None) -> str:
        spec = task_kind(kind)
        task_id = task_id or new_task_id()
        # Fail fast when the broker is down (kombu would retry its publish for a while).
        self.probe()
        with broker_errors("submit"):
            self.app.send_task(
                spec.celery_name,
                kwargs={"params": params},
                task_id=task_id,
                queue=spec.queue,
                argsrepr="()",
                kwargsrepr=repr({"params": redacted(params)}),
            )
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        from celery.result import AsyncResult

        with broker_errors("status"):
            res = AsyncResult(task_id, app=self.app)
            state = res.state
            meta = res.backend.get_task_meta(task_id)
        out: dict[str, Any] = {"task_id": task_id, "state": state, "runner": self.mode}
        # Celery cannot tell "queued" from "never heard of": both are PENDING.
        if state == "PENDING":
            out["note"] = "PENDING means queued or unknown to the broker"
        if state == "SUCCESS" and isinstance(meta.get("result"), dict):
            out["result"] = redacted(meta["result"])
        elif state in ("FAILURE", "RETRY"):
            result = meta.get("result")
            if isinstance(result, dict):
                out["error"] = {
                    "type": result.get("exc_type"),
                    "message": " ".join(map(str, result.get("exc_message") or [])),
                }
            else:
                out["error"] = {"type": type(result).__name__, "message": str(result)}
        elif state == "STARTED" and isinstance(meta.get("result"), dict):
            out["worker"] = meta["result"].get("hostname")
            out["pid"] = meta["result"].get("pid")
        done = meta.get("date_done")
        out["finished_at"] = done.timestamp() if hasattr(done, "timestamp") else done
        return out

    def _inspect(self) -> Any:
        return self.app.control.inspect(timeout=_INSPECT_TIMEOUT_S)

    def active(self) -> list[dict[str, Any]]:
        with broker_errors("inspect"):
            inspect = self._inspect()
            active = inspect.active() or {}
            reserved = inspect.reserved() or {}
        out: list[dict[str, Any]] = []
        for state, by_worker in (("running", active), ("reserved", reserved)):
            for worker, tasks in by_worker.items():
                for t in tasks:
                    out.append(
                        {
                            "task_id": t.get("id"),
                            "kind": kind_of_celery_name(t.get("name")),
                            "name": t.get("name"),
                            "state": state,
                            "worker": worker,
                            "pid": t.get("worker_pid"),
                            "started_at": t.get("time_start"),
                            "queue": (t.get("delivery_info") or {}).get("routing_key"),
                        }
                    )
        return out

    def queues(self) -> list[dict[str, Any]]:
        names = queue_names()
        with broker_errors("queues"):
            client = self._client()
            pipe = client.pipeline()
            for name in names:
                pipe.llen(name)
                for step in _PRIORITY_STEPS:
                    pipe.llen(f"{name}{_PRIORITY_SEP}{step}")
            lengths = pipe.execute()
        per = 1 + len(_PRIORITY_STEPS)
        return [
            {
                "name": name,
                "depth": int(sum(lengths[i * per : (i + 1) * per])),
                "kinds": sorted(k.kind for k in TASK_KINDS.values() if k.queue == name),
                "broker": "redis",
            }
            for i, name in enumerate(names)
        ]

    def workers(self) -> list[dict[str, Any]]:
        with broker_errors("inspect"):
            inspect = self._inspect()
            stats = inspect.stats() or {}
            active = inspect.active() or {}
            queues = inspect.active_queues() or {}
        out = []
        for name, s in sorted(stats.items()):
            pool = s.get("pool") or {}
            out.append(
                {
                    "name": name,
                    "runner": self.mode,
                    "pid": s.get("pid"),
                    "pool": pool.get("implementation"),
                    "concurrency": pool.get("max-concurrency"),
                    "processes": pool.get("processes"),
                    "busy": len(active.get(name) or []),
                    "queues": sorted(q.get("name") for q in queues.get(name) or []),
                    "uptime_s": s.get("uptime"),
                    "tasks_done": s.get("total") or {},
                    "prefetch_count": s.get("prefetch_count"),
                }
            )
        return out

    def probes(self) -> Mapping[str, Callable[[], object]]:
        """Readiness: the broker answers."""
        return {"broker": self.probe}

    def start(self, core: Core, endpoints: Endpoints | None = None) -> None:
        """Check the broker once, for the log: tasks run on workers, not here."""
        try:
            self.probe()
            log.info("tasks go to Celery workers (broker answers)")
        except Unavailable as e:
            # Serve anyway: /readyz reports the broker, exports answer 503 until it is back.
            log.warning("tasks go to Celery workers, but %s", e.message)

    def refresh_gauges(self) -> None:
        """Queue depths from the broker, for /metrics (skipped while it is down)."""
        from agentdata import metrics

        try:
            queues = self.queues()
        except Unavailable:
            return
        for q in queues:
            metrics.TASK_QUEUE_DEPTH.labels(q["name"]).set(q["depth"])

    def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
        with contextlib.suppress(Exception):
            self.app.close()
