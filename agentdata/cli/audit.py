"""`agentdata audit ls`: the audit log, one record per query (a REST client; admins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from agentdata.cli.client import Api, client_options
from agentdata.timestamps import short


@click.group("audit")
def audit_group() -> None:
    """Read the audit log: who ran what, on which channel, and how it ended."""


@audit_group.command("ls")
@click.option("--token-id", default=None, help="Only this token's queries.")
@click.option("--since", default=None, help="RFC 3339 time or Unix seconds.")
@click.option("--until", default=None, help="RFC 3339 time or Unix seconds.")
@click.option("--outcome", default=None, help="ok, error, or an error code.")
@click.option("--table", default=None, help="Only queries reading or writing schema.table.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@client_options
def ls(
    token_id: str | None,
    since: str | None,
    until: str | None,
    outcome: str | None,
    table: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """List audit records, newest first."""
    params: dict[str, Any] = {
        k: v
        for k, v in {
            "token_id": token_id,
            "since": since,
            "until": until,
            "outcome": outcome,
            "table": table,
            "limit": limit,
            "cursor": cursor,
        }.items()
        if v is not None
    }
    page = Api(url, token, client_data_dir).request("GET", "/api/v1/audit", params=params)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{'TIME':20}  {'TOKEN':16}  {'CHANNEL':9}  {'OUTCOME':18}  {'ROWS':>8}  SQL")
    for r in page["items"]:
        sql = " ".join(r["sql"].split())
        click.echo(
            f"{short(r['time']):20}  {r['token_name'][:16]:16}  {r['channel']:9}  "
            f"{r['outcome'][:18]:18}  {r['rows']:>8}  {sql[:80]}"
        )
    if page.get("next_cursor"):
        click.echo(f"# more: --cursor {page['next_cursor']}", err=True)
