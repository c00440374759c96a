"""The sync task: the orchestrator of extract → plan → load, and everything around one
run (its lock, its job's events, progress and cancellation, retries, its result).

    lock ─▶ start ─▶ describe source (extract) ─▶ inspect table, watermark (plan)
         ─▶ extract ⇢ load (DoPut, batch by batch) ─▶ [keys ⇢ reconcile] ─▶ succeeded
                    │ every `progress_every_s`: rows and bytes on the job; its answer
                    └ says whether the job was cancelled (the upload is then abandoned)

`sync_task(params, ctx)` is the plain function behind the Celery task `agentdata.sync`
and the in-process runner. Its params come from `agentdata.sync_runs.start_run`: the
job id, the spec as it was when the run started, the run's number and a credential
delegated for this job (a writer on the target table only).

One spec never runs twice at once: the run holds the spec's lock (`workers.sync.lock`)
from before it starts the job until it ends. A second delivery of the same job (a
worker died, or Redis redelivered it) waits for the lock and then finds its job
finished, or takes over a job whose worker died once the dead holder's lock expires.
Everything a run writes is atomic on the server (a full load swaps the table, a merge
is one transaction), so a run that dies part way leaves the table as it was, and the
re-run converges on the source.

Failures are reported to the job with their step (`lock`, `extract`, `plan`, `load`),
the table and the job, then raised: transient ones (Snowflake or the server
unreachable, timeouts) are retried by the runner's retry policy (`agentdata.retries`, the
same for Celery and the embedded runner) and the job shows `retrying` with the last
error; terminal ones (authentication, SQL, missing object, unmapped type, an
incompatible schema change) fail the job at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

# The connector takes seconds to import: pay it when the worker (or the embedded
# runner's warm-up) loads this module, not in the first run.
import snowflake.connector  # noqa: F401

from agentdata.errors import (
    AgentdataError,
    Cancelled,
    Conflict,
    InternalError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from agentdata.retries import sync_policy
from agentdata.schema_evolution import INCOMPATIBLE_REASON
from agentdata.settings import Settings
from agentdata.syncs import SyncSpec
from agentdata.tasks import TaskContext
from workers.client import ServerClient
from workers.progress import PeriodicReporter
from workers.sync.load import LoadCounter, StepFailed, load, reshaper
from workers.sync.lock import SyncLock, owner_job, sync_lock
from workers.sync.plan import Plan, TargetTable, committed_max, inspect_target, plan_run

log = logging.getLogger("agentdata.worker.sync")

T = TypeVar("T")
FINISHED = ("succeeded", "failed", "cancelled")
#: How sync runs are retried (Celery's autoretry, and the embedded runner's).
retry_policy = sync_policy


def sync_task(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run one sync job (the plain function behind the Celery task and the runner)."""
    settings = ctx.settings if ctx.settings is not None else Settings()
    with ServerClient(ctx.endpoints, params["token"]) as client:
        return SyncRun(client, ctx, settings, params).run()


