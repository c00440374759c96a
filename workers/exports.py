"""The export task: a query result from the server, as a file, back to the server.

    start ─▶ query (Flight DoGet) ─▶ write (batch by batch) ─▶ upload (REST) ─▶ succeeded
                  │ every `progress_every_s`: a progress event; its answer says
                  │ whether the job was cancelled, and if so the Flight stream is
                  └ cancelled, the partial file removed and the job marked cancelled

The task holds only what `POST /api/v1/exports` gave it: the SQL, the format, and a
credential delegated from the caller (same role, allow-list, max_rows and timeout,
valid only while the job runs). The server checks the SQL again when the task runs
it, exactly as for any Flight query. The result is never materialised: one batch is
in memory at a time, the file grows on local disk (in a private temp dir, removed
whatever happens) and is streamed to the server.

A failure is reported with the step it happened in (`query`, `write`, `upload`,
`report`), the error's stable code and its message, then raised, so Celery (or the
in-process runner) records the task as failed too. A transient one (the server
unreachable or restarting, the connection lost: `agentdata.retries.export_policy`) is
reported as `retrying` while retries remain, and the task is retried after a backoff
(Celery's autoretry, or the runner's). Retrying is idempotent: an attempt starts by
removing what an earlier one left in the work dir, and the server keeps one artefact
per export job and name (a retry's upload replaces an earlier attempt's).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.flight as fl

from agentdata.errors import (
    AgentdataError,
    Conflict,
    InternalError,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from agentdata.exports import ExportSpec
from agentdata.retries import export_policy
from agentdata.settings import Settings
from agentdata.tasks import TaskContext
from workers.client import QueryStream, ServerClient, read_batches
from workers.formats import ExportWriter, schema_document
from workers.progress import PeriodicReporter

log = logging.getLogger("agentdata.worker.export")


class _CancelRequested(Exception):
    """The job was cancelled while the export ran."""


class _StepFailed(Exception):
    def __init__(self, step: str, error: AgentdataError) -> None:
        super().__init__(f"{step}: {error.message}")
        self.step = step
        self.error = error


def export_task(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Run one export job (the plain function behind the Celery task and the runner)."""
    spec = ExportSpec.parse(params["format"], params.get("compression"))
    with ServerClient(ctx.endpoints, params["token"]) as client:
        return _Export(client, ctx, spec, params).run()


