"""The one mapping from agentdata errors to MCP tool errors.

A failed tool call answers `isError: true` with one text block that starts with the
error's stable code in brackets, then the message, then (when there is one) a hint
saying what to do next:

    [invalid_argument] Catalog Error: Table with name ordrs does not exist!
    LINE 1: SELECT * FROM ordrs
                          ^
    Did you mean: demo.orders? (tables this token may read: call list_tables)

The structured content of an error is {"code", "message", "hint"}. Suggestions for
unknown tables come only from the tables the calling token may read (DuckDB's own
"Did you mean" is already stripped for table-limited tokens: agentdata.sqlguard).
An exception that is not ours is logged and answered with a fixed `[internal]` text:
nothing of the server's insides reaches the agent.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable

from mcp_types import CallToolResult, TextContent

from agentdata import errors as E

log = logging.getLogger("agentdata.mcp")

#: DuckDB's message for a table it cannot bind, and the guard's for one outside the
#: allow-list (which is also what a table-limited token gets for a name that does not
#: exist: existence is not revealed).
_UNKNOWN_TABLE = re.compile(r"Table with name (\"[^\"]+\"|\S+) does not exist", re.I)
_DENIED_TABLE = re.compile(r"may not access table\(s\): ([^,\n]+)")

#: What to do next, by error code (the unknown-table hint is built per call).
HINTS: dict[str, str] = {
    "permission_denied": "call list_tables for the tables this token may read",
    "not_found": "call list_tables for the tables this token may read",
    "deadline_exceeded": "narrow the query (filters, a LIMIT, aggregates) or use export",
    "resource_exhausted": "call explain to see the plan's estimate, then narrow the query",
    "unauthenticated": "the token is missing, expired or revoked: ask for a new one",
}


def hint_for(err: E.AgentdataError, readable: Callable[[], list[str]]) -> str | None:
    """An actionable hint for `err`; `readable` lists the tables the caller may read
    (called only when an unknown table needs a suggestion)."""
    match = None
    if isinstance(err, E.InvalidArgument) and "did you mean" not in err.message.lower():
        match = _UNKNOWN_TABLE.search(err.message)
    elif isinstance(err, E.PermissionDenied):
        match = _DENIED_TABLE.search(err.message)
    if match:
        wanted = match.group(1).strip().strip('"').lower().removeprefix("main.")
        tables = readable()
        by_name = {t.split(".", 1)[-1].lower(): t for t in tables}
        close = difflib.get_close_matches(wanted, [t.lower() for t in tables], n=3, cutoff=0.6)
        close += [
            by_name[n] for n in difflib.get_close_matches(wanted, list(by_name), n=3, cutoff=0.6)
        ]
        suggestions = list(dict.fromkeys(close))[:3]
        if suggestions:
            return f"Did you mean: {', '.join(suggestions)}? (call list_tables for the rest)"
        return "call list_tables for the tables this token may read"
    return HINTS.get(err.code)


def error_result(err: E.AgentdataError, hint: str | None = None) -> CallToolResult:
    """The tool error for one of our errors: text "[code] message" (+ the hint)."""
    level = logging.ERROR if isinstance(err, E.InternalError) else logging.INFO
    log.log(level, "mcp tool failed: %s: %s", err.code, err.message)
    text = f"[{err.code}] {err.message}"
    if hint:
        text += f"\n{hint}"
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={"code": err.code, "message": err.message, "hint": hint},
        is_error=True,
    )


def unexpected_result() -> CallToolResult:
    """The tool error for an exception that is not ours (logged by the caller)."""
    return error_result(E.InternalError("unexpected server error (see server log)"))
