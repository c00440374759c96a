"""The `agentdata` command line."""

from __future__ import annotations

import sys

import click

from agentdata import __version__
from agentdata.cli.artefacts import artefact_group
from agentdata.cli.exports import export_command
from agentdata.cli.jobs import job_group
from agentdata.cli.options import settings_options
from agentdata.cli.sql import sql_command
from agentdata.cli.sync import sync_group
from agentdata.cli.tokens import token_group
from agentdata.cli.worker import beat_command, flower_command, worker_command
from agentdata.settings import Settings


@click.group()
@click.version_option(__version__, prog_name="agentdata")
def cli() -> None:
    """agentdata: a data server for AI agents (Arrow Flight, Flight SQL, REST)."""


@cli.command("serve")
@settings_options
def serve_command(settings: Settings) -> None:
    """Run the Flight server and the control plane (and, without Redis, the task runner)."""
    from agentdata.launcher import serve

    sys.exit(serve(settings))


cli.add_command(token_group)
cli.add_command(sql_command)
cli.add_command(artefact_group)
cli.add_command(job_group)
cli.add_command(export_command)
cli.add_command(sync_group)
cli.add_command(worker_command)
cli.add_command(beat_command)
cli.add_command(flower_command)


def main() -> None:
    cli()