class _Export:
    def __init__(
        self, client: ServerClient, ctx: TaskContext, spec: ExportSpec, params: dict[str, Any]
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.spec = spec
        self.job_id: str = params["job_id"]
        self.sql: str = params["sql"]
        self.name: str = params.get("name") or f"export-{self.job_id}{spec.extension}"
        self.expires_in_s = params.get("expires_in_s")
        self.truncate = bool(params.get("truncate"))
        #: The server's truncation note, when a truncating export stopped at max_rows.
        self.truncated: dict[str, Any] | None = None
        self.rows = 0
        self.bytes = 0
        self.total = -1
        self.stream: QueryStream | None = None

    def run(self) -> dict[str, Any]:
        try:
            job = self.client.job_event(self.job_id, "start", task_id=self.ctx.task_id)
        except (Conflict, NotFound, Unauthenticated) as e:
            # Cancelled (or failed, or deleted) while queued: its credential ended with it.
            log.info("export job %s not started: %s", self.job_id, e.message)
            return {"job_id": self.job_id, "state": "skipped", "reason": e.message}
        if job.get("cancel_requested"):
            return self._cancelled()
        prefix = f"agentdata-export-{self.job_id}-"
        # An earlier attempt's partial file, if its process died before cleaning up.
        for stale in Path(self.ctx.work_dir).glob(f"{prefix}*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=self.ctx.work_dir))
        reporter = _Reporter(self, self.ctx.progress_every_s)
        reporter.start()
        try:
            result = self._export(work / f"export{self.spec.extension}", reporter)
        except _CancelRequested:
            return self._cancelled()
        except _StepFailed as f:
            if reporter.cancelled.is_set():  # the failure is the cancelled stream
                return self._cancelled()
            self._report_failure(f.step, f.error)
            raise f.error from None
        except Exception as e:  # a bug, not a user error: still tell the job why
            err = InternalError(f"{type(e).__name__}: {e}")
            self._report_failure("export", err)
            raise err from e
        finally:
            reporter.stop()
            shutil.rmtree(work, ignore_errors=True)
        return result

    # -- the steps ---------------------------------------------------------------------
    def _export(self, path: Path, reporter: _Reporter) -> dict[str, Any]:
        try:
            stream = self.client.open_query(self.sql, truncate=self.truncate)
        except AgentdataError as e:
            raise _StepFailed("query", e) from None
        self.stream, self.total = stream, stream.total_records
        counter = _Count(self)
        if self.total < 0:
            counter.start()
        reader, schema = stream.reader, stream.schema
        try:
            writer = self._open_writer(path, schema)
            try:
                self._copy(reader, writer, reporter)
            except BaseException:
                writer.abort()
                raise
        finally:
            counter.stop()
            self.stream = None
            _quietly_cancel(reader)
        artefact = self._upload(path)
        result: dict[str, Any] = {
            "artefact_id": artefact["id"],
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": artefact.get("sha256"),
            "format": self.spec.format,
            "compression": self.spec.compression,
            "name": artefact.get("name", self.name),
            "content_type": self.spec.content_type,
            "truncated": self.truncated is not None,
        }
        if self.truncated is not None:
            result["max_rows"] = self.truncated.get("max_rows")
        doc = schema_document(schema, self.spec)
        if self.spec.format == "json":
            result["schema_artefact_id"] = self._upload_schema(path.parent, doc)["id"]
        result["schema"] = doc
        # From here on only this thread talks to the job: the last word is the result.
        reporter.stop()
        try:
            if reporter.cancelled.is_set():
                raise Conflict("cancelled during the upload")
            self.client.job_event(
                self.job_id,
                "succeeded",
                rows=self.rows,
                bytes=self.bytes,
                percent=100.0,
                result=result,
            )
        except AgentdataError as e:
            # The job did not take the result (cancelled at the last moment, or gone):
            # the files must not outlive it.
            self._discard(result)
            if isinstance(e, Conflict | Unauthenticated | NotFound):
                raise _CancelRequested() from None
            raise _StepFailed("report", e) from None
        log.info(
            "export job %s: %d rows, %d bytes, artefact %s",
            self.job_id,
            self.rows,
            self.bytes,
            artefact["id"],
        )
        return {"job_id": self.job_id, "state": "succeeded", **result}

    def _open_writer(self, path: Path, schema: Any) -> ExportWriter:
        try:
            self.spec.check_schema(schema)
            return ExportWriter(self.spec, path, schema)
        except AgentdataError as e:
            raise _StepFailed("write", e) from None
        except Exception as e:
            raise _StepFailed("write", _write_error(e, "cannot open the file")) from None

    def _copy(
        self, reader: fl.FlightStreamReader, writer: ExportWriter, reporter: _Reporter
    ) -> None:
        batches = read_batches(reader, on_metadata=self._note)
        while True:
            try:
                batch = next(batches, None)
            except AgentdataError as e:
                if reporter.cancelled.is_set():
                    raise _CancelRequested() from None
                raise _StepFailed("query", e) from None
            if reporter.cancelled.is_set():
                raise _CancelRequested()
            if batch is None:
                break
            try:
                writer.write(batch)
            except Exception as e:
                raise _StepFailed(
                    "write", _write_error(e, f"cannot write {self.spec.format}")
                ) from None
            self.rows += batch.num_rows
            self.bytes = writer.bytes_written
        try:
            self.bytes = writer.close()
        except Exception as e:
            raise _StepFailed("write", _write_error(e, "cannot finish the file")) from None

    def _note(self, note: dict[str, Any]) -> None:
        if note.get("truncated"):
            self.truncated = note

    def cancel_stream(self, client: ServerClient) -> None:
        """Called from the reporter thread: stop the query on the server at once (it may be
        busy before its next batch), and end the Flight call, so a blocked read returns."""
        stream = self.stream
        if stream is not None:
            client.cancel_query(stream.ticket)
            _quietly_cancel(stream.reader)

    def _upload(self, path: Path) -> dict[str, Any]:
        fields = {"source": "export", "job_id": self.job_id}
        if self.expires_in_s is not None:
            fields["expires_in_s"] = str(int(self.expires_in_s))
        try:
            return self.client.upload_artefact(
                path, name=self.name, content_type=self.spec.content_type, fields=fields
            )
        except AgentdataError as e:
            raise _StepFailed("upload", e) from None

    def _upload_schema(self, work: Path, doc: dict[str, Any]) -> dict[str, Any]:
        import json

        path = work / "schema.json"
        path.write_text(json.dumps(doc, indent=2))
        fields = {"source": "export", "job_id": self.job_id}
        if self.expires_in_s is not None:
            fields["expires_in_s"] = str(int(self.expires_in_s))
        name = self.name.split(".")[0] + ".schema.json"
        try:
            return self.client.upload_artefact(
                path, name=name, content_type="application/json", fields=fields
            )
        except AgentdataError as e:
            raise _StepFailed("upload", e) from None

    # -- endings -----------------------------------------------------------------------
    def _cancelled(self) -> dict[str, Any]:
        try:
            self.client.job_event(self.job_id, "cancelled", rows=self.rows, bytes=self.bytes)
        except AgentdataError as e:  # already final: nothing more to say
            log.info("export job %s: cancel not recorded: %s", self.job_id, e.message)
        log.info("export job %s cancelled after %d rows", self.job_id, self.rows)
        return {"job_id": self.job_id, "state": "cancelled", "rows": self.rows}

    def _report_failure(self, step: str, error: AgentdataError) -> None:
        settings = self.ctx.settings if self.ctx.settings is not None else Settings()
        retry = export_policy(settings).will_retry(error, self.ctx.attempt)
        message = error.message + (f" (attempt {self.ctx.attempt}; retrying)" if retry else "")
        log.warning("export job %s failed at %s: %s: %s", self.job_id, step, error.code, message)
        try:
            self.client.job_event(
                self.job_id,
                "retrying" if retry else "failed",
                rows=self.rows,
                bytes=self.bytes,
                error={"step": step, "code": error.code, "message": message[:10_000]},
            )
        except AgentdataError as e:
            log.warning("export job %s: could not record the failure: %s", self.job_id, e.message)

    def _discard(self, result: dict[str, Any]) -> None:
        for key in ("artefact_id", "schema_artefact_id"):
            if key in result:
                try:
                    self.client.delete_artefact(result[key])
                except AgentdataError as e:
                    log.warning("could not delete artefact %s: %s", result[key], e.message)


class _Count:
    """The result's row count, for a percentage, learned beside the export and never
    delaying it: a count of the same query, with the same credential, in a thread of
    its own. Until it answers (or if it fails) progress is rows and bytes only; when
    the export ends first, the count is cancelled on the server."""

    def __init__(self, export: _Export) -> None:
        self.export = export
        self._client = export.client.clone()
        self._ticket: fl.Ticket | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"export-{export.job_id[:8]}-count", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        body = self.export.sql.strip().rstrip(";")
        try:
            self._ticket = ticket = self._client.plan_query(
                f"SELECT count(*) AS n FROM (\n{body}\n) AS counted"
            )
            if self._stopped.is_set():
                return
            total = self._client.read_ticket(ticket).column(0)[0].as_py()
        except Exception as e:  # a percentage is a nicety: the export goes on
            if not self._stopped.is_set():
                log.info("export job %s: no row count for progress: %s", self.export.job_id, e)
            return
        if not self._stopped.is_set():
            self.export.total = int(total)

    def stop(self) -> None:
        """Stop counting (the export is over): the count is cancelled on the server, by
        its ticket, until the thread reading it has given up."""
        self._stopped.set()
        deadline = time.monotonic() + 30
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self._ticket is not None:
                self._client.cancel_query(self._ticket.ticket)
            self._thread.join(0.2)
        self._client.close()


class _Reporter(PeriodicReporter):
    """Reports the export's progress every `every_s` seconds from a thread of its own.

    Its own thread, so reports (heartbeats for the stale-job rule) and cancellation
    do not wait for the next batch: a query that is slow to produce rows is still
    cancelled promptly, by cancelling its Flight stream. A report that finds the job
    cancelled, or already ended elsewhere (the credential no longer works), stops the
    export; one that cannot reach the server is retried at the next tick.
    """

    def __init__(self, export: _Export, every_s: float) -> None:
        super().__init__(export.client, every_s, name=f"export-{export.job_id[:8]}-progress")
        self.export = export
        self.cancelled = threading.Event()

    def report(self) -> None:
        e = self.export
        percent = min(99.0, 100.0 * e.rows / e.total) if e.total > 0 else None
        try:
            job = self._client.job_event(
                e.job_id, "progress", rows=e.rows, bytes=e.bytes, percent=percent
            )
        except (Conflict, Unauthenticated, NotFound):
            self._cancel()
            return
        except AgentdataError as err:
            log.warning("export job %s: progress report failed: %s", e.job_id, err.message)
            return
        if job.get("cancel_requested"):
            self._cancel()

    def _cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            self.export.cancel_stream(self._client)


def _write_error(e: Exception, what: str) -> AgentdataError:
    """A failure writing the local file: an I/O error (disk full, a flaky volume) is
    transient, so the export's retry policy retries it; anything else is a bug."""
    if isinstance(e, OSError):
        return Unavailable(f"{what}: local I/O failed ({e.strerror or e})")
    return InternalError(f"{what}: {e}")


def _quietly_cancel(reader: fl.FlightStreamReader) -> None:
    """End the Flight call (the server stops the query if it is still running)."""
    try:
        reader.cancel()
    except Exception:
        pass
