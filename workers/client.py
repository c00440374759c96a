"""The worker's view of the server: a small Flight + REST client, and a task's context.

A task never opens DuckDB or the meta store. It reaches the server the way any client
does: Flight to read query results (DoGet, batch by batch), REST to upload artefacts,
to report job events (`POST /api/v1/jobs/{id}/events`) and to ask for maintenance
runs. The same client serves Celery workers (URLs from settings) and the in-process
runner of `agentdata serve` (loopback URLs of the running server).

Errors cross here once: a problem+json response or a Flight status becomes the
matching `agentdata.errors` type (by its stable `code`), so task code branches on our
types only. Tokens are sent as headers and never logged or put into messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.flight as fl

from agentdata import errors as E
from agentdata.settings import Settings
from agentdata.tasks import Endpoints, TaskContext

log = logging.getLogger("agentdata.worker")

UPLOAD_CHUNK = 1024 * 1024


def worker_context(settings: Settings, task_id: str, attempt: int = 1) -> TaskContext:
    """The context of a task on a Celery worker, from the worker's settings."""
    return TaskContext(
        task_id=task_id,
        endpoints=Endpoints.from_settings(settings),
        work_dir=Path(tempfile.gettempdir()),
        service_token=lambda: worker_token(settings),
        progress_every_s=settings.export_progress_every_s,
        attempt=attempt,
        runner="celery",
        settings=settings,
    )


def worker_token(settings: Settings) -> str:
    """The token scheduled work uses: `worker_token`, else the admin token.

    The admin token file is only read, never created here: a worker on another
    machine has no business minting the server's bootstrap secret.
    """
    if settings.worker_token is not None:
        return settings.worker_token.get_secret_value()
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    if settings.admin_token_path.exists():
        return settings.admin_token_path.read_text().strip()
    raise E.Unauthenticated(
        "no token for scheduled work: set AGENTDATA_WORKER_TOKEN (or AGENTDATA_ADMIN_TOKEN)"
    )


# -- errors ------------------------------------------------------------------------------


_BY_STATUS = {
    400: E.InvalidArgument,
    401: E.Unauthenticated,
    403: E.PermissionDenied,
    404: E.NotFound,
    409: E.Conflict,
    413: E.PayloadTooLarge,
    422: E.InvalidArgument,
    429: E.ResourceExhausted,
    499: E.Cancelled,
    501: E.Unimplemented,
    503: E.Unavailable,
    504: E.DeadlineExceeded,
}


#: The members of an HTTP problem that are not the error's own detail (RFC 9457).
_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "code", "instance"})


def error_from_code(
    code: str | None,
    message: str,
    status: int | None = None,
    *,
    detail: dict[str, Any] | None = None,
) -> E.AgentdataError:
    """Our error type for a stable `code` (or, failing that, an HTTP status)."""
    return E.from_code(
        code, message, detail=detail, default=_BY_STATUS.get(status or 0, E.InternalError)
    )


def error_from_response(response: httpx.Response) -> E.AgentdataError:
    """A problem+json answer as our error: its code, message and detail (the problem's
    extension members, see `control_api.errors`)."""
    extra: dict[str, Any] = {}
    try:
        body = response.json()
        code, message = body.get("code"), str(body.get("detail") or response.reason_phrase)
        # The message starts with "[code] " (control_api.errors); the error type says it.
        message = message.removeprefix(f"[{code}] ")
        extra = {k: v for k, v in body.items() if k not in _PROBLEM_MEMBERS}
    except (ValueError, AttributeError):
        code, message = None, f"HTTP {response.status_code}: {response.text[:200]}"
    return error_from_code(code, message, response.status_code, detail=extra)


_FLIGHT_CLASSES: list[tuple[type[Exception], type[E.AgentdataError]]] = [
    (fl.FlightUnauthenticatedError, E.Unauthenticated),
    (fl.FlightUnauthorizedError, E.PermissionDenied),
    (fl.FlightTimedOutError, E.DeadlineExceeded),
    (fl.FlightCancelledError, E.Cancelled),
    (fl.FlightUnavailableError, E.Unavailable),
    (fl.FlightInternalError, E.InternalError),
    (pa.ArrowInvalid, E.InvalidArgument),
    (pa.ArrowKeyError, E.NotFound),
    (pa.ArrowNotImplementedError, E.Unimplemented),
]


#: What pyarrow puts between a message and a Python exception's description (there: the
#: wire tag, see `flight_server.errors`).
_PYTHON_DETAIL = ". Detail: Python exception: "
_DEBUG_CONTEXT = (". gRPC client debug context:", "\ngRPC client debug context")


