"""/api/v1/tokens: issue, list and revoke tokens (admin only)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from agentdata.bounds import PositiveCount, Seconds, WholeSeconds
from control_api.deps import AdminDep, CoreDep, EngineDep, TokensDep
from control_api.timestamps import Timestamp

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=255,
        description="At most 255 bytes of UTF-8, no control characters.",
    )
    role: Literal["reader", "writer", "admin"] = "reader"
    tables: list[str] | None = Field(
        None, description="Glob patterns on schema.table; omitted = all tables."
    )
    ttl_seconds: WholeSeconds | None = Field(
        None, description="Lifetime; default is the server's token_default_ttl_s."
    )
    max_rows: PositiveCount | None = Field(None, description="Most rows one query may return.")
    timeout_s: Seconds | None = Field(
        None, description="Query timeout for this token (at most the server's)."
    )
    max_scan_rows: PositiveCount | None = Field(
        None,
        description="Cost guard: queries DuckDB's plan estimates to scan more rows than this "
        "are refused before they run ([resource_exhausted]).",
    )
    row_filters: dict[str, str] | None = Field(
        None,
        description='Row filters: {"schema.table": "<SQL condition over its columns>"}, e.g. '
        '{"sales.orders": "region = \'EU\'"}. The token sees only rows where it holds.',
    )
    column_masks: dict[str, dict[str, str]] | None = Field(
        None,
        description='Column masks: {"schema.table": {"column": "null" | "hash" | "redact" | '
        '"last4"}}. The column keeps its name; its values are masked everywhere.',
    )
    max_concurrent: PositiveCount | None = Field(
        None,
        description="Most queries this token may run at once (default: the server's "
        "token_max_concurrent).",
    )


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    tables: list[str] | None
    max_rows: int | None
    timeout_s: float | None
    created_at: Timestamp
    expires_at: Timestamp
    revoked_at: Timestamp | None = None
    created_by: str | None = None
    max_scan_rows: int | None = None
    row_filters: dict[str, str] | None = None
    column_masks: dict[str, dict[str, str]] | None = None
    max_concurrent: int | None = None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret: shown once, never stored or listed.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses={
        400: {
            "description": "A name with a control character, a bad table glob, or a row "
            "filter / column mask that does not fit its table."
        }
    },
)
def create_token(
    body: TokenCreate, engine: EngineDep, tokens: TokensDep, admin: AdminDep
) -> TokenCreated:
    """Issue a token. The response is the only place its secret ever appears."""
    policy = engine.validate_governance(body.row_filters, body.column_masks)
    record, token = tokens.create(
        name=body.name,
        role=body.role,
        tables=body.tables,
        ttl_seconds=body.ttl_seconds,
        max_rows=body.max_rows,
        timeout_s=body.timeout_s,
        created_by=admin.token_id,
        max_scan_rows=body.max_scan_rows,
        governance=policy,
        max_concurrent=body.max_concurrent,
    )
    return TokenCreated(**record.to_dict(), token=token)


@router.get("", response_model=list[TokenOut])
def list_tokens(tokens: TokensDep, admin: AdminDep) -> list[TokenOut]:
    """Every token issued (never the secrets)."""
    return [TokenOut(**r.to_dict()) for r in tokens.list()]


@router.get("/{token_id}", response_model=TokenOut)
def get_token(token_id: str, tokens: TokensDep, admin: AdminDep) -> TokenOut:
    return TokenOut(**tokens.get(token_id).to_dict())


@router.delete("/{token_id}", response_model=TokenOut)
def revoke_token(token_id: str, core: CoreDep, admin: AdminDep) -> TokenOut:
    """Revoke a token; its next call on Flight or REST is refused.

    A use case of the core: it also stops the token's queries and cancels its jobs."""
    return TokenOut(**core.revoke_token(token_id).to_dict())
