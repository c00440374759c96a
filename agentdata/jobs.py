"""Jobs: the record of every export, sync and maintenance run.

Every query of the jobs tables (`jobs`, `job_attempts`) is here, in `JobStore`.

States and the moves between them:

    queued ──▶ running ──▶ succeeded
      │          │  ▲ └──▶ failed
      │          ▼  │
      │       retrying
      └──────────┴──────▶ cancelled   (on request; a running task sees
                                       `cancel_requested` and stops)

Progress (rows, bytes, percent) is written by whoever runs the job (an in-process
task, or a Celery worker through the REST API); `progress_at` lets maintenance find
runs that stopped making progress.

Every attempt is kept (`attempt_history`, table `job_attempts`): a `start` opens
attempt n (start time, task id), and the next transition closes it with its outcome
and error {step, code, message}: `retrying` (it failed and another attempt is
scheduled), `succeeded`, `failed`, `cancelled`, or `interrupted` when a later attempt
started without this one ever reporting its end (its worker or the server died):

    [{"attempt": 1, "started_at": ..., "ended_at": ..., "outcome": "retrying",
      "error": {"step": "query", "code": "unavailable", "message": "..."}, "task_id": ...},
     {"attempt": 2, "started_at": ..., "ended_at": ..., "outcome": "succeeded", ...}]
"""

from __future__ import annotations

import builtins
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from agentdata.errors import Conflict, NotFound, PermissionDenied
from agentdata.meta import MetaStore
from agentdata.tokens import Principal


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


