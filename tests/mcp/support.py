"""MCP clients for the tests: the official SDK over streamable HTTP, one session per call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent

from tests.support.server import ServerProcess

T = TypeVar("T")


@asynccontextmanager
async def session(server: ServerProcess, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(f"{server.http_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        yield s


def run(server: ServerProcess, token: str, body: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Run `body` with an initialized session as `token`."""

    async def main() -> T:
        async with session(server, token) as s:
            return await body(s)

    return anyio.run(main)


def call(
    server: ServerProcess, token: str, tool: str, args: dict[str, Any] | None = None
) -> CallToolResult:
    """One tool call in its own session."""

    async def body(s: ClientSession) -> CallToolResult:
        return await s.call_tool(tool, args or {})

    return run(server, token, body)


def data(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful call (fails the test with the error text)."""
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text
