"""The task contract (`agentdata.tasks`) on a real core in a temp dir, no server process:
one list of kinds, one job-start sequence, the embedded runner calling maintenance
directly, every jobs query through `JobStore`, job credentials found by their job."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentdata.core import Core
from agentdata.errors import Unauthenticated, Unavailable
from agentdata.jobs import JobState
from agentdata.runner import InProcessRunner
from agentdata.settings import Settings
from agentdata.tasks import JOB_KINDS, TASK_KINDS, TaskContext, TaskEntry, start_job
from agentdata.tokens import Principal
from workers.registry import REGISTRY


class RecordingDispatcher:
    """A dispatcher that keeps what it is given (or refuses, like a broker that is down)."""

    mode = "test"

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.submitted: list[tuple[str, dict[str, Any], str | None]] = []

    def submit(self, kind: str, params: dict[str, Any], *, task_id: str | None = None) -> str:
        if self.down:
            raise Unavailable("the task broker is unreachable (submit): ConnectionError")
        self.submitted.append((kind, params, task_id))
        return task_id or "generated"

    def status(self, task_id: str) -> dict[str, Any]:
        return {}

    def active(self) -> list[dict[str, Any]]:
        return []

    def queues(self) -> list[dict[str, Any]]:
        return []

    def workers(self) -> list[dict[str, Any]]:
        return []

    def probes(self) -> dict[str, Any]:
        return {}

    def refresh_gauges(self) -> None:
        pass

    def start(self, core: Core, endpoints: Any = None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", demo=False)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    core = Core.open(settings)
    yield core
    core.close()


@pytest.fixture
def core_with(settings: Settings) -> Iterator[Callable[[Any], Core]]:
    """Opens the core with the dispatcher given (the core is frozen: it is built with it)."""
    opened: list[Core] = []

    def open_with(dispatcher: Any) -> Core:
        opened.append(Core.open(settings, dispatcher=dispatcher))
        return opened[-1]

    yield open_with
    for core in opened:
        core.close()


def _reader(core: Core) -> Principal:
    """A reader token limited to 7 rows, verified."""
    _, token = core.tokens.create(name="reader", role="reader", tables=["demo.*"], max_rows=7)
    return core.tokens.verify(token)


@pytest.fixture
def reader(core: Core) -> Principal:
    return _reader(core)


def test_kinds_are_listed_once_and_the_registry_names_them_all() -> None:
    assert REGISTRY.keys() == TASK_KINDS.keys()
    assert set(JOB_KINDS) == {k for k, spec in TASK_KINDS.items() if spec.is_job}
    assert {"export", "sync", "maintenance"} == set(JOB_KINDS)
    assert REGISTRY["sync_schedule"].retry is None  # the next tick replaces it


def test_start_job_queues_the_task_with_a_credential_for_the_job(
    core_with: Callable[[Any], Core],
) -> None:
    core = core_with(dispatcher := RecordingDispatcher())
    reader = _reader(core)
    started = start_job(core, "export", {"sql": "SELECT 1"}, principal=reader)
    assert started.job.state == JobState.QUEUED and started.job.owner == reader.token_id
    assert started.job.task_id == started.task_id
    [(kind, params, task_id)] = dispatcher.submitted
    assert (kind, task_id) == ("export", started.task_id)
    assert params["sql"] == "SELECT 1" and params["job_id"] == started.job.id
    # The credential acts as the caller, with its limits, for this job only...
    acting = core.tokens.verify(params["token"])
    assert (acting.token_id, acting.max_rows, acting.job_id) == (reader.token_id, 7, started.job.id)
    # ...and ends with its job.
    core.jobs.start(started.job.id)
    core.jobs.succeed(started.job.id, {})
    with pytest.raises(Unauthenticated, match="ended with its job"):
        core.tokens.verify(params["token"])


def test_a_job_whose_task_cannot_be_queued_is_failed_at_dispatch(
    core_with: Callable[[Any], Core],
) -> None:
    core = core_with(RecordingDispatcher(down=True))
    with pytest.raises(Unavailable):
        start_job(core, "export", {"sql": "SELECT 1"}, principal=_reader(core))
    [job], total = core.jobs.list()
    assert total == 1 and job.state == JobState.FAILED
    assert job.error is not None and job.error["step"] == "dispatch"
    assert job.error["code"] == "unavailable"


def test_no_dispatcher_no_job(core: Core, reader: Principal) -> None:
    with pytest.raises(Unavailable, match="no task dispatcher"):
        start_job(core, "export", {"sql": "SELECT 1"}, principal=reader)
    assert core.jobs.list()[1] == 0


def test_a_delegated_credential_is_renewed_by_its_job_and_removed_once_expired(
    core: Core, reader: Principal
) -> None:
    job = core.jobs.create("export", {}, owner=reader.token_id)
    core.tokens.delegate(reader, job_id=job.id, ttl_s=1)
    renewed = core.tokens.redelegate(job.id, ttl_s=3600)
    assert core.tokens.verify(renewed).job_id == job.id
    # Nothing matches the name any more: the record is found by its job id.
    core.meta.execute("UPDATE tokens SET name = 'renamed' WHERE job_id = ?", (job.id,))
    assert core.tokens.verify(core.tokens.redelegate(job.id, ttl_s=3600)).job_id == job.id
    users_before = {t.id for t in core.tokens.list() if t.name == "reader"}
    removed = core.tokens.delete_expired_job_credentials(time.time() + 7200)
    assert removed == 3  # every credential of the job, user tokens untouched
    assert {t.id for t in core.tokens.list()} == users_before


def test_job_store_queries(core: Core) -> None:
    jobs = core.jobs
    first = jobs.create("maintenance", {"rule": "jobs"}, owner=None)
    second = jobs.create("maintenance", {"rule": "stale"}, owner=None)
    sync = jobs.create("sync", {"name": "orders"}, owner=None)
    jobs.set_task_id(second.id, "task-2")
    assert jobs.latest(kind="sync", param=("name", "orders")) == jobs.get(sync.id)
    assert jobs.latest(kind="sync", param=("name", "other")) is None
    assert jobs.latest(task_id="task-2").id == second.id  # type: ignore[union-attr]
    assert jobs.latest(kind="maintenance", states=(JobState.RUNNING,)) is None
    newest = jobs.newest_by_param("maintenance", "rule")
    assert newest == {"jobs": first.created_at, "stale": second.created_at}
    jobs.start(first.id)
    jobs.succeed(first.id, {})
    jobs.start(second.id)
    later = time.time() + 10
    assert jobs.finished_before({JobState.SUCCEEDED: later}) == [(first.id, JobState.SUCCEEDED)]
    assert jobs.finished_before({JobState.SUCCEEDED: later}, keep=first.id) == []
    assert [j.id for j in jobs.idle_since(later, (JobState.RUNNING,))] == [second.id]
    assert jobs.state_of(second.id) is JobState.RUNNING and jobs.state_of("nope") is None


def _refuse(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    raise AssertionError("the embedded runner must run maintenance in-process")


def test_the_embedded_runner_runs_maintenance_without_any_server(
    settings: Settings, core_with: Callable[[Any], Core]
) -> None:
    """No HTTP or Flight server listens here (the runner is given no endpoints): a
    maintenance task still runs, because the runner calls the rule directly."""
    registry = {**REGISTRY, "maintenance": TaskEntry(_refuse, REGISTRY["maintenance"].retry)}
    runner = InProcessRunner(settings, threads=1, tasks=registry)
    core = core_with(runner)
    runner.start(core)
    try:
        task_id = runner.submit("maintenance", {"rule": "jobs"})
        deadline = time.monotonic() + 30
        while (status := runner.status(task_id))["state"] not in ("SUCCESS", "FAILURE"):
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
    finally:
        runner.stop()
    assert status["state"] == "SUCCESS", status
    assert status["result"]["rule"] == "jobs" and status["result"]["state"] == "succeeded"
    job = core.jobs.get(status["result"]["job_id"])
    assert job.kind == "maintenance" and job.task_id == task_id