@dataclass
class Job:
    id: str
    kind: str
    state: str
    owner: str | None
    params: dict[str, Any]
    task_id: str | None
    progress_rows: int
    progress_bytes: int
    percent: float | None
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    updated_at: float
    progress_at: float | None
    finished_at: float | None
    #: One entry per attempt, oldest first (see the module docstring).
    attempt_history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    """Create, update, list and cancel jobs in the meta store."""

    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta

    def create(self, kind: str, params: dict[str, Any], owner: str | None) -> Job:
        now = time.time()
        job_id = uuid.uuid4().hex
        self._meta.execute(
            "INSERT INTO jobs (id, kind, state, owner, params, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, kind, JobState.QUEUED.value, owner, json.dumps(params), now, now),
        )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        row = self._meta.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return _job(row, self.attempts([job_id]).get(job_id, []))

    def attempts(self, job_ids: builtins.list[str]) -> dict[str, builtins.list[dict[str, Any]]]:
        """The attempt history of each of `job_ids` (see the module docstring)."""
        if not job_ids:
            return {}
        marks = ", ".join("?" * len(job_ids))
        rows = self._meta.all(
            f"SELECT * FROM job_attempts WHERE job_id IN ({marks}) ORDER BY job_id, attempt",
            job_ids,
        )
        out: dict[str, builtins.list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["job_id"], []).append(
                {
                    "attempt": r["attempt"],
                    "task_id": r["task_id"],
                    "started_at": r["started_at"],
                    "ended_at": r["ended_at"],
                    "outcome": r["outcome"],
                    "error": json.loads(r["error"]) if r["error"] else None,
                }
            )
        return out

    def get_for(self, principal: Principal, job_id: str) -> Job:
        """A job the principal may see: its own, or any for an admin."""
        job = self.get(job_id)
        if not principal.is_admin and job.owner != principal.token_id:
            raise NotFound(f"no job with id {job_id!r}")
        return job

    def list(
        self,
        *,
        owner: str | None = None,
        kind: str | None = None,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Jobs, newest first, with the total count for paging."""
        where, params = [], []
        for column, value in (("owner", owner), ("kind", kind), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = self._meta.one(f"SELECT count(*) FROM jobs{clause}", params)[0]  # type: ignore[index]
        rows = self._meta.all(
            f"SELECT * FROM jobs{clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        history = self.attempts([r["id"] for r in rows])
        return [_job(r, history.get(r["id"], [])) for r in rows], int(total)

    def latest(
        self,
        *,
        kind: str | None = None,
        task_id: str | None = None,
        states: Iterable[JobState] | None = None,
        param: tuple[str, str] | None = None,
    ) -> Job | None:
        """The newest job matching every filter given: its kind, its task, one of
        `states`, and `param` = (name, value) among its params."""
        where, args = _filters(kind=kind, task_id=task_id, states=states, param=param)
        row = self._meta.one(f"SELECT id FROM jobs{where} ORDER BY created_at DESC LIMIT 1", args)
        return self.get(row["id"]) if row else None

    def newest_by_param(self, kind: str, param: str) -> dict[str, float]:
        """For jobs of `kind`: each value of param `param` -> when the newest job with it
        was created (e.g. each maintenance rule's last run)."""
        rows = self._meta.all(
            "SELECT json_extract(params, ?), max(created_at) FROM jobs WHERE kind = ? GROUP BY 1",
            (f"$.{param}", kind),
        )
        return {str(r[0]): float(r[1]) for r in rows if r[0] is not None}

    def finished_before(
        self, cutoffs: Mapping[JobState, float], *, keep: str | None = None
    ) -> builtins.list[tuple[str, JobState]]:
        """(id, state) of the jobs in each finished state of `cutoffs` that ended before
        its cutoff (a job that never recorded its end counts from its last update)."""
        found: builtins.list[tuple[str, JobState]] = []
        for state, before in cutoffs.items():
            rows = self._meta.all(
                "SELECT id FROM jobs WHERE state = ? AND coalesce(finished_at, updated_at) < ?"
                " AND id IS NOT ?",
                (state.value, before, keep),
            )
            found.extend((r["id"], state) for r in rows)
        return found

    def idle_since(
        self, cutoff: float, states: Iterable[JobState], *, keep: str | None = None
    ) -> builtins.list[Job]:
        """Jobs in `states` whose last sign of life (progress, start, update) is older
        than `cutoff`."""
        marks = [s.value for s in states]
        rows = self._meta.all(
            f"SELECT id FROM jobs WHERE state IN ({', '.join('?' * len(marks))})"
            " AND coalesce(progress_at, started_at, updated_at) < ? AND id IS NOT ?",
            (*marks, cutoff, keep),
        )
        return [self.get(r["id"]) for r in rows]

    def state_of(self, job_id: str) -> JobState | None:
        """A job's state, or None if there is no such job."""
        row = self._meta.one("SELECT state FROM jobs WHERE id = ?", (job_id,))
        return JobState(row["state"]) if row else None

    # -- transitions -----------------------------------------------------------
    def start(self, job_id: str, task_id: str | None = None) -> Job:
        """queued/retrying -> running; counts an attempt. Refused once cancelled."""
        now = time.time()
        with self._meta.transaction() as tx:
            row = tx.execute(
                "SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no job with id {job_id!r}")
            if row["cancel_requested"] or row["state"] == JobState.CANCELLED:
                raise Conflict("job was cancelled")
            if JobState(row["state"]).finished:
                raise Conflict(f"job already {row['state']}")
            tx.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = coalesce(started_at, ?),"
                " updated_at = ?, progress_at = ?, task_id = coalesce(?, task_id) WHERE id = ?",
                (JobState.RUNNING.value, now, now, now, task_id, job_id),
            )
            # An attempt still open never reported its end: its runner died under it.
            tx.execute(
                "UPDATE job_attempts SET ended_at = ?, outcome = 'interrupted'"
                " WHERE job_id = ? AND ended_at IS NULL",
                (now, job_id),
            )
            tx.execute(
                "INSERT INTO job_attempts (job_id, attempt, task_id, started_at, outcome)"
                " SELECT id, attempts, task_id, ?, 'running' FROM jobs WHERE id = ?",
                (now, job_id),
            )
        return self.get(job_id)

    def set_task_id(self, job_id: str, task_id: str) -> None:
        self._meta.execute(
            "UPDATE jobs SET task_id = ?, updated_at = ? WHERE id = ?",
            (task_id, time.time(), job_id),
        )

    def progress(
        self,
        job_id: str,
        *,
        rows: int | None = None,
        nbytes: int | None = None,
        percent: float | None = None,
    ) -> bool:
        """Record progress; returns True if cancellation was requested (the runner should stop)."""
        now = time.time()
        with self._meta.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET progress_rows = coalesce(?, progress_rows), progress_bytes = coalesce(?, progress_bytes),"
                " percent = coalesce(?, percent), updated_at = ?, progress_at = ? WHERE id = ?",
                (rows, nbytes, percent, now, now, job_id),
            )
            row = tx.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id!r}")
        return bool(row["cancel_requested"])

    def retrying(self, job_id: str, error: dict[str, Any]) -> Job:
        return self._finish(job_id, JobState.RETRYING, error=error, final=False)

    def succeed(self, job_id: str, result: dict[str, Any]) -> Job:
        return self._finish(job_id, JobState.SUCCEEDED, result=result)

    def fail(self, job_id: str, *, step: str, code: str, message: str) -> Job:
        """End a job as failed, or as cancelled when a cancel was asked for first (the
        failure is then how the cancel reached it, e.g. a revoked token's stream)."""
        error = {"step": step, "code": code, "message": message}
        state = JobState.CANCELLED if self.cancel_requested(job_id) else JobState.FAILED
        return self._finish(job_id, state, error=error)

    def mark_cancelled(self, job_id: str) -> Job:
        return self._finish(job_id, JobState.CANCELLED)

    def request_cancel(self, principal: Principal, job_id: str) -> Job:
        """Ask a job to stop: a queued one is cancelled now, a running one at its next progress call."""
        job = self.get_for(principal, job_id)
        if JobState(job.state).finished:
            raise Conflict(f"job already {job.state}")
        now = time.time()
        with self._meta.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id)
            )
            if job.state == JobState.QUEUED:
                tx.execute(
                    "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND state = ?",
                    (JobState.CANCELLED.value, now, job_id, JobState.QUEUED.value),
                )
        return self.get(job_id)

    def cancel_owned_by(self, owner: str, *, reason: str) -> int:
        """Cancel every unfinished job of a token (revocation): queued ones now, running
        ones at their next progress call. Returns how many were asked to stop."""
        now = time.time()
        error = json.dumps({"step": "cancel", "code": "cancelled", "message": reason})
        with self._meta.transaction() as tx:
            asked = tx.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE owner = ? AND state IN (?, ?, ?)",
                (now, owner, *(s.value for s in ACTIVE_STATES)),
            ).rowcount
            tx.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE owner = ? AND state = ?",
                (JobState.CANCELLED.value, now, error, owner, JobState.QUEUED.value),
            )
        return int(asked or 0)

    def cancel_requested(self, job_id: str) -> bool:
        row = self._meta.one("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row and row["cancel_requested"])

    def _finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        final: bool = True,
    ) -> Job:
        now = time.time()
        with self._meta.transaction() as tx:
            changed = tx.execute(
                "UPDATE jobs SET state = ?, result = coalesce(?, result), error = coalesce(?, error), updated_at = ?,"
                " finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
                (
                    state.value,
                    json.dumps(result) if result is not None else None,
                    json.dumps(error) if error is not None else None,
                    now,
                    1 if final else 0,
                    now,
                    job_id,
                ),
            ).rowcount
            # The attempt running now ends with the job's new state.
            tx.execute(
                "UPDATE job_attempts SET ended_at = ?, outcome = ?, error = ?"
                " WHERE job_id = ? AND ended_at IS NULL",
                (now, state.value, json.dumps(error) if error is not None else None, job_id),
            )
        if not changed:
            raise NotFound(f"no job with id {job_id!r}")
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._meta.transaction() as tx:
            tx.execute("DELETE FROM job_attempts WHERE job_id = ?", (job_id,))
            tx.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def count_by_kind_state(self) -> builtins.list[tuple[str, str, int]]:
        return [
            (r[0], r[1], int(r[2]))
            for r in self._meta.all("SELECT kind, state, count(*) FROM jobs GROUP BY 1, 2")
        ]


