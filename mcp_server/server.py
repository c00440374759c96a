"""The MCP server: tools and table resources over `AgentTools`, one handler recipe each.

Every tool follows the same recipe: the caller's principal (verified from its Bearer
token by `mcp_server.http` for this very HTTP request) -> `AgentTools` -> an answer,
or a tool error through `mcp_server.errors`. Tools are plain functions: the SDK runs
them on worker threads, so a DuckDB query never blocks the event loop.

Tools (inputs JSON-schema'd from the signatures, outputs from `mcp_server.models`):
`list_tables`, `describe_table`, `query`, `explain`, `export`, `job_status`.
Resources: `agentdata://table/{schema}/{name}` (application/json: the table's columns,
description and freshness); `resources/list` names only what the token may read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp_types import (
    CallToolResult,
    ListResourcesResult,
    Resource,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field

from agentdata import __version__, audit
from agentdata.errors import AgentdataError, NotFound, PermissionDenied
from agentdata.names import split_identifier
from agentdata.tokens import Principal
from mcp_server import models
from mcp_server.errors import error_result, hint_for, unexpected_result
from mcp_server.http import principal_of
from mcp_server.tools import AgentTools, Answer

log = logging.getLogger("agentdata.mcp")

RESOURCE_TEMPLATE = "agentdata://table/{schema}/{name}"

INSTRUCTIONS = (
    "agentdata serves tables (DuckDB SQL). Start with list_tables, then describe_table; "
    "query runs one read-only SQL statement and returns at most max_rows rows within a "
    "character budget (truncated: true says it was cut, and next says how to get all of "
    "it: export). explain shows DuckDB's plan and the estimated rows, which a token's "
    "max_scan_rows budget is checked against before a query runs. Every answer carries "
    "the freshness of the tables it read. Errors start with a [code] and say what to do."
)

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_STARTS_JOB = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


def build_mcp(tools: AgentTools) -> MCPServer:
    """The MCP server answering with `tools` (tests may build theirs over fakes)."""
    server: MCPServer = MCPServer(
        "agentdata",
        title="agentdata",
        instructions=INSTRUCTIONS,
        version=__version__,
        middleware=[_ResourceLister(tools)],
    )

    def answer(ctx: Context, run: Callable[[Principal], Answer]) -> CallToolResult:
        """The recipe: principal -> tool -> result, or the one error mapping."""
        principal: Principal | None = None
        try:
            principal = principal_of(ctx.request_context.request)
            with audit.channel("mcp"):  # the audit log's channel for the queries it runs
                result = run(principal)
        except AgentdataError as err:
            caller = principal
            readable = (lambda: tools.readable_tables(caller)) if caller else list
            return error_result(err, _safe_hint(err, readable))
        except Exception:
            log.exception("unexpected error in an MCP tool")
            return unexpected_result()
        text = result.summary + "\n" + json.dumps(result.data, ensure_ascii=False, default=str)
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=result.data
        )

    @server.tool(annotations=_READ_ONLY)
    def list_tables(ctx: Context) -> Annotated[CallToolResult, models.TablesResult]:
        """List the tables and views this token may read: rows, column count,
        description, location and freshness (when each last changed or was synced)."""
        return answer(ctx, tools.list_tables)

    @server.tool(annotations=_READ_ONLY)
    def describe_table(
        table: Annotated[str, Field(description="schema.name, e.g. demo.orders")],
        ctx: Context,
    ) -> Annotated[CallToolResult, models.TableDescription]:
        """Describe one table: columns (name, DuckDB type, nullable, primary key,
        description), row count, freshness, and up to 5 sample rows."""
        return answer(ctx, lambda p: tools.describe_table(p, table))

    @server.tool(annotations=_READ_ONLY)
    def query(
        sql: Annotated[str, Field(description="One read-only DuckDB SQL statement.")],
        ctx: Context,
        max_rows: Annotated[
            int, Field(ge=1, description="Most rows to return (never more than the token's).")
        ] = 100,
    ) -> Annotated[CallToolResult, models.QueryResult]:
        """Run one read-only SQL statement (DuckDB dialect) and return its rows as JSON.

        At most max_rows rows and a character budget; `truncated: true` when either cut
        the result, and `next` then says how to get all of it (the export tool). Values
        are JSON-safe: decimals as strings, timestamps ISO-8601, bytes base64.
        `freshness` says when each table read last changed."""
        return answer(ctx, lambda p: tools.query(p, sql, max_rows))

    @server.tool(annotations=_READ_ONLY)
    def explain(
        sql: Annotated[str, Field(description="One read-only DuckDB SQL statement.")],
        ctx: Context,
    ) -> Annotated[CallToolResult, models.ExplainResult]:
        """Show DuckDB's plan for a query without running it, with the estimated rows
        and whether it fits this token's max_scan_rows budget."""
        return answer(ctx, lambda p: tools.explain(p, sql))

    @server.tool(annotations=_STARTS_JOB)
    def export(
        sql: Annotated[str, Field(description="One read-only DuckDB SQL statement.")],
        ctx: Context,
        format: Annotated[
            str, Field(description="parquet (default), csv, json (JSON Lines) or arrow")
        ] = "parquet",
        truncate: Annotated[
            bool,
            Field(
                description="Cut a result over this token's max_rows at max_rows (the "
                "job's result says truncated) instead of failing the job."
            ),
        ] = False,
    ) -> Annotated[CallToolResult, models.ExportStarted]:
        """Export a query's whole result to a file on the server (a job); poll
        job_status with the job_id for progress and the download path."""
        return answer(ctx, lambda p: tools.export(p, sql, format, truncate))

    @server.tool(annotations=_READ_ONLY)
    def job_status(
        job_id: Annotated[str, Field(description="The job_id export returned.")],
        ctx: Context,
    ) -> Annotated[CallToolResult, models.JobStatus]:
        """A job's state and progress; when an export succeeded, its artefact and
        download path (GET it on the REST port with the same token)."""
        return answer(ctx, lambda p: tools.job_status(p, job_id))

    @server.resource(
        RESOURCE_TEMPLATE,
        name="table",
        description="A table's columns (DuckDB types, descriptions) and freshness.",
        mime_type="application/json",
    )
    def table_resource(schema: str, name: str, ctx: Context) -> str:
        try:
            principal = principal_of(ctx.request_context.request)
            return json.dumps(tools.table_resource(principal, schema, name))
        except (NotFound, PermissionDenied) as err:
            # The same answer for "missing" and "not yours": nothing to learn from it.
            raise ResourceNotFoundError(f"[not_found] no table {schema}.{name}") from err
        except AgentdataError as err:
            raise ResourceError(f"[{err.code}] {err.message}") from err

    return server


def _safe_hint(err: AgentdataError, readable: Callable[[], list[str]]) -> str | None:
    try:
        return hint_for(err, readable)
    except Exception:  # a hint must never hide the error itself
        log.exception("building an MCP error hint failed")
        return None


class _ResourceLister:
    """Answers `resources/list` per token: one resource per readable table.

    The SDK lists a fixed set of resources; ours depend on who asks, so this
    middleware answers the method itself (everything else passes through).
    """

    def __init__(self, tools: AgentTools) -> None:
        self.tools = tools

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != "resources/list":
            return await call_next(ctx)
        try:
            principal = principal_of(ctx.request)
            tables = await anyio.to_thread.run_sync(self.tools.readable_tables, principal)
        except AgentdataError as err:
            log.info("mcp resources/list failed: %s: %s", err.code, err.message)
            tables = []
        resources = []
        for table in tables:
            schema, name = split_identifier(table)
            resources.append(
                Resource(
                    uri=RESOURCE_TEMPLATE.format(schema=schema, name=name),
                    name=table,
                    description=f"Schema and freshness of {table}",
                    mime_type="application/json",
                )
            )
        return ListResourcesResult(resources=resources)
