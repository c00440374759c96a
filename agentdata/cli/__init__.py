"""The `agentdata` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agentdata import __version__
from agentdata.cli.artefacts import artefact_group
from agentdata.cli.audit import audit_group
from agentdata.cli.client import BadArgument
from agentdata.cli.exports import export_command
from agentdata.cli.jobs import job_group
from agentdata.cli.mcp import mcp_command
from agentdata.cli.options import settings_options
from agentdata.cli.remote import remote_group
from agentdata.cli.sql import sql_command
from agentdata.cli.sync import sync_group
from agentdata.cli.tokens import token_group
from agentdata.cli.worker import beat_command, flower_command, worker_command
from agentdata.settings import Settings


@click.group()
@click.version_option(__version__, prog_name="agentdata")
def cli() -> None:
    """agentdata: a data server for AI agents (Arrow Flight, Flight SQL, REST, MCP)."""


@cli.command("serve")
@click.option(
    "--reload",
    is_flag=True,
    help="Development only: restart the server when a source file changes. Refused with "
    "TLS configured or a host other than loopback.",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A directory whose .py files --reload watches (repeatable; default: the "
    "agentdata packages).",
)
@settings_options
def serve_command(settings: Settings, reload: bool, reload_dirs: tuple[Path, ...]) -> None:
    """Run the Flight server and the control plane (and, without Redis, the task runner)."""
    if reload_dirs and not reload:
        raise click.UsageError("--reload-dir needs --reload")
    if reload:
        from agentdata import reload as reloader

        refused = reloader.production_reason(settings)
        if refused is not None:
            raise BadArgument(f"--reload is for development only, and {refused}")
        sys.exit(reloader.run(sys.argv[1:], list(reload_dirs) or reloader.default_dirs()))
    from agentdata.launcher import serve

    sys.exit(serve(settings))


cli.add_command(token_group)
cli.add_command(audit_group)
cli.add_command(sql_command)
cli.add_command(artefact_group)
cli.add_command(job_group)
cli.add_command(export_command)
cli.add_command(sync_group)
cli.add_command(remote_group)
cli.add_command(mcp_command)
cli.add_command(worker_command)
cli.add_command(beat_command)
cli.add_command(flower_command)


def main() -> None:
    cli()