def error_from_flight(exc: Exception) -> E.AgentdataError:
    """Translate a Flight client exception into our error, with the code and detail the
    server sent in its wire tag (`extra_info`, or the text pyarrow appends); the message
    is the server's "[code] message" without the bracket."""
    text = str(exc)
    for marker in _DEBUG_CONTEXT:
        text = text.split(marker, 1)[0]
    tagged = None
    extra = getattr(exc, "extra_info", None)
    if extra:
        tagged = E.parse_wire_tag(bytes(extra).decode("utf-8", "replace"))
    head, sep, described = text.rpartition(_PYTHON_DETAIL)
    if sep:
        tagged = tagged or E.parse_wire_tag(described)
        text = head
    # pyarrow appends the server-side detail of other statuses after ". Detail:".
    text = text.split(". Detail:", 1)[0]
    code, detail = tagged if tagged is not None else (None, {})
    start = text.find("[")
    if start != -1 and "]" in text[start:]:
        end = text.index("]", start)
        bracketed = text[start + 1 : end]
        if bracketed in E.BY_CODE:
            code = code or bracketed
            text = text[end + 1 :].strip()
    if code in E.BY_CODE:
        return E.from_code(code, text, detail=detail)
    for cls, ours in _FLIGHT_CLASSES:
        if isinstance(exc, cls):
            return ours(text)
    return E.InternalError(text)


# -- the client --------------------------------------------------------------------------


