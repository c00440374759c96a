"""/api/v1/artefacts: upload (streamed to disk), list, usage, metadata, content, delete.

A reader or writer sees only the artefacts it owns (others' ids answer 404); an
admin sees all. Quota: an upload that would take its owner past
`artefact_quota_bytes` answers 507 `quota_exceeded`; one larger than
`max_upload_bytes` answers 413 `payload_too_large`.
"""

from __future__ import annotations

import logging
import re
from email.utils import formatdate
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from agentdata.artefacts import Artefact, check_owner_filter, check_sha256
from agentdata.bounds import MAX_INT64
from agentdata.errors import InvalidArgument, NotFound
from control_api.deps import ArtefactsDep, JobsDep, PrincipalDep, SettingsDep
from control_api.errors import problem
from control_api.timestamps import Timestamp
from control_api.upload import UploadIdle, receive_upload

log = logging.getLogger("agentdata.http")

router = APIRouter(prefix="/api/v1/artefacts", tags=["artefacts"])

_CHUNK = 1024 * 1024


class ArtefactOut(BaseModel):
    id: str
    name: str = Field(description="Sanitised display name (never a path on the server).")
    content_type: str
    size: int
    sha256: str = Field(description="Hex SHA-256 of the content; also its ETag.")
    owner: str | None = Field(description="Token id of the owner.")
    created_at: Timestamp
    expires_at: Timestamp | None
    source: Literal["upload", "export"]
    job_id: str | None


class ArtefactPage(BaseModel):
    items: list[ArtefactOut]
    total: int
    limit: int
    offset: int


class OwnerUsage(BaseModel):
    owner: str | None
    count: int
    bytes: int = Field(description="Bytes of live (unexpired) artefacts: what the quota counts.")
    quota_bytes: int | None
    remaining_bytes: int | None


class TotalUsage(BaseModel):
    count: int
    bytes: int = Field(description="Every stored file, including expired ones awaiting cleanup.")
    expired_count: int
    expired_bytes: int


class Usage(BaseModel):
    owners: list[OwnerUsage]
    total: TotalUsage
    quota_bytes: int | None = Field(description="Per-owner quota; null = none.")
    max_upload_bytes: int


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "source": {"type": "string", "enum": ["upload", "export"]},
                        "job_id": {"type": "string"},
                        "expires_in_s": {"type": "integer", "minimum": 1},
                        "content_type": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _out(art: Artefact) -> ArtefactOut:
    return ArtefactOut(**art.to_dict())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtefactOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        400: {"description": "Malformed form, or `checksum_mismatch`."},
        408: {"description": "`request_timeout`: no upload data for upload_idle_timeout_s."},
        413: {"description": "`payload_too_large`: larger than max_upload_bytes."},
        507: {"description": "`quota_exceeded`: the owner's quota (or the disk) is full."},
    },
)
async def upload_artefact(
    request: Request,
    store: ArtefactsDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    x_checksum_sha256: Annotated[
        str | None,
        Header(description="Expected hex SHA-256 of the file; a mismatch stores nothing."),
    ] = None,
) -> Any:
    """Upload a file (multipart field `file`), streamed to disk and hashed on the way.

    Optional form fields: `source` (upload | export), `job_id` (the export job it
    belongs to; the artefact then belongs to the job's owner), `expires_in_s`,
    `content_type` (else the part's Content-Type).
    """
    expected = check_sha256(x_checksum_sha256)
    with store.open_temp() as tmp:
        try:
            form = await receive_upload(
                request,
                tmp,
                quota_left=store.remaining_quota(principal.token_id),
                idle_timeout_s=settings.upload_idle_timeout_s,
            )
        except ClientDisconnect:
            log.info("upload aborted: the client disconnected after %d bytes", tmp.size)
            return Response(status_code=499)
        except UploadIdle:
            return problem(
                408,
                "request_timeout",
                f"no upload data for {settings.upload_idle_timeout_s:g} s",
            )
        source = form.fields.get("source") or "upload"
        job_id = form.fields.get("job_id") or None
        owner = principal.token_id
        if job_id is not None:
            try:
                job = jobs.get_for(principal, job_id)
            except NotFound:
                raise InvalidArgument(f"no job with id {job_id[:64]!r}") from None
            owner = job.owner or principal.token_id
        expires_in_s = _int_field(form.fields.get("expires_in_s"), "expires_in_s")
        if expires_in_s is None and source == "export":
            expires_in_s = int(store.export_ttl_s)
        art = await anyio.to_thread.run_sync(
            lambda: tmp.commit(
                name=form.filename,
                owner=owner,
                content_type=form.fields.get("content_type") or form.part_content_type,
                source=source,
                job_id=job_id,
                expires_in_s=expires_in_s,
                expected_sha256=expected,
            )
        )
    return _out(art)