def check_owner(principal: Principal, job: Job) -> None:
    if not principal.is_admin and job.owner != principal.token_id:
        raise PermissionDenied("that job belongs to another token")


def _filters(
    *,
    kind: str | None,
    task_id: str | None,
    states: Iterable[JobState] | None,
    param: tuple[str, str] | None,
) -> tuple[str, builtins.list[Any]]:
    """A WHERE clause (with its arguments) for `JobStore.latest`."""
    where: builtins.list[str] = []
    args: builtins.list[Any] = []
    if kind is not None:
        where.append("kind = ?")
        args.append(kind)
    if task_id is not None:
        where.append("task_id = ?")
        args.append(task_id)
    if states is not None:
        marks = [s.value for s in states]
        where.append(f"state IN ({', '.join('?' * len(marks))})")
        args.extend(marks)
    if param is not None:
        # The JSON path is an argument too: a param name never becomes SQL.
        where.append("json_extract(params, ?) = ?")
        args.extend((f"$.{param[0]}", param[1]))
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


def _job(r: Any, history: list[dict[str, Any]] | None = None) -> Job:
    return Job(
        id=r["id"],
        kind=r["kind"],
        state=r["state"],
        owner=r["owner"],
        params=json.loads(r["params"]),
        task_id=r["task_id"],
        progress_rows=r["progress_rows"],
        progress_bytes=r["progress_bytes"],
        percent=r["percent"],
        attempts=r["attempts"],
        result=json.loads(r["result"]) if r["result"] else None,
        error=json.loads(r["error"]) if r["error"] else None,
        cancel_requested=bool(r["cancel_requested"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        updated_at=r["updated_at"],
        progress_at=r["progress_at"],
        finished_at=r["finished_at"],
        attempt_history=history or [],
    )
