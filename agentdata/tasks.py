"""The task contract: what a task is, where it is queued, and how a job starts one.

Task kinds and their queues are listed here once (`TASK_KINDS`); the kinds that are
jobs (`JobKind`) are the ones users see in `/api/v1/jobs`. Everything else about tasks
is written against this module:

- a task function is `function(params, ctx) -> dict` (`TaskFunction`), where `ctx` is
  the `TaskContext` of the process running it;
- `workers.registry` maps each kind to its function and its retry policy (`TaskEntry`);
  Celery (`workers.tasks`) and the embedded runner (`agentdata.runner`, handed the
  registry by the launcher) call the very same functions;
- a `Dispatcher` queues tasks and reports on them (`workers.dispatcher` for Celery, the
  embedded runner without Redis, `NoDispatcher` for a core that runs none); the launcher
  builds it, `Core.open` takes it, and it starts once the core is complete;
- `start_job` is the one sequence that turns a request into a queued job: create the
  job, give it a task id and a delegated credential, submit the task, and fail the job
  with step `dispatch` if the task cannot be queued.

    started = start_job(core, "export", params, principal=principal)
    started.job.id, started.task_id

Parameters named in `SECRET_PARAMS` (a task's delegated credential) are never shown:
not in Celery's task repr (logs, Flower, inspect), not in any status answer.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from agentdata.errors import AgentdataError, NotFound, Unavailable
from agentdata.settings import Settings

if TYPE_CHECKING:
    from agentdata.core import Core
    from agentdata.jobs import Job
    from agentdata.retries import RetryPolicy
    from agentdata.tokens import Principal

#: The kinds of job (a record in the jobs table, listed by `/api/v1/jobs`).
JobKind = Literal["export", "sync", "maintenance"]
JOB_KINDS: tuple[str, ...] = get_args(JobKind)


@dataclass(frozen=True)
class TaskKind:
    """A kind of task: its Celery name and the queue it goes to."""

    kind: str
    celery_name: str
    queue: str

    @property
    def is_job(self) -> bool:
        """Whether each task of this kind runs a job (beat's sync tick does not)."""
        return self.kind in JOB_KINDS


TASK_KINDS: dict[str, TaskKind] = {
    "export": TaskKind("export", "agentdata.export", "exports"),
    "maintenance": TaskKind("maintenance", "agentdata.maintenance", "maintenance"),
    "sync": TaskKind("sync", "agentdata.sync", "syncs"),
    # Beat's tick for scheduled syncs: asks the server which are due (no job of its own).
    "sync_schedule": TaskKind("sync_schedule", "agentdata.sync_schedule", "maintenance"),
}

#: The queue for anything not routed elsewhere.
DEFAULT_QUEUE = "agentdata"
#: Parameter names whose values are credentials: never logged, listed or shown.
SECRET_PARAMS = frozenset({"token"})


def task_kind(kind: str) -> TaskKind:
    """The kind named `kind`; NotFound (naming the kinds) for any other name."""
    try:
        return TASK_KINDS[kind]
    except KeyError:
        raise NotFound(f"no task kind {kind!r}; kinds: {', '.join(TASK_KINDS)}") from None


def queue_names() -> list[str]:
    """Every queue: the default one first, then the kinds' queues in name order."""
    return [DEFAULT_QUEUE, *sorted({k.queue for k in TASK_KINDS.values()})]


def kind_of_celery_name(celery_name: str | None) -> str | None:
    """The kind whose Celery task is `celery_name` (the name itself if none is)."""
    for k in TASK_KINDS.values():
        if k.celery_name == celery_name:
            return k.kind
    return celery_name


def redacted(params: dict[str, Any]) -> dict[str, Any]:
    """`params` fit to show: credentials replaced by a placeholder."""
    return {k: ("<redacted>" if k in SECRET_PARAMS else v) for k, v in params.items()}


def new_task_id() -> str:
    return str(uuid.uuid4())


# -- what a task function gets -------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens, as seen from the task."""

    http_url: str
    flight_url: str
    #: PEM roots to trust for TLS (a self-signed server certificate); None = system roots.
    tls_roots: bytes | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Endpoints:
        """Worker URLs: `server_url` / `flight_url` settings, else derived from host and ports."""
        host = connectable_host(settings.host)
        tls = settings.tls_cert is not None
        http_url = (
            settings.server_url or f"{'https' if tls else 'http'}://{host}:{settings.http_port}"
        )
        flight_url = (
            settings.flight_url
            or f"{'grpc+tls' if tls else 'grpc'}://{host}:{settings.flight_port}"
        )
        roots = Path(settings.tls_cert).read_bytes() if settings.tls_cert is not None else None
        return cls(http_url.rstrip("/"), flight_url, roots)


def connectable_host(host: str) -> str:
    """A bind address as a connect address (a wildcard means this machine's loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


@dataclass
class TaskContext:
    """What a task function gets besides its parameters: who runs it and how to call home."""

    task_id: str
    endpoints: Endpoints
    #: Scratch space for files being written (removed by the task when done).
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: The admin token for scheduled work that has no caller (maintenance); never logged.
    service_token: Callable[[], str] | None = None
    progress_every_s: float = 0.5
    attempt: int = 1
    #: "celery" or "embedded": where the task runs, for logs and results.
    runner: str = "celery"
    #: The settings of the process running the task (retry policy, locks, sync tuning).
    settings: Settings | None = None


#: A task function: the same plain function for Celery and the embedded runner.
TaskFunction = Callable[[dict[str, Any], TaskContext], dict[str, Any]]


@dataclass(frozen=True)
class TaskEntry:
    """One kind in the task registry: its function and how it is retried."""

    function: TaskFunction
    #: `f(settings) -> RetryPolicy` (see `agentdata.retries`); None: never retried.
    retry: Callable[[Settings], RetryPolicy] | None = None


#: kind -> entry (`workers.registry.REGISTRY`); the launcher hands it to the runner.
TaskRegistry = Mapping[str, TaskEntry]


class Dispatcher(Protocol):
    """Submit tasks and inspect where they run.

    A dispatcher is built before the core (it is one of the core's fields) and started
    once the core holding it is complete and the servers listen (`start`).
    """

    mode: str  # "celery", "embedded" or "none"

    def submit(self, kind: str, params: dict[str, Any], *, task_id: str | None = None) -> str:
        """Queue a task; returns its id (the one given, or a new one)."""
        ...

    def status(self, task_id: str) -> dict[str, Any]: ...
    def active(self) -> list[dict[str, Any]]: ...
    def queues(self) -> list[dict[str, Any]]: ...
    def workers(self) -> list[dict[str, Any]]: ...

    def probes(self) -> Mapping[str, Callable[[], object]]:
        """Readiness checks of what tasks depend on (the broker), name -> raises if down."""
        ...

    def refresh_gauges(self) -> None:
        """Update the task gauges (queue depths, running tasks) before /metrics renders."""
        ...

    def start(self, core: Core, endpoints: Endpoints | None = None) -> None:
        """Begin work, with the complete core that holds this dispatcher and the URLs
        this process serves on (None: derive them from the settings)."""
        ...

    def close(self) -> None: ...


#: Why a core without a dispatcher refuses tasks.
NO_DISPATCHER = "this server runs no task dispatcher"


class NoDispatcher:
    """The dispatcher of a core that runs no tasks (a core opened by a test or a tool):
    inspection and submission answer Unavailable, and `start_job` creates no job."""

    mode = "none"

    def submit(self, kind: str, params: dict[str, Any], *, task_id: str | None = None) -> str:
        raise Unavailable(NO_DISPATCHER)

    def status(self, task_id: str) -> dict[str, Any]:
        raise Unavailable(NO_DISPATCHER)

    def active(self) -> list[dict[str, Any]]:
        raise Unavailable(NO_DISPATCHER)

    def queues(self) -> list[dict[str, Any]]:
        raise Unavailable(NO_DISPATCHER)

    def workers(self) -> list[dict[str, Any]]:
        raise Unavailable(NO_DISPATCHER)

    def probes(self) -> Mapping[str, Callable[[], object]]:
        return {}

    def refresh_gauges(self) -> None:
        pass

    def start(self, core: Core, endpoints: Endpoints | None = None) -> None:
        pass

    def close(self) -> None:
        pass


# -- starting a job ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartedJob:
    """A queued job and the id of the task that runs it."""

    job: Job
    task_id: str


def start_job(
    core: Core,
    kind: JobKind,
    params: dict[str, Any],
    *,
    principal: Principal,
    acting_as: Principal | None = None,
    task_params: Callable[[Job], dict[str, Any]] | None = None,
) -> StartedJob:
    """Create a job of `kind` owned by `principal` and queue the task that runs it.

    The task gets `task_params(job)` (by default the job's own params) plus the job's id
    and a credential delegated for this job only, acting as `acting_as` (by default the
    caller, with all its limits). If the task cannot be queued (the broker is down), the
    job is failed with step `dispatch` and the error raised: no job stays queued for a
    task that does not exist.
    """
    dispatcher = core.dispatcher
    if isinstance(dispatcher, NoDispatcher):
        raise Unavailable(NO_DISPATCHER)  # before a job exists that no task would run
    job = core.jobs.create(kind, params, owner=principal.token_id)
    try:
        extra = task_params(job) if task_params is not None else dict(job.params)
        task_id = new_task_id()
        core.jobs.set_task_id(job.id, task_id)
        token = core.tokens.delegate(
            acting_as or principal, job_id=job.id, ttl_s=core.settings.task_token_ttl_s
        )
        dispatcher.submit(kind, {**extra, "job_id": job.id, "token": token}, task_id=task_id)
    except AgentdataError as e:
        core.jobs.fail(job.id, step="dispatch", code=e.code, message=e.message)
        raise
    return StartedJob(job=core.jobs.get(job.id), task_id=task_id)