@router.get(
    "",
    response_model=ArtefactPage,
    responses={403: {"description": "`owner` names another token, and this one is no admin."}},
)
def list_artefacts(
    artefacts: ArtefactsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    source: Literal["upload", "export"] | None = None,
    owner: Annotated[str | None, Query(description="Owner token id (admins only).")] = None,
    name: Annotated[str | None, Query(description="Name prefix.", max_length=255)] = None,
    job_id: str | None = None,
) -> ArtefactPage:
    """Artefacts visible to this token, newest first (expired ones are hidden)."""
    items, total = artefacts.list(
        owner=check_owner_filter(principal, owner),
        source=source,
        name_prefix=name,
        job_id=job_id,
        limit=limit,
        offset=offset,
    )
    return ArtefactPage(items=[_out(a) for a in items], total=total, limit=limit, offset=offset)


@router.get("/usage", response_model=Usage)
def artefact_usage(artefacts: ArtefactsDep, principal: PrincipalDep) -> Usage:
    """Bytes and counts per owner and in total, with the quota (non-admins: their own)."""
    usage = artefacts.usage(None if principal.is_admin else principal.token_id)
    return Usage(**usage)


@router.get("/{artefact_id}", response_model=ArtefactOut)
def get_artefact(artefact_id: str, artefacts: ArtefactsDep, principal: PrincipalDep) -> ArtefactOut:
    """An artefact's metadata."""
    return _out(artefacts.get_for(principal, artefact_id))


@router.delete("/{artefact_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_artefact(artefact_id: str, artefacts: ArtefactsDep, principal: PrincipalDep) -> Response:
    """Delete the file and its record together."""
    artefacts.delete_for(principal, artefact_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{artefact_id}/content",
    response_class=Response,
    responses={
        200: {"description": "The bytes.", "content": {"application/octet-stream": {}}},
        206: {"description": "One byte range (`Range: bytes=a-b`)."},
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        416: {"description": "Range not satisfiable."},
    },
)
def artefact_content(
    artefact_id: str,
    artefacts: ArtefactsDep,
    principal: PrincipalDep,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """The artefact's bytes: ETag is the quoted SHA-256; single byte ranges are served."""
    art = artefacts.get_for(principal, artefact_id)
    etag = f'"{art.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Last-Modified": formatdate(art.created_at, usegmt=True),
        "Content-Disposition": content_disposition(art.name),
        # Never let a browser render user content on the API's origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    if if_none_match is not None and _etag_matches(if_none_match, art.sha256):
        return Response(status_code=304, headers=headers)
    start, length, status_code = 0, art.size, 200
    if range_ is not None and (if_range is None or if_range.strip() == etag):
        parsed = parse_range(range_, art.size)
        if parsed == "unsatisfiable":
            resp = problem(
                416, "range_not_satisfiable", f"the artefact has {art.size} bytes", size=art.size
            )
            resp.headers["Content-Range"] = f"bytes */{art.size}"
            return resp
        if parsed is not None:
            start, end = parsed
            length, status_code = end - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{art.size}"
    f = artefacts.open(art)
    headers["Content-Length"] = str(length)
    # Set verbatim: Starlette would append a charset to text/* types.
    headers["Content-Type"] = art.content_type
    return FileRangeResponse(f, start, length, status_code=status_code, headers=headers)


class FileRangeResponse(Response):
    """Streams `length` bytes of an already-open file from `start`; stops when the
    client goes away and always closes the file."""

    def __init__(
        self,
        f: BinaryIO,
        start: int,
        length: int,
        *,
        status_code: int,
        headers: dict[str, str],
    ) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self._file, self._start, self._length = f, start, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await self._send_body(send)
                tg.cancel_scope.cancel()
        finally:
            self._file.close()

    async def _send_body(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await anyio.to_thread.run_sync(self._file.seek, self._start)
        left = self._length
        while left > 0:
            data = await anyio.to_thread.run_sync(self._file.read, min(_CHUNK, left))
            if not data:  # truncated underneath us; Content-Length will not match
                break
            left -= len(data)
            await send({"type": "http.response.body", "body": data, "more_body": left > 0})
        if left > 0 or self._length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One byte range as (first, last) inclusive; None to ignore the header (malformed
    or several ranges: RFC 9110 lets a server answer those with the whole body)."""
    if "," in header:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


def _etag_matches(header: str, sha256: str) -> bool:
    """If-None-Match uses weak comparison: W/"x" matches "x"; * matches anything."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == sha256:
            return True
    return False


def content_disposition(name: str) -> str:
    """attachment with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _int_field(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer") from None