def schedule_task(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Beat's tick: ask the server to start the scheduled syncs that are due."""
    if ctx.service_token is None:
        raise Unauthenticated("no service token for scheduled syncs")
    with ServerClient(ctx.endpoints, ctx.service_token()) as client:
        started = client.request("POST", "/api/v1/syncs/due")
    return {"started": started.get("started", []) if isinstance(started, dict) else []}


def _step(step: str, call: Callable[[], T]) -> T:
    """Run `call`, attaching `step` to a project error it raises."""
    try:
        return call()
    except StepFailed:
        raise
    except AgentdataError as e:
        raise StepFailed(step, e) from None


class _Skip(Exception):
    """Nothing to do: the job ended before this delivery ran."""


class _CancelledEarly(Exception):
    """The job was cancelled while this delivery waited for its turn."""


class SyncRun:
    """One delivery of one sync job."""

    def __init__(
        self, client: ServerClient, ctx: TaskContext, settings: Settings, params: dict[str, Any]
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.settings = settings
        self.job_id: str = params["job_id"]
        self.spec = SyncSpec.model_validate(params["spec"])
        #: What the source declares (constraints, comments), read at the start of a run.
        self.declared: Any = None
        self.run_number = int(params.get("run") or 1)
        self.force_full = bool(params.get("full"))
        self.counter = LoadCounter()
        #: The source's row count for the load under way (progress percent), if known.
        self.expected_rows: int | None = None
        self.extracted = [0, 0]  # rows, bytes
        #: NULL-cursor rows counted at the source (null_cursor skip/error).
        self.null_cursor_rows: int | None = None
        self.phase = "lock"
        self.cancelled = threading.Event()
        self.lock: SyncLock | None = None
        self.started = time.monotonic()
        #: Seconds to the job's start (checks, lock), in the source query, to the plan.
        self.timings: dict[str, float] = {}

    # -- the run ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            lock = self._acquire()
        except _Skip as s:
            return self._skipped(str(s))
        except _CancelledEarly:
            return self._cancelled()
        except StepFailed as f:
            return self._failed(f)
        try:
            try:
                self._check_turn()
            except _Skip as s:
                return self._skipped(str(s))
            except _CancelledEarly:
                return self._cancelled()
            except StepFailed as f:
                return self._failed(f)
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> dict[str, Any]:
        try:
            job = self.client.job_event(self.job_id, "start", task_id=self.ctx.task_id)
        except (Conflict, NotFound, Unauthenticated) as e:
            return self._skipped(e.message)
        except AgentdataError as e:
            return self._failed(StepFailed("start", e))
        if job.get("cancel_requested"):
            return self._cancelled()
        self.timings["start"] = time.monotonic() - self.started
        log.info(
            "sync %s: job %s attempt %d (run %d) started",
            self.spec.name,
            self.job_id,
            self.ctx.attempt,
            self.run_number,
        )
        reporter = _Reporter(self, self.ctx.progress_every_s)
        reporter.start()
        try:
            result = self._sync()
        except StepFailed as f:
            reporter.stop()
            if self.cancelled.is_set():
                return self._cancelled()
            return self._failed(f)
        except Exception as e:  # a bug, not a user error: still tell the job why
            reporter.stop()
            log.exception("sync %s: job %s crashed", self.spec.name, self.job_id)
            return self._failed(StepFailed(self.phase, InternalError(f"{type(e).__name__}: {e}")))
        reporter.stop()
        try:
            self.client.job_event(
                self.job_id,
                "succeeded",
                rows=self.counter.rows,
                bytes=self.counter.bytes,
                percent=100.0,
                result=result,
            )
        except (Conflict, NotFound, Unauthenticated) as e:
            # Cancelled at the last moment: the data is in (it was committed) but the job
            # says cancelled; the next run converges anyway.
            log.info("sync %s: job %s result not recorded: %s", self.spec.name, self.job_id, e)
        log.info(
            "sync %s: job %s done: %d rows loaded into %s in %.1fs",
            self.spec.name,
            self.job_id,
            self.counter.rows,
            self.spec.target,
            time.monotonic() - self.started,
        )
        return {"job_id": self.job_id, "state": "succeeded", **result}

    def _sync(self) -> dict[str, Any]:
        from workers.sync.credentials import SnowflakeSettings
        from workers.sync.extract import SnowflakeExtractor, TerminalSourceError, resolve_overrides
        from workers.sync.types import map_columns

        spec = self.spec
        self.phase = "extract"
        try:
            snowflake = SnowflakeSettings()
        except AgentdataError as e:
            raise StepFailed("extract", e) from None
        except Exception as e:  # a malformed variable: pydantic names it, never its value
            raise StepFailed("extract", TerminalSourceError(f"Snowflake settings: {e}")) from None
        with SnowflakeExtractor(snowflake, max_batch_rows=self.settings.sync_batch_rows) as ex:
            opened = None
            if spec.mode == "full" or (self.force_full and spec.null_cursor != "skip"):
                # A full read needs nothing from the plan: run the source query while the
                # table is inspected, and take the columns from the query itself.
                opened, target = self._extract_while(
                    ex, lambda: inspect_target(self.client, spec.target)
                )
                source = opened.targets
            else:
                columns = _step("extract", lambda: ex.describe_source(spec.source))
                source = _step(
                    "extract",
                    lambda: map_columns(
                        columns, resolve_overrides(spec.column_types, columns, source=spec.source)
                    ),
                )
                self.phase = "plan"
                target = _step("plan", lambda: inspect_target(self.client, spec.target))
            try:
                # What Snowflake declares (primary key, NOT NULL) becomes table constraints.
                declared = _step("extract", lambda: ex.constraints(spec.source))
                self.declared = declared
                self.phase = "plan"
                plan = _step(
                    "plan",
                    lambda: self._plan(
                        source, target, force_full=self.force_full, declared=declared
                    ),
                )
                self.null_cursor_rows = self._count_null_cursors(ex, plan)
            except BaseException:
                if opened is not None:
                    opened.close()
                raise
            self.timings["plan"] = time.monotonic() - self.started - self.timings["start"]
            try:
                put, snapshot = self._load(ex, plan, opened)
            except StepFailed as f:
                if not (
                    spec.on_incompatible == "resync"
                    and plan.put_mode != "replace"
                    and _incompatible_schema(f.error)
                ):
                    raise
                # The server refused a change the planner let through: the planner and
                # the server judge by one rule (agentdata.schema_evolution), so the
                # table changed between the plan and the load.
                plan = _step(
                    "plan",
                    lambda: self._plan(source, target, force_full=True, declared=declared),
                )
                plan = _with_reason(plan, f.error.message)
                self.counter = LoadCounter()
                put, snapshot = self._load(ex, plan)
            deleted_missing = 0
            if plan.reconcile:
                deleted_missing = self._reconcile(ex, plan, snapshot)
        changes = plan.changes if plan.put_mode == "replace" else put.get("schema_changes") or {}
        result: dict[str, Any] = {
            "sync": spec.name,
            "target": spec.target,
            "run": self.run_number,
            "attempt": self.ctx.attempt,
            "runner": self.ctx.runner,
            "plan": plan.describe(),
            "rows_extracted": self.extracted[0],
            "bytes_extracted": self.extracted[1],
            "rows_loaded": self.counter.rows,
            "bytes_loaded": self.counter.bytes,
            "rows": put.get("rows", self.counter.rows),
            "created": put.get("created", False),
            "replaced_rows": put.get("deleted", 0) if plan.put_mode == "upsert" else 0,
            "deleted_rows": deleted_missing,
            # One row per key: source rows that repeated a key and were folded away.
            "duplicates_folded": put.get("duplicates_folded", 0),
            "constraints": put.get("constraints"),
            "schema_changes": {k: list(v) for k, v in changes.items()},
            "snapshot": snapshot,
            "seconds": round(time.monotonic() - self.started, 3),
            "timings_s": {
                **{k: round(v, 3) for k, v in self.timings.items()},
                **self.counter.timings(),
            },
        }
        notes: list[str] = []
        nc = plan.null_cursor
        if nc is not None:
            rows = (
                self.counter.null_cursor_rows
                if nc.policy == "include"
                else (self.null_cursor_rows or 0)
            )
            result["null_cursor"] = {"column": nc.column, "policy": nc.policy, "rows": rows}
            if nc.policy == "skip" and rows:
                notes.append(
                    f"{rows} source row(s) whose cursor {nc.column} is NULL were left out "
                    "(null_cursor: skip)"
                )
        if result["duplicates_folded"]:
            notes.append(
                f"{result['duplicates_folded']} source row(s) repeated a key of an earlier or "
                "later row and were folded into it (the one with the greatest cursor, or the "
                "last read, was kept)"
            )
        missing = result["schema_changes"].get("missing") or []
        if missing:
            result["dropped_columns"] = missing
            notes.append(
                f"the source no longer has column(s) {', '.join(missing)}: kept in "
                f"{spec.target}, NULL in the rows this run loaded"
            )
        if notes:
            result["notes"] = notes
        return result

    def _count_null_cursors(self, ex: Any, plan: Plan) -> int | None:
        """Rows whose cursor is NULL, for `skip` (reported) and `error` (fails the run
        before anything is loaded); `include` counts them as they stream (None here)."""
        nc = plan.null_cursor
        if nc is None or nc.policy == "include":
            return None
        if not nc.nullable:
            return 0
        self.phase = "extract"
        count = int(_step("extract", lambda: ex.count_nulls(self.spec.source, nc.column)))
        if nc.policy == "error" and count:
            spec = self.spec
            default = " (the default without a primary key)" if spec.null_cursor is None else ""
            raise StepFailed(
                "plan",
                InvalidArgument(
                    f"{count} row(s) of {spec.source} have a NULL cursor {nc.column}, which an "
                    f"incremental sync would never load; null_cursor is 'error'{default}: set "
                    "null_cursor: skip to leave them out (counted each run), or give a "
                    "primary_key and null_cursor: include to re-read them every run",
                    detail={"reason": "null_cursor", "column": nc.column, "rows": count},
                ),
            )
        return count

    def _plan(
        self, source: list[Any], target: TargetTable, *, force_full: bool, declared: Any = None
    ) -> Plan:
        from workers.sync.extract import TerminalSourceError, resolve_column

        spec = self.spec
        watermark = None
        if spec.mode == "incremental" and target.exists and not force_full:
            try:
                cursor = resolve_column(
                    spec.cursor or "", [t.source for t in source], source=spec.source
                )
            except TerminalSourceError:
                cursor = None  # plan_run names the problem
            column = target.column(cursor) if cursor else None
            if column is not None:
                watermark = committed_max(self.client, target, column)
        return plan_run(
            spec,
            source,
            target,
            run=self.run_number,
            watermark=watermark,
            force_full=force_full,
            declared=declared,
        )

    def _extract_while(
        self, ex: Any, inspect: Callable[[], TargetTable]
    ) -> tuple[Any, TargetTable]:
        """Start the full source query in a thread while `inspect` runs here."""
        box: dict[str, Any] = {}

        def extract() -> None:
            began = time.monotonic()
            try:
                box["extraction"] = ex.extract(
                    self.spec.source, column_types=self.spec.column_types, progress=self._extract
                )
            except BaseException as e:  # handed to the caller below
                box["error"] = e
            self.timings["query"] = time.monotonic() - began

        thread = threading.Thread(target=extract, name=f"sync-{self.job_id[:8]}-query")
        thread.start()
        try:
            target = _step("plan", inspect)
        except BaseException:
            thread.join()
            if "extraction" in box:
                box["extraction"].close()
            raise
        thread.join()
        error = box.get("error")
        if error is not None:
            if isinstance(error, AgentdataError):
                raise StepFailed("extract", error) from None
            raise error
        return box["extraction"], target

    def _load(self, ex: Any, plan: Plan, opened: Any = None) -> tuple[dict[str, Any], str | None]:
        self.phase = "extract"
        began = time.monotonic()
        extraction = opened or _step(
            "extract",
            lambda: ex.extract(
                self.spec.source,
                since=plan.since,
                not_null=plan.skip_nulls_of,
                column_types=self.spec.column_types,
                progress=self._extract,
            ),
        )
        if opened is None:
            self.timings["query"] = time.monotonic() - began
        with extraction:
            transform = reshaper(
                extraction.schema,
                casts=plan.casts,
                layout=plan.layout,
                keep=plan.keep,
                after=(plan.after.column, plan.after.value) if plan.after is not None else None,
            )
            snapshot = extraction.query_id
            self.expected_rows = extraction.estimated_rows
            self.phase = "load"
            put = load(
                self.client,
                with_descriptions(plan.command(self.spec.target, snapshot), self.declared),
                iter(extraction),
                extraction.schema,
                transform=transform,
                counter=self.counter,
                should_stop=self._should_stop,
                max_rows_per_s=self.settings.sync_max_rows_per_s,
                count_nulls=(
                    plan.null_cursor.column
                    if plan.null_cursor is not None and plan.null_cursor.policy == "include"
                    else None
                ),
            )
        return put, snapshot

    def _reconcile(self, ex: Any, plan: Plan, snapshot: str | None) -> int:
        self.phase = "extract"
        keys = _step("extract", lambda: ex.extract_keys(self.spec.source, list(plan.key)))
        with keys:
            self.phase = "load"
            command: dict[str, Any] = {
                "table": self.spec.target,
                "mode": "reconcile",
                "key": list(plan.key),
                "on_duplicate_key": plan.on_duplicate_key,
            }
            if snapshot:
                command["snapshot"] = snapshot
            put = load(self.client, command, iter(keys), keys.schema, should_stop=self._should_stop)
        return int(put.get("deleted", 0))

    def _extract(self, rows: int, nbytes: int) -> None:
        self.extracted[0], self.extracted[1] = rows, nbytes

    def _should_stop(self) -> AgentdataError | None:
        if self.cancelled.is_set():
            return Cancelled("the job was cancelled")
        if self.lock is not None and self.lock.lost.is_set():
            return Unavailable(f"lost the lock of sync {self.spec.name!r}; not committing")
        return None

    # -- before the start ------------------------------------------------------------
    def _job(self) -> dict[str, Any]:
        try:
            job: dict[str, Any] = self.client.request("GET", f"/api/v1/jobs/{self.job_id}")
        except (NotFound, Unauthenticated) as e:
            # Deleted, or its credential ended with it (finished): nothing to run.
            raise _Skip(e.message) from None
        except AgentdataError as e:
            raise StepFailed("lock", e) from None
        return job

    def _check_job(self) -> None:
        job = self._job()
        if job["state"] in FINISHED:
            raise _Skip(f"job already {job['state']}")
        if job.get("cancel_requested"):
            raise _CancelledEarly()

    def _check_turn(self) -> None:
        """With the lock held: is this delivery the one to run?

        Redis may deliver a task twice (a worker died, or a run outlasted the broker's
        visibility timeout). A delivery whose job is `retrying` with this attempt already
        made is stale: the next attempt is scheduled, and this one stands aside. A job
        still `running` whose lock we could take lost its worker: this delivery takes over.
        """
        job = self._job()
        if job["state"] in FINISHED:
            raise _Skip(f"job already {job['state']}")
        if job.get("cancel_requested"):
            raise _CancelledEarly()
        if job["state"] == "retrying" and self.ctx.attempt <= int(job["attempts"]):
            raise _Skip(
                f"attempt {self.ctx.attempt} was made already; "
                f"attempt {int(job['attempts']) + 1} is scheduled"
            )

    def _acquire(self) -> SyncLock:
        """Take the spec's lock, waiting while another delivery of this job (or a dead
        one) holds it; a different live run of the spec fails this one after a while."""
        owner = f"{self.job_id}:{uuid.uuid4().hex[:12]}"
        lock = sync_lock(self.settings, self.spec.name, owner)
        ttl = self.settings.sync_lock_ttl_s
        give_up = time.monotonic() + 2 * ttl + 5
        poll = min(1.0, max(0.1, ttl / 4))
        while True:
            if _step("lock", lock.try_acquire):
                self.lock = lock
                return lock
            holder = owner_job(_step("lock", lock.holder))
            self._check_job()
            if holder not in (None, self.job_id) and time.monotonic() > give_up:
                raise StepFailed(
                    "lock", Conflict(f"sync {self.spec.name!r} is already running: job {holder}")
                )
            time.sleep(poll)

    # -- endings -----------------------------------------------------------------------
    def _skipped(self, reason: str) -> dict[str, Any]:
        log.info("sync %s: job %s not run: %s", self.spec.name, self.job_id, reason)
        return {"job_id": self.job_id, "state": "skipped", "reason": reason}

    def _cancelled(self) -> dict[str, Any]:
        try:
            self.client.job_event(
                self.job_id, "cancelled", rows=self.counter.rows, bytes=self.counter.bytes
            )
        except AgentdataError as e:
            log.info("sync %s: cancel not recorded: %s", self.spec.name, e.message)
        log.info("sync %s: job %s cancelled; nothing was written", self.spec.name, self.job_id)
        return {"job_id": self.job_id, "state": "cancelled"}

    def _failed(self, failure: StepFailed) -> dict[str, Any]:
        """Report the failure (retrying or failed) and raise it for the runner."""
        error = failure.error
        policy = retry_policy(self.settings)
        retry = policy.will_retry(error, self.ctx.attempt)
        message = (
            f"{failure.step} failed for {self.spec.target} (sync {self.spec.name}, "
            f"job {self.job_id}, attempt {self.ctx.attempt}"
            f"{f' of {policy.max_retries + 1}' if policy.retryable(error) else ''}): "
            f"{error.message}"
        )
        if retry:
            message += "; retrying"
        log.warning("sync %s: %s", self.spec.name, message)
        try:
            self.client.job_event(
                self.job_id,
                "retrying" if retry else "failed",
                rows=self.counter.rows,
                bytes=self.counter.bytes,
                error={"step": failure.step, "code": error.code, "message": message[:10_000]},
            )
        except AgentdataError as e:
            log.warning("sync %s: could not record the failure: %s", self.spec.name, e.message)
        raise error


def with_descriptions(command: dict[str, Any], declared: Any) -> dict[str, Any]:
    """The DoPut command, carrying the source's table and column comments (the server
    keeps them as descriptions where none is set: agentdata.descriptions.fill)."""
    comment = getattr(declared, "comment", None)
    columns = dict(getattr(declared, "column_comments", ()) or ())
    if not comment and not columns:
        return command
    return {**command, "descriptions": {"table": comment, "columns": columns}}


def _incompatible_schema(error: AgentdataError) -> bool:
    """Whether the server refused the load for an incompatible column change (by the
    error's code and detail, which cross Flight intact; never by its text)."""
    return isinstance(error, InvalidArgument) and error.detail.get("reason") == INCOMPATIBLE_REASON


def _with_reason(plan: Plan, reason: str) -> Plan:
    from dataclasses import replace

    return replace(plan, resync_reason=reason)


class _Reporter(PeriodicReporter):
    """Reports progress every `every_s` seconds from a thread of its own; a report that
    finds the job cancelled (or ended elsewhere) stops the run before it commits."""

    def __init__(self, run: SyncRun, every_s: float) -> None:
        super().__init__(run.client, every_s, name=f"sync-{run.job_id[:8]}-progress")
        self.run = run

    def report(self) -> None:
        run = self.run
        rows, total = run.counter.rows, run.expected_rows
        # Below 100 until the load has committed (the job's end says 100).
        percent = min(99.0, 100.0 * rows / total) if total else None
        try:
            job = self._client.job_event(
                run.job_id, "progress", rows=rows, bytes=run.counter.bytes, percent=percent
            )
        except (Conflict, Unauthenticated, NotFound):
            run.cancelled.set()
            return
        except AgentdataError as err:
            log.warning("sync job %s: progress report failed: %s", run.job_id, err.message)
            return
        if job.get("cancel_requested"):
            run.cancelled.set()
