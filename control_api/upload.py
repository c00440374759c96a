"""Streaming multipart upload: request body → python-multipart's push parser → temp file.

Starlette's `request.form()` would spool the whole file before the handler runs;
here the body is read chunk by chunk from `request.stream()`, fed to
`python_multipart.MultipartParser`, and the `file` part's bytes go straight into a
`PendingArtefact` (counted and hashed as they arrive). Memory per upload is one
batch (`_BATCH` bytes) plus uvicorn's 64 KiB read buffer, whatever the file size.

Form fields besides `file` are small text values (at most `_MAX_FIELD` bytes each);
they may come before or after the file, so they are only read once the body ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from agentdata.artefacts import PendingArtefact, safe_name
from agentdata.errors import InvalidArgument, PayloadTooLarge, QuotaExceeded

_BATCH = 256 * 1024  # bytes handed to the writer thread at a time
_MAX_FIELD = 4096
_MAX_FIELDS = 32
#: Room for part headers and the small form fields around the file.
FORM_OVERHEAD = 1024 * 1024


class UploadIdle(Exception):
    """The client sent nothing for longer than the idle timeout."""


@dataclass
class ParsedUpload:
    """What the multipart body held: the file's part headers and the other fields."""

    filename: str | None = None
    part_content_type: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False
    complete: bool = False


class _FormSink:
    """python-multipart callbacks, run in a worker thread (file writes and hashing)."""

    def __init__(self, tmp: PendingArtefact, quota_left: int | None) -> None:
        self.tmp = tmp
        self.quota_left = quota_left
        self.result = ParsedUpload()
        self._headers: dict[str, str] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self._target: str | None = None  # "file", a field name, or None (ignored)
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._hname.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._hvalue.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._target = None
        self._value = bytearray()

    def _header_end(self) -> None:
        name = bytes(self._hname).decode("latin-1").strip().lower()
        # latin-1 keeps the raw bytes; parse_options_header hands them back as bytes.
        self._headers[name] = bytes(self._hvalue).decode("latin-1")
        self._hname.clear()
        self._hvalue.clear()

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data":
            raise InvalidArgument("every multipart part needs Content-Disposition: form-data")
        name = params.get(b"name", b"").decode("latin-1")
        if name == "file":
            if self.result.has_file:
                raise InvalidArgument("more than one `file` part")
            self.result.has_file = True
            raw_filename = params.get(b"filename")
            # Browsers and httpx send file names as raw UTF-8 bytes.
            self.result.filename = (
                raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
            )
            # A refused name is refused now, before any of the part's bytes are stored.
            safe_name(self.result.filename)
            self.result.part_content_type = self._headers.get("content-type")
            self._target = "file"
        elif name:
            if len(self.result.fields) >= _MAX_FIELDS:
                raise InvalidArgument(f"more than {_MAX_FIELDS} form fields")
            self._target = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == "file":
            chunk = memoryview(data)[start:end]
            if self.quota_left is not None and self.tmp.size + len(chunk) > self.quota_left:
                raise QuotaExceeded(
                    f"this upload would exceed the owner's quota ({self.quota_left} bytes left)"
                )
            self.tmp.write(chunk)
        elif self._target is not None:
            if len(self._value) + (end - start) > _MAX_FIELD:
                raise InvalidArgument(f"form field {self._target!r} is longer than {_MAX_FIELD}")
            self._value.extend(data[start:end])

    def _part_end(self) -> None:
        if self._target not in (None, "file"):
            assert self._target is not None
            self.result.fields[self._target] = self._value.decode("utf-8", errors="replace")
        self._target = None

    def _end(self) -> None:
        self.result.complete = True


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data request, or InvalidArgument."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidArgument(
            "send the file as multipart/form-data with the file in the field `file`"
        )
    return boundary


async def _chunks(request: Request, idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; UploadIdle if the client goes quiet for too long."""
    stream = request.stream()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), idle_timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UploadIdle() from None
            yield chunk
    finally:
        await stream.aclose()


async def receive_upload(
    request: Request,
    tmp: PendingArtefact,
    *,
    quota_left: int | None,
    idle_timeout_s: float,
) -> ParsedUpload:
    """Stream the request's multipart body into `tmp`; returns the parsed form.

    Raises PayloadTooLarge past the size limit (counted on the bytes actually
    received, whatever Content-Length said), QuotaExceeded past the owner's quota,
    InvalidArgument on a malformed body, UploadIdle, or ClientDisconnect.
    """
    boundary = multipart_boundary(request.headers.get("content-type"))
    limit = tmp.max_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Refused before reading: with `Expect: 100-continue` the body is never sent.
        raise PayloadTooLarge(
            f"artefact larger than the limit of {tmp.max_bytes} bytes",
            detail={"limit_bytes": tmp.max_bytes},
        )
    sink = _FormSink(tmp, quota_left)
    try:
        parser = MultipartParser(boundary, sink.callbacks())  # type: ignore[arg-type]
    except Exception as e:
        raise InvalidArgument(f"bad multipart boundary: {e}") from None

    def feed(data: bytes) -> None:
        try:
            parser.write(data)
        except MultipartParseError as e:
            raise InvalidArgument(f"malformed multipart body: {e}") from None

    received = 0
    batch = bytearray()
    async for chunk in _chunks(request, idle_timeout_s):
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(
                f"artefact larger than the limit of {tmp.max_bytes} bytes",
                detail={"limit_bytes": tmp.max_bytes},
            )
        batch += chunk
        if len(batch) >= _BATCH:
            data, batch = bytes(batch), bytearray()
            await anyio.to_thread.run_sync(feed, data)
    if batch:
        await anyio.to_thread.run_sync(feed, bytes(batch))
    parser.finalize()
    if not sink.result.complete:
        raise InvalidArgument("incomplete multipart body (no closing boundary)")
    if not sink.result.has_file:
        raise InvalidArgument("no `file` part in the multipart body")
    return sink.result
