"""`agentdata remote add|ls|rm|refresh`: remote (federated) Snowflake tables, through REST (admin).

    agentdata remote add sales.big_orders --source SHOP.PUBLIC.ORDERS \\
        --description "Every order line since 2015"
    agentdata remote ls
    agentdata remote refresh sales.big_orders    # columns and rows read again
    agentdata remote rm sales.big_orders

Agents then query `sales.big_orders` like any table; Snowflake runs what it can of each
query (docs/federation.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from agentdata.cli.client import Api, client_options


@click.group("remote")
def remote_group() -> None:
    """Remote tables: Snowflake tables queried in place instead of synced."""


@remote_group.command("add")
@click.argument("name")
@click.option("--source", required=True, help="The Snowflake table, DB.SCHEMA.TABLE.")
@click.option("--description", default=None, help="What the table holds, for agents.")
@click.option("--json", "as_json", is_flag=True)
@client_options
def add(
    name: str,
    source: str,
    description: str | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Declare NAME (schema.table) as the Snowflake table --source."""
    body = {"name": name, "source": source, "description": description}
    created = Api(url, token, client_data_dir).request("POST", "/api/v1/remote-tables", json=body)
    if as_json:
        click.echo(json.dumps(created, indent=2))
        return
    click.echo(_summary("declared", created))


@remote_group.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
def ls(as_json: bool, url: str, client_data_dir: Path, token: str | None) -> None:
    """List remote tables with their source, columns and rows."""
    items = Api(url, token, client_data_dir).request("GET", "/api/v1/remote-tables")["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    click.echo(f"{'NAME':28}  {'SOURCE':36}  {'COLUMNS':>7}  {'ROWS':>14}")
    for t in items:
        rows = "-" if t["rows"] is None else f"{t['rows']:,}"
        click.echo(f"{t['name']:28}  {t['source']:36}  {len(t['columns']):>7}  {rows:>14}")


@remote_group.command("refresh")
@click.argument("name")
@client_options
def refresh(name: str, url: str, client_data_dir: Path, token: str | None) -> None:
    """Read NAME's columns and row count from Snowflake again."""
    table = Api(url, token, client_data_dir).request(
        "POST", f"/api/v1/remote-tables/{name}/refresh"
    )
    click.echo(_summary("refreshed", table))


@remote_group.command("rm")
@click.argument("name")
@client_options
def rm(name: str, url: str, client_data_dir: Path, token: str | None) -> None:
    """Forget the remote table NAME (nothing changes in Snowflake)."""
    Api(url, token, client_data_dir).request("DELETE", f"/api/v1/remote-tables/{name}")
    click.echo(f"removed remote table {name}")


def _summary(verb: str, table: dict[str, Any]) -> str:
    rows = "unknown" if table["rows"] is None else f"{table['rows']:,}"
    columns = ", ".join(f"{c['name']} {c['type']}" for c in table["columns"])
    return f"{verb} remote table {table['name']} -> {table['source']} ({rows} rows): {columns}"
