"""/api/v1/audit: the audit log, one record per query on every channel (admins only).

    GET /api/v1/audit?token_id=...&since=2026-11-30T00:00:00Z&until=...&outcome=error
                     &table=demo.orders&limit=100&cursor=...
    -> {"items": [{"time", "token_id", "token_name", "channel", "sql", "sql_hash",
                   "tables_read", "tables_written", "rows", "bytes", "duration_s",
                   "outcome", "engine"}, ...], "next_cursor": "1234" | null}

Newest first. `outcome` is `ok`, `error` (anything but ok) or one error code
(`permission_denied`, `deadline_exceeded`, `cancelled`, ...). `since` / `until` take
RFC 3339 times or Unix seconds. Pass `next_cursor` back as `cursor` for the next page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from agentdata.audit import AuditFilter
from agentdata.errors import InvalidArgument
from agentdata.timestamps import seconds
from control_api.deps import AdminDep, EngineDep
from control_api.timestamps import Timestamp

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditRecord(BaseModel):
    id: int
    time: Timestamp
    token_id: str
    token_name: str
    channel: str
    sql: str
    sql_hash: str
    tables_read: list[str]
    tables_written: list[str]
    rows: int
    bytes: int
    duration_s: float
    outcome: str
    engine: str


class AuditPage(BaseModel):
    items: list[AuditRecord]
    next_cursor: str | None = None


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return seconds(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name} must be an RFC 3339 time or Unix seconds") from None


@router.get("", response_model=AuditPage)
def list_audit(
    engine: EngineDep,
    admin: AdminDep,
    token_id: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    until: Annotated[str | None, Query(description="RFC 3339 or Unix seconds")] = None,
    outcome: Annotated[str | None, Query(description="ok, error or an error code")] = None,
    table: Annotated[str | None, Query(description="schema.table read or written")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> AuditPage:
    """Audit records, newest first, filtered and paged."""
    log = engine.audit
    if log is None:
        return AuditPage(items=[])
    if cursor is not None and not cursor.isdigit():
        raise InvalidArgument("cursor must be a next_cursor this endpoint returned")
    where = AuditFilter(
        token_id=token_id,
        since=_time(since, "since"),
        until=_time(until, "until"),
        outcome=outcome,
        table=table,
    )
    items, nxt = log.list(where, limit=limit, cursor=int(cursor) if cursor else None)
    return AuditPage(
        items=[AuditRecord(**r) for r in items], next_cursor=None if nxt is None else str(nxt)
    )
