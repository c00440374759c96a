"""`agentdata token create|list|revoke`: a REST client of the running server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from agentdata.cli.client import Api, client_options
from agentdata.timestamps import seconds, short


@click.group("token")
def token_group() -> None:
    """Issue, list and revoke tokens (needs an admin token)."""


@token_group.command("create")
@click.argument("name")
@click.option(
    "--role", type=click.Choice(["reader", "writer", "admin"]), default="reader", show_default=True
)
@click.option(
    "--table", "tables", multiple=True, help="Allow-list glob on schema.table (repeatable)."
)
@click.option("--ttl", "ttl_seconds", type=int, default=None, help="Lifetime in seconds.")
@click.option("--max-rows", type=int, default=None, help="Most rows one query may return.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Query timeout in seconds.")
@click.option(
    "--max-scan-rows",
    type=int,
    default=None,
    help="Cost guard: refuse queries estimated to scan more rows than this.",
)
@click.option(
    "--row-filter",
    "row_filters",
    multiple=True,
    metavar="SCHEMA.TABLE=CONDITION",
    help="Row filter: the token sees only rows where CONDITION holds (repeatable).",
)
@click.option(
    "--mask",
    "masks",
    multiple=True,
    metavar="SCHEMA.TABLE.COLUMN=null|hash|redact|last4",
    help="Column mask (repeatable).",
)
@click.option(
    "--max-concurrent",
    type=int,
    default=None,
    help="Most queries this token may run at once (default: the server's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON record.")
@client_options
def create(
    name: str,
    role: str,
    tables: tuple[str, ...],
    ttl_seconds: int | None,
    max_rows: int | None,
    timeout_s: float | None,
    max_scan_rows: int | None,
    row_filters: tuple[str, ...],
    masks: tuple[str, ...],
    max_concurrent: int | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Create a token and print it (shown once)."""
    api = Api(url, token, client_data_dir)
    body = {
        "name": name,
        "role": role,
        "tables": list(tables) or None,
        "ttl_seconds": ttl_seconds,
        "max_rows": max_rows,
        "timeout_s": timeout_s,
        "max_scan_rows": max_scan_rows,
        "row_filters": _row_filters(row_filters),
        "column_masks": _column_masks(masks),
        "max_concurrent": max_concurrent,
    }
    record = api.request("POST", "/api/v1/tokens", json=body)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(record["token"])
        click.echo(
            f"# id {record['id']}, role {record['role']}, expires {_ts(record['expires_at'])}",
            err=True,
        )


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@client_options
def list_(as_json: bool, url: str, client_data_dir: Path, token: str | None) -> None:
    """List tokens (never their secrets)."""
    records = Api(url, token, client_data_dir).request("GET", "/api/v1/tokens")
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(f"{'ID':32}  {'ROLE':6}  {'STATE':8}  {'EXPIRES':20}  NAME")
    for r in records:
        state = (
            "revoked"
            if r["revoked_at"]
            else ("expired" if seconds(r["expires_at"]) < time.time() else "active")
        )
        click.echo(
            f"{r['id']:32}  {r['role']:6}  {state:8}  {_ts(r['expires_at']):20}  {r['name']}"
        )


@token_group.command("revoke")
@click.argument("token_id")
@client_options
def revoke(token_id: str, url: str, client_data_dir: Path, token: str | None) -> None:
    """Revoke a token by id (effective on its next call)."""
    record = Api(url, token, client_data_dir).request("DELETE", f"/api/v1/tokens/{token_id}")
    click.echo(f"revoked {record['id']} ({record['name']})")


def _row_filters(items: tuple[str, ...]) -> dict[str, str] | None:
    """`schema.table=condition` options as the REST body's row_filters."""
    out: dict[str, str] = {}
    for item in items:
        table, sep, condition = item.partition("=")
        if not sep or not table.strip() or not condition.strip():
            raise click.BadParameter(f"expected SCHEMA.TABLE=CONDITION, got {item!r}")
        out[table.strip()] = condition.strip()
    return out or None


def _column_masks(items: tuple[str, ...]) -> dict[str, dict[str, str]] | None:
    """`schema.table.column=kind` options as the REST body's column_masks."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, kind = item.partition("=")
        table, dot, column = target.strip().rpartition(".")
        if not sep or not dot or not table or not column:
            raise click.BadParameter(f"expected SCHEMA.TABLE.COLUMN=MASK, got {item!r}")
        out.setdefault(table, {})[column] = kind.strip()
    return out or None


def _ts(t: str | float) -> str:
    """A REST timestamp (RFC 3339) to the second."""
    return short(t)
