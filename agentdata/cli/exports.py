"""`agentdata export SQL --format F --out FILE`: run an export job, wait, download.

    agentdata export "SELECT * FROM demo.orders" --format parquet --compression zstd \
        --out orders.parquet

Waits for the job with a progress bar (rows and bytes written), then downloads the
artefact (SHA-256 verified). A JSON Lines export also writes its schema document
next to the file (`FILE.schema.json`). `--no-wait` prints the job id and returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import click

from agentdata.cli.artefacts import _download_to
from agentdata.cli.client import Api, client_options
from agentdata.cli.jobs import wait_for_job
from agentdata.exports import COMPRESSIONS, FORMATS


@click.command("export")
@click.argument("sql")
@click.option(
    "-f", "--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True
)
@click.option(
    "-c",
    "--compression",
    type=click.Choice(sorted({c for cs in COMPRESSIONS.values() for c in cs})),
    default="none",
    show_default=True,
    help="; ".join(f"{f}: {', '.join(c)}" for f, c in COMPRESSIONS.items()),
)
@click.option(
    "-o",
    "--out",
    default=None,
    help="File to write ('-' for stdout; default: the artefact's name here).",
)
@click.option("--name", default=None, help="Name of the artefact on the server.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option(
    "--truncate",
    is_flag=True,
    help="With a token's max_rows: export the first max_rows rows instead of failing.",
)
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this long (s).")
@client_options
def export_command(
    sql: str,
    fmt: str,
    compression: str,
    out: str | None,
    name: str | None,
    force: bool,
    truncate: bool,
    no_wait: bool,
    timeout: float | None,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Export the result of SQL to a file (CSV, JSON Lines, Parquet or Arrow IPC)."""
    api = Api(url, token, client_data_dir)
    target = Path(out) if out and out != "-" else None
    if target is not None and target.exists() and not force:
        raise click.ClickException(f"{target} exists (use --force to overwrite)")
    body = {
        "sql": sql,
        "format": fmt,
        "compression": compression,
        "name": name,
        "truncate": truncate,
    }
    accepted = api.request("POST", "/api/v1/exports", json=body)
    job_id = accepted["job_id"]
    if no_wait:
        click.echo(job_id)
        return
    click.echo(f"export job {job_id} queued", err=True)
    label = f"export {target}" if target is not None else "export"
    job = wait_for_job(api, job_id, timeout_s=timeout, label=label)
    result = job["result"] or {}
    meta = api.request("GET", f"/api/v1/artefacts/{result['artefact_id']}")
    if out == "-":
        _download_to(api, meta, sys.stdout.buffer, offset=0, digest=hashlib.sha256(), label="-")
        return
    path = target or Path(meta["name"])
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists (use --force to overwrite)")
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        _download_to(api, meta, f, offset=0, digest=hashlib.sha256(), label=str(path))
    os.replace(part, path)
    if fmt == "json" and result.get("schema"):
        schema_path = path.with_name(path.name + ".schema.json")
        schema_path.write_text(json.dumps(result["schema"], indent=2) + "\n")
    cut = f" (truncated at max_rows {result.get('max_rows')})" if result.get("truncated") else ""
    click.echo(f"{path}: {result.get('rows', 0):,} rows, {meta['size']:,} bytes{cut}", err=True)