class ServerClient:
    """REST and Flight calls of one task, all made with one token."""

    def __init__(self, endpoints: Endpoints, token: str, *, timeout_s: float = 60.0) -> None:
        self.endpoints = endpoints
        self._token = token
        verify: Any = True
        if endpoints.tls_roots is not None:
            import ssl

            verify = ssl.create_default_context(cadata=endpoints.tls_roots.decode())
        self._http = httpx.Client(
            base_url=endpoints.http_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            verify=verify,
        )
        self._flight: fl.FlightClient | None = None

    def clone(self) -> ServerClient:
        """Another client with the same server and token (for a second thread)."""
        return ServerClient(self.endpoints, self._token)

    def close(self) -> None:
        self._http.close()
        if self._flight is not None:
            self._flight.close()
            self._flight = None

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- REST ------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; a problem response raises the matching agentdata error."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise E.DeadlineExceeded(f"{method} {path}: the server did not answer in time") from e
        except httpx.HTTPError as e:
            raise E.Unavailable(
                f"cannot reach the server at {self.endpoints.http_url}: {type(e).__name__}"
            ) from e
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        return response.json()

    def job_event(self, job_id: str, event: str, **fields: Any) -> dict[str, Any]:
        """Report a job event; the answer is the job, including `cancel_requested`."""
        body = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        return self.request("POST", f"/api/v1/jobs/{job_id}/events", json=body)  # type: ignore[no-any-return]

    def upload_artefact(
        self,
        path: Path,
        *,
        name: str,
        content_type: str,
        fields: dict[str, str],
        timeout_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Stream a file to `POST /api/v1/artefacts` (never read whole into memory).

        The SHA-256 is computed while sending and compared with the server's; on a
        mismatch the artefact is deleted again and the upload fails.
        """
        body = _MultipartFile(path, name=name, content_type=content_type, fields=fields)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
        artefact = self.request(
            "POST",
            "/api/v1/artefacts",
            content=body,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=30.0),
        )
        sha = body.sha256.hexdigest()
        if artefact.get("sha256") not in (None, sha):
            self.delete_artefact(artefact["id"])
            raise E.InternalError(
                f"upload corrupted: server stored sha256 {artefact['sha256']}, sent {sha}"
            )
        return artefact  # type: ignore[no-any-return]

    def delete_artefact(self, artefact_id: str) -> None:
        self.request("DELETE", f"/api/v1/artefacts/{artefact_id}")

    # -- Flight ----------------------------------------------------------------------
    def flight(self) -> fl.FlightClient:
        if self._flight is None:
            kwargs: dict[str, Any] = {}
            if self.endpoints.tls_roots is not None:
                kwargs["tls_root_certs"] = self.endpoints.tls_roots
            self._flight = fl.connect(self.endpoints.flight_url, **kwargs)
        return self._flight

    def _options(self, timeout: float | None = None) -> fl.FlightCallOptions:
        return fl.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {self._token}".encode())], timeout=timeout
        )

    def call_options(self, timeout: float | None = None) -> fl.FlightCallOptions:
        """Flight call options carrying this client's token (for calls made directly)."""
        return self._options(timeout)

    def open_put(
        self, command: dict[str, Any], schema: pa.Schema
    ) -> tuple[fl.FlightStreamWriter, fl.FlightMetadataReader]:
        """Start a DoPut with the server's JSON put command (table, mode, key, ...).

        Finish with `writer.done_writing()` then read the result from the reader; to
        abandon the upload without writing anything, `close()` this client instead.
        """
        try:
            descriptor = fl.FlightDescriptor.for_command(json.dumps(command).encode())
            return self.flight().do_put(descriptor, schema, self._options())  # type: ignore[no-any-return]
        except (fl.FlightError, pa.ArrowException) as e:
            raise error_from_flight(e) from None

    def open_query(self, sql: str, *, truncate: bool = False) -> QueryStream:
        """Start `sql` on the server; returns its stream (see `QueryStream`). With
        `truncate`, a result over the token's max_rows stops there quietly (the stream's
        last message says so) instead of failing."""
        command = json.dumps({"sql": sql, "truncate": True}).encode() if truncate else sql.encode()
        try:
            client = self.flight()
            info = client.get_flight_info(
                fl.FlightDescriptor.for_command(command), self._options(60)
            )
            ticket = info.endpoints[0].ticket
            reader = client.do_get(ticket, self._options())
            reader.schema  # noqa: B018 - fails here, not later, when the query cannot start
        except (fl.FlightError, pa.ArrowException) as e:
            raise error_from_flight(e) from None
        return QueryStream(reader, ticket.ticket, info.total_records)

    def plan_query(self, sql: str) -> fl.Ticket:
        """GetFlightInfo alone: the ticket that runs `sql` when redeemed (`read_ticket`),
        and that cancels it (`cancel_query`) from the moment it exists."""
        try:
            info = self.flight().get_flight_info(
                fl.FlightDescriptor.for_command(sql.encode()), self._options(60)
            )
        except (fl.FlightError, pa.ArrowException) as e:
            raise error_from_flight(e) from None
        return info.endpoints[0].ticket

    def read_ticket(self, ticket: fl.Ticket) -> pa.Table:
        """DoGet of a ticket, read to the end.

        Batch by batch, never `read_all()`: pyarrow wraps that in its signal handler,
        which answers a cancelled stream (FlightCancelledError) by simulating SIGINT in
        the main thread, and in `agentdata serve` (tasks run in-process) that main
        thread is the server's, which then shuts down."""
        try:
            reader = self.flight().do_get(ticket, self._options())
            schema = reader.schema
        except (fl.FlightError, pa.ArrowException) as e:
            raise error_from_flight(e) from None
        return pa.Table.from_batches(list(read_batches(reader)), schema)

    def cancel_query(self, ticket: bytes) -> bool:
        """Stop a running query on the server now (the `cancel` action), not at its next batch."""
        try:
            results = list(self.flight().do_action(fl.Action("cancel", ticket), self._options(10)))
            return bool(json.loads(results[0].body.to_pybytes()).get("cancelled"))
        except Exception:  # best effort: cancelling the stream stops it anyway
            return False


@dataclass
class QueryStream:
    """A query running on the server: its Flight stream, its ticket, its size if known."""

    reader: fl.FlightStreamReader
    ticket: bytes
    total_records: int  # -1 when unknown (always, for SQL)

    @property
    def schema(self) -> pa.Schema:
        return self.reader.schema


def read_batches(
    reader: fl.FlightStreamReader, on_metadata: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[pa.RecordBatch]:
    """The batches of a Flight stream, with Flight errors translated; `on_metadata` gets
    each message's JSON app metadata (the truncation note: {"truncated": true, ...})."""
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        except (fl.FlightError, pa.ArrowException) as e:
            raise error_from_flight(e) from None
        if on_metadata is not None and chunk.app_metadata is not None:
            try:
                note = json.loads(chunk.app_metadata.to_pybytes())
            except ValueError:
                note = None
            if isinstance(note, dict):
                on_metadata(note)
        if chunk.data is not None and chunk.data.num_rows:
            yield chunk.data


class _MultipartFile:
    """A multipart/form-data body (some text fields, then one file) streamed from disk."""

    def __init__(self, path: Path, *, name: str, content_type: str, fields: dict[str, str]) -> None:
        self.path = path
        self.boundary = "agentdata-" + secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.sha256 = hashlib.sha256()
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        quoted = json.dumps(name)[1:-1]  # escapes quotes and backslashes in the filename
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{quoted}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        self._head = head
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(head) + os.path.getsize(path) + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        with open(self.path, "rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                self.sha256.update(chunk)
                yield chunk
        yield self._tail
