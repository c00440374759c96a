"""`agentdata mcp`: MCP over stdio for local agent hosts (see mcp_server.stdio)."""

from __future__ import annotations

import logging
import sys

import click

from agentdata.cli.client import DEFAULT_URL, HTTP_SCHEMES, check_url


@click.command("mcp")
@click.option(
    "--url",
    envvar="AGENTDATA_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The running server's REST URL; MCP is at <url>/mcp [env: AGENTDATA_URL].",
)
@click.option(
    "--token",
    envvar="AGENTDATA_TOKEN",
    default=None,
    help="Bearer token the agent acts as [env: AGENTDATA_TOKEN].",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    help="Log level of this process (logs go to stderr).",
)
def mcp_command(url: str, token: str | None, log_level: str) -> None:
    """Serve MCP over stdio, forwarding every call to a running server's /mcp.

    It never opens the database: the server answers, with the token's limits.
    """
    if not token:
        raise click.UsageError("no token: set AGENTDATA_TOKEN (or pass --token)")
    check_url(url, HTTP_SCHEMES, "--url")
    import anyio

    from mcp_server.stdio import serve_stdio

    # stdout carries the protocol: every log line goes to stderr.
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        anyio.run(serve_stdio, url, token)
    except KeyboardInterrupt:
        pass
    except Exception as e:  # connecting failed: say so on stderr, exit non-zero
        raise click.ClickException(
            f"[unavailable] cannot serve MCP from {url}: {_reason(e)}"
        ) from None


def _reason(e: BaseException) -> str:
    """The innermost cause, out of anyio's exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
