"""The MCP adapter: agents (MCP hosts) list, describe, query and export tables.

Two transports over one set of tools (mcp_server.server, over mcp_server.tools):
streamable HTTP at `/mcp` on the REST port (`mount_mcp`, composed by `agentdata
serve`), and `agentdata mcp` (mcp_server.stdio), a stdio server for local hosts that
forwards every call to a running server's `/mcp` with the user's token. The contract
(tool names, fields, errors, caps) is docs/agents.md.
"""

from mcp_server.mount import mount_mcp

__all__ = ["mount_mcp"]
