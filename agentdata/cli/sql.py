"""`agentdata sql`: run one query over Flight and print the result."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from agentdata.cli.client import FLIGHT_SCHEMES, check_url, one_line


@click.command("sql")
@click.argument("query")
@click.option(
    "--flight-url",
    envvar="AGENTDATA_FLIGHT_URL",
    default="grpc://127.0.0.1:8815",
    show_default=True,
)
@click.option(
    "--token", envvar="AGENTDATA_TOKEN", default=None, help="Bearer token [env: AGENTDATA_TOKEN]."
)
@click.option(
    "--data-dir", envvar="AGENTDATA_DATA_DIR", default="./data", type=click.Path(path_type=Path)
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--max-print", type=int, default=50, show_default=True, help="Rows to print in table format."
)
def sql_command(
    query: str, flight_url: str, token: str | None, data_dir: Path, fmt: str, max_print: int
) -> None:
    """Run QUERY and print the result (table, CSV or JSON lines)."""
    import pyarrow.csv as pacsv
    import pyarrow.flight as fl

    if token is None:
        token = os.environ.get("AGENTDATA_ADMIN_TOKEN")
        if token is None and (data_dir / "admin.token").exists():
            token = (data_dir / "admin.token").read_text().strip()
    if token is None:
        raise click.UsageError("no token: pass --token or set AGENTDATA_TOKEN")
    check_url(flight_url, FLIGHT_SCHEMES, "--flight-url")
    options = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    try:
        client = fl.connect(flight_url)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(query.encode()), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        table = reader.read_all()
    except fl.FlightUnavailableError as e:
        raise click.ClickException(f"cannot reach {flight_url}: {one_line(e)}") from None
    except Exception as e:  # pyarrow maps some codes to ArrowInvalid/ArrowKeyError
        raise click.ClickException(one_line(e)) from None
    if fmt == "csv":
        pacsv.write_csv(table, sys.stdout.buffer)
    elif fmt == "json":
        for row in table.to_pylist():
            click.echo(_json(row))
    else:
        click.echo(
            table.slice(0, max_print).to_pandas().to_string() if table.num_rows else "(no rows)"
        )
        if table.num_rows > max_print:
            click.echo(f"... {table.num_rows - max_print} more rows")


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row, default=str)
