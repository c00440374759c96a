"""`agentdata mcp`: MCP over stdio for local agent hosts, forwarding to a running server.

    AGENTDATA_URL=http://127.0.0.1:8000 AGENTDATA_TOKEN=<token> agentdata mcp

The host starts this process and speaks MCP on its stdin/stdout. It never opens the
database: every request (tools, resources) is sent to the server's `/mcp` endpoint
over streamable HTTP with the user's Bearer token, and the server's answer comes
back unchanged. So the tools, their schemas, limits and errors are exactly the
server's, and revoking the token stops this process's access on its next call.
Logs go to stderr (stdout is the protocol).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    TextContent,
)

from agentdata import __version__
from mcp_server.http import MCP_PATH

log = logging.getLogger("agentdata.mcp.stdio")


@asynccontextmanager
async def upstream_session(url: str, token: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session with the server at `url` (its REST base URL)."""
    endpoint = url.rstrip("/") + MCP_PATH
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(endpoint, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def proxy_server(upstream: ClientSession, instructions: str | None) -> Server:
    """A stdio-side server whose every handler asks `upstream` (the real server)."""

    async def list_tools(
        ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return await upstream.list_tools(params=params)

    async def call_tool(ctx: ServerRequestContext, params: CallToolRequestParams) -> CallToolResult:
        try:
            return await upstream.call_tool(params.name, params.arguments)
        except MCPError:
            raise  # the server's own protocol error, passed on as it is
        except (httpx2.HTTPError, OSError) as e:
            # The server went away mid-session: a tool error the agent can read.
            text = f"[unavailable] cannot reach the agentdata server: {e}"
            return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)

    async def list_resources(
        ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        return await upstream.list_resources(params=params)

    async def list_templates(
        ctx: ServerRequestContext, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return await upstream.list_resource_templates(params=params)

    async def read_resource(
        ctx: ServerRequestContext, params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        return await upstream.read_resource(str(params.uri))

    return Server(
        "agentdata",
        version=__version__,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


async def serve_stdio(url: str, token: str) -> None:
    """Serve MCP on stdin/stdout until the host closes it, forwarding to `url`."""
    async with upstream_session(url, token) as upstream:
        server = proxy_server(upstream, upstream.instructions)
        log.info("agentdata mcp: forwarding stdio to %s%s", url.rstrip("/"), MCP_PATH)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
