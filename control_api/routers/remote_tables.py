"""/api/v1/remote-tables: Snowflake tables queried in place, not synced (admin only).

    POST   /api/v1/remote-tables  {"name": "sales.big_orders",
                                   "source": "SHOP.PUBLIC.ORDERS",
                                   "description": "Every order line since 2015"}  -> 201
    GET    /api/v1/remote-tables                       -> {"items": [...]}
    GET    /api/v1/remote-tables/{name}                -> one
    POST   /api/v1/remote-tables/{name}/refresh        columns and rows read again -> 200
    DELETE /api/v1/remote-tables/{name}                -> 204 (nothing changes in Snowflake)

A remote table's columns come from Snowflake's metadata, typed like a sync would type
them; agents then name it in SQL like any table (see docs/federation.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from agentdata.descriptions import MAX_DESCRIPTION_CHARS
from agentdata.engine import Engine
from agentdata.errors import Unavailable
from agentdata.federation import Federation
from control_api.deps import AdminDep, EngineDep

router = APIRouter(prefix="/api/v1/remote-tables", tags=["remote tables"])


class RemoteTableIn(BaseModel):
    name: str = Field(
        description="How SQL names it here: schema.table.", examples=["sales.big_orders"]
    )
    source: str = Field(
        description="The Snowflake table: DB.SCHEMA.TABLE (quoted parts allowed).",
        examples=["SHOP.PUBLIC.ORDERS"],
    )
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)


def _federation(engine: Engine) -> Federation:
    federation: Federation | None = engine.federation
    if federation is None:
        raise Unavailable("federation is not configured on this server")
    return federation


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The name is taken."}, 503: {"description": "Snowflake down."}},
)
def declare(body: RemoteTableIn, engine: EngineDep, admin: AdminDep) -> dict[str, Any]:
    """Declare a remote table: its columns and row count are read from Snowflake now."""
    remote = _federation(engine).declare(
        engine,
        body.name,
        body.source,
        description=body.description,
        created_by=admin.token_id,
    )
    return remote.to_dict()


@router.get("")
def list_remote_tables(engine: EngineDep, admin: AdminDep) -> dict[str, Any]:
    """Every remote table, with its source, columns and row count."""
    return {"items": [t.to_dict() for t in _federation(engine).catalog.all()]}


@router.get("/{name}", responses={404: {"description": "No such remote table."}})
def get_remote_table(name: str, engine: EngineDep, admin: AdminDep) -> dict[str, Any]:
    """One remote table."""
    return _federation(engine).catalog.require(name).to_dict()


@router.post("/{name}/refresh", responses={404: {"description": "No such remote table."}})
def refresh_remote_table(name: str, engine: EngineDep, admin: AdminDep) -> dict[str, Any]:
    """Read the table's columns and row count from Snowflake again."""
    return _federation(engine).refresh(engine, name).to_dict()


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such remote table."}},
)
def delete_remote_table(name: str, engine: EngineDep, admin: AdminDep) -> Response:
    """Forget a remote table (the Snowflake table is untouched)."""
    _federation(engine).drop(engine, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
