"""Output schemas of the MCP tools (advertised as each tool's `outputSchema`).

The shapes are the contract of docs/agents.md; `mcp_server.tools` builds dicts that
match them, and the SDK validates every successful result against its model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Freshness(BaseModel):
    last_modified: str | None = Field(description="When the table last changed (ISO-8601 UTC).")
    last_synced: str | None = Field(description="When a sync last loaded it, if it is synced.")
    source: str | None = Field(description="The source snapshot of the last sync, if any.")


class ListedTable(BaseModel):
    table: str = Field(description="schema.name")
    kind: str = Field(description="TABLE or VIEW")
    rows: int | None
    columns: int = Field(description="Number of columns (describe_table lists them).")
    description: str | None
    location: str = Field(description="local: stored on this server")
    freshness: Freshness


class TablesResult(BaseModel):
    tables: list[ListedTable]


class Column(BaseModel):
    name: str
    type: str = Field(description="DuckDB type name")
    nullable: bool
    primary_key: bool
    description: str | None
    mask: str | None = Field(
        None, description="null | hash | redact | last4 when this token sees the column masked"
    )


class TableDescription(BaseModel):
    table: str
    kind: str
    description: str | None
    rows: int | None
    columns: list[Column]
    freshness: Freshness
    sample_rows: list[dict[str, Any]] = Field(description="Up to 5 rows, JSON-safe values.")


class ResultColumn(BaseModel):
    name: str
    type: str = Field(description="Arrow type")


class NextStep(BaseModel):
    reason: str = Field(description="max_rows, token_max_rows or characters")
    hint: str
    export: dict[str, Any] = Field(description="Arguments for the export tool.")
    flight_sql: dict[str, Any] = Field(description="Where to run the query for all rows.")


class QueryResult(BaseModel):
    columns: list[ResultColumn]
    rows: list[dict[str, Any]]
    row_count: int
    truncated: bool
    freshness: dict[str, Freshness] = Field(description="Per table read: when it last changed.")
    next: NextStep | None = Field(description="When truncated: how to get the whole result.")


class ExplainResult(BaseModel):
    plan: str = Field(
        description="DuckDB's physical plan, one operator per line, with row estimates."
    )
    estimated_rows: int = Field(description="What the cost guard compares with max_scan_rows.")
    scanned_rows: int = Field(description="Rows the plan reads from tables and table functions.")
    peak_rows: int = Field(description="The most rows any one operator produces.")
    max_scan_rows: int | None = Field(description="This token's budget (null: none).")
    within_budget: bool
    tables: list[str]


class ExportStarted(BaseModel):
    job_id: str
    state: str
    format: str
    columns: list[ResultColumn]


class Progress(BaseModel):
    rows: int
    bytes: int
    percent: float | None


class Artefact(BaseModel):
    id: str
    name: str | None
    bytes: int | None
    rows: int | None
    sha256: str | None
    content_type: str | None
    download_path: str = Field(description="GET it on the REST port with the same token.")


class JobStatus(BaseModel):
    job_id: str
    kind: str
    state: str = Field(description="queued, running, retrying, succeeded, failed or cancelled")
    progress: Progress
    error: dict[str, Any] | None
    artefact: Artefact | None
