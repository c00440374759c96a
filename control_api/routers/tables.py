"""/api/v1/tables: the table catalogue this token may read, and descriptions (admins).

    GET   /api/v1/tables                 -> [{"schema", "name", "kind", "location", "rows", "columns",
                                              "description", "freshness", ...}]
    PATCH /api/v1/tables/demo/orders {"description": "One row per order line",
                                      "columns": {"amount": "Net amount, EUR"}}

`freshness` is {last_modified, last_synced, source} (agentdata.freshness); the flat
`last_modified` / `last_synced` (RFC 3339, like every REST timestamp) and
`source_snapshot` stay for existing clients. A description set to null or "" is removed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from agentdata import descriptions, governance
from agentdata.descriptions import MAX_DESCRIPTION_CHARS
from agentdata.engine import TableInfo
from agentdata.errors import InvalidArgument
from agentdata.timestamps import rfc3339
from control_api.deps import AdminDep, EngineDep, MetaDep, PrincipalDep

router = APIRouter(prefix="/api/v1/tables", tags=["tables"])


class DescriptionPatch(BaseModel):
    """What to change; fields left out keep their values."""

    description: str | None = Field(
        None,
        max_length=MAX_DESCRIPTION_CHARS,
        description='The table\'s description; null or "" removes it.',
    )
    columns: dict[str, str | None] | None = Field(
        None, description='Column name -> description; null or "" removes one.'
    )


def table_entry(t: TableInfo) -> dict[str, Any]:
    """One table as REST lists it."""
    return {
        "schema": t.schema,
        "name": t.name,
        "kind": t.kind,
        # "duckdb" (local), or "snowflake" for a remote table (docs/federation.md).
        "location": t.location,
        "rows": t.rows,
        "description": t.description,
        "columns": [
            {
                "name": f.name,
                "type": str(f.type),
                "description": t.column_descriptions.get(f.name),
                # null | hash | redact | last4 when this token sees the column masked.
                "mask": governance.mask_of(f),
            }
            for f in t.arrow_schema
        ],
        "freshness": t.freshness,
        "last_modified": None if t.last_modified is None else rfc3339(t.last_modified),
        "last_synced": None if t.last_synced is None else rfc3339(t.last_synced),
        "source_snapshot": t.source_snapshot,
    }


@router.get("")
def list_tables(engine: EngineDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """Tables and views this token may read: columns, rows, descriptions, freshness."""
    return [table_entry(t) for t in engine.list_tables(principal)]


@router.patch(
    "/{schema}/{name}",
    responses={
        400: {"description": "A column the table does not have."},
        404: {"description": "No such table."},
    },
)
def describe_table(
    schema: str,
    name: str,
    body: DescriptionPatch,
    engine: EngineDep,
    meta: MetaDep,
    admin: AdminDep,
) -> dict[str, Any]:
    """Set the table's and its columns' descriptions (admin); answers the table."""
    table = engine.table_info(admin, schema, name)
    columns = body.columns or {}
    unknown = sorted(set(columns) - set(table.arrow_schema.names))
    if unknown:
        raise InvalidArgument(
            f"{table.qualified} has no column(s) {', '.join(unknown)}; "
            f"its columns: {', '.join(table.arrow_schema.names)}"
        )
    descriptions.update(
        meta,
        table.qualified.lower(),
        table=body.description,
        set_table="description" in body.model_fields_set,
        columns=columns,
    )
    return table_entry(engine.table_info(admin, schema, name))
