"""`agentdata worker|beat|flower`: the Celery processes, with our app and settings.

    agentdata worker --redis-url redis://127.0.0.1:6379/0 --server-url http://db:8000 -c 4
    agentdata beat   --redis-url redis://127.0.0.1:6379/0
    agentdata flower --redis-url redis://127.0.0.1:6379/0          # http://127.0.0.1:5555

Every setting is an option and an AGENTDATA_* variable, as for `serve`; anything
after `--` goes to Celery unchanged (e.g. `agentdata worker -- --without-heartbeat`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from agentdata.cli.options import settings_options
from agentdata.settings import Settings

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": False}


def _app(settings: Settings) -> Any:
    from agentdata.errors import AgentdataError
    from agentdata.launcher import configure_logging

    configure_logging(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per REST call
    try:
        from workers.celery_app import create_app

        return create_app(settings)
    except AgentdataError as e:
        raise click.UsageError(e.message) from None


@click.command("worker", context_settings=_PASS_THROUGH)
@settings_options
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes/threads.")
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Celery pool (default prefork).",
)
@click.option(
    "-Q", "--queues", default=None, help="Comma-separated queues (default: all of agentdata's)."
)
@click.option("-n", "--hostname", default=None, help="Worker node name (default celery@host).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_command(
    settings: Settings,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker for exports, syncs and maintenance (needs --redis-url)."""
    app = _app(settings)
    argv = ["worker", f"--loglevel={settings.log_level.upper()}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if pool:
        argv.append(f"--pool={pool}")
    if queues:
        argv.append(f"--queues={queues}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main([*argv, *celery_args])


@click.command("beat", context_settings=_PASS_THROUGH)
@settings_options
@click.option(
    "--schedule-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Where beat keeps last-run times (default <data_dir>/celerybeat-schedule).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat_command(
    settings: Settings, schedule_file: Path | None, celery_args: tuple[str, ...]
) -> None:
    """Run Celery beat: the maintenance schedule (periods from the maintenance_* settings)."""
    app = _app(settings)
    path = schedule_file or settings.data_dir / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    app.start(
        ["beat", f"--loglevel={settings.log_level.upper()}", f"--schedule={path}", *celery_args]
    )


@click.command("flower", context_settings=_PASS_THROUGH)
@settings_options
@click.option("--port", type=int, default=5555, show_default=True, help="Flower's HTTP port.")
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def flower_command(
    settings: Settings, port: int, address: str, celery_args: tuple[str, ...]
) -> None:
    """Run Flower, Celery's web monitor, on our app (task arguments show credentials redacted)."""
    app = _app(settings)
    app.start(["flower", f"--port={port}", f"--address={address}", *celery_args])
