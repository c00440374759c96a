"""`agentdata sync add|ls|run|status|rm`: Snowflake syncs through the REST API (admin).

    agentdata sync add orders --source SHOP.PUBLIC.ORDERS --target sales.orders \\
        --mode incremental --cursor UPDATED_AT --lookback "1 hour" --primary-key ID \\
        --deletes reconcile --schedule 15m --null-cursor skip --column-type ID=BIGINT
    agentdata sync add --file syncs.yaml          # every spec in a YAML file
    agentdata sync ls
    agentdata sync run orders                     # waits, with a progress bar
    agentdata sync run orders --full --no-wait    # prints the job id
    agentdata sync status orders

`run` waits for the job like `agentdata job show --wait` (rows and bytes loaded as it
goes) and prints what the run did; a failed run exits non-zero naming the step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from agentdata.cli.client import Api, client_options
from agentdata.cli.jobs import attempt_lines, wait_for_job


@click.group("sync")
def sync_group() -> None:
    """Snowflake syncs: create specs, list them, run them, see how they went."""


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _number_or_text(value: str | None) -> str | int | float | None:
    if value is None:
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@sync_group.command("add")
@click.argument("name", required=False)
@click.option("--source", help="DB.SCHEMA.TABLE, or a SELECT statement run in Snowflake.")
@click.option("--target", help="schema.table in agentdata.")
@click.option("--mode", type=click.Choice(["full", "incremental"]), default=None)
@click.option("--cursor", help="Incremental: the column whose maximum is the watermark.")
@click.option("--lookback", help="Incremental: re-read this much before the watermark.")
@click.option("--primary-key", help="Comma-separated key columns: merge (upsert) on them.")
@click.option("--schedule", help="Every N s/m/h/d (e.g. 15m), or a cron line.")
@click.option("--deletes", type=click.Choice(["off", "reconcile"]), default=None)
@click.option("--reconcile-every", type=int, default=None, help="Reconcile every Nth run.")
@click.option("--on-incompatible", type=click.Choice(["fail", "resync"]), default=None)
@click.option(
    "--on-duplicate-key",
    type=click.Choice(["fold", "error"]),
    default=None,
    help="Rows of one run sharing a key: keep the latest (fold) or fail the run (error).",
)
@click.option(
    "--null-cursor",
    type=click.Choice(["include", "skip", "error"]),
    default=None,
    help="Rows whose cursor is NULL (default: include with a key, error without).",
)
@click.option(
    "--column-type",
    "column_type",
    multiple=True,
    metavar="COLUMN=TYPE",
    help="Load a NUMBER column as another numeric type, e.g. ID=BIGINT (repeatable).",
)
@click.option(
    "--file",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with a list of specs (or syncs: [...]) instead of options.",
)
@click.option("--json", "as_json", is_flag=True)
@client_options
def add(
    name: str | None,
    source: str | None,
    target: str | None,
    mode: str | None,
    cursor: str | None,
    lookback: str | None,
    primary_key: str | None,
    schedule: str | None,
    deletes: str | None,
    reconcile_every: int | None,
    on_incompatible: str | None,
    on_duplicate_key: str | None,
    null_cursor: str | None,
    column_type: tuple[str, ...],
    spec_file: Path | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Create a sync spec (NAME with options, or every spec in --file)."""
    api = Api(url, token, client_data_dir)
    if spec_file is not None:
        specs = _read_specs(spec_file)
    else:
        if not (name and source and target):
            raise click.UsageError("give NAME, --source and --target (or --file)")
        spec: dict[str, Any] = {
            "name": name,
            "source": source,
            "target": target,
            "mode": mode,
            "cursor": cursor,
            "lookback": _number_or_text(lookback),
            "primary_key": _split(primary_key),
            "schedule": _number_or_text(schedule),
            "deletes": deletes,
            "reconcile_every": reconcile_every,
            "on_incompatible": on_incompatible,
            "on_duplicate_key": on_duplicate_key,
            "null_cursor": null_cursor,
            "column_types": _column_types(column_type),
        }
        specs = [{k: v for k, v in spec.items() if v is not None}]
    created = [api.request("POST", "/api/v1/syncs", json=s) for s in specs]
    if as_json:
        click.echo(json.dumps(created, indent=2))
        return
    for record in created:
        s = record["spec"]
        click.echo(f"created sync {s['name']}: {s['source']} -> {s['target']} ({s['mode']})")


def _column_types(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        column, sep, type_ = pair.partition("=")
        if not sep or not column.strip() or not type_.strip():
            raise click.BadParameter(f"{pair!r}: give COLUMN=TYPE", param_hint="--column-type")
        out[column.strip()] = type_.strip()
    return out


def _read_specs(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise click.ClickException(f"cannot read {path}: {e}") from None
    items = doc.get("syncs", []) if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise click.ClickException(f"{path} must hold a list of specs (or syncs: [...])")
    return items


@sync_group.command("ls")
@click.option("--json", "as_json", is_flag=True)
@client_options
def ls(as_json: bool, url: str, client_data_dir: Path, token: str | None) -> None:
    """List sync specs with their schedule and last run."""
    items = Api(url, token, client_data_dir).request("GET", "/api/v1/syncs")["items"]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    click.echo(f"{'NAME':20}  {'TARGET':28}  {'MODE':11}  {'SCHEDULE':10}  {'RUNS':>5}  LAST RUN")
    for item in items:
        s = item["spec"]
        last = item.get("last_job") or {}
        state = last.get("state", "-")
        if item.get("running_job_id"):
            state = f"{state} (job {item['running_job_id'][:8]})"
        schedule = "-" if s.get("schedule") in (None, "") else str(s["schedule"])
        if not s.get("enabled", True):
            schedule += " (off)"
        click.echo(
            f"{s['name']:20}  {s['target']:28}  {s['mode']:11}  {schedule:10}  "
            f"{item['runs']:>5}  {state}"
        )


@sync_group.command("run")
@click.argument("name")
@click.option("--full", is_flag=True, help="Reload the whole table (stage and swap).")
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this long (s).")
@click.option("--json", "as_json", is_flag=True, help="Print the finished job as JSON.")
@client_options
def run(
    name: str,
    full: bool,
    no_wait: bool,
    timeout: float | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Run a sync now and wait for it, with a progress bar."""
    api = Api(url, token, client_data_dir)
    accepted = api.request("POST", f"/api/v1/syncs/{name}/run", json={"full": full})
    job_id = accepted["job_id"]
    if no_wait:
        click.echo(job_id)
        return
    click.echo(f"sync {name}: job {job_id} queued", err=True)
    job = wait_for_job(api, job_id, timeout_s=timeout, label=f"sync {name}")
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo(_summary(name, job))


def _summary(name: str, job: dict[str, Any]) -> str:
    r = job.get("result") or {}
    plan = r.get("plan") or {}
    parts = [
        f"sync {name}: {plan.get('mode', '?')} run {r.get('run', '?')} "
        f"({plan.get('load', '?')}), {r.get('rows_loaded', 0):,} rows loaded "
        f"into {r.get('target', '?')} in {r.get('seconds', 0):.1f}s"
    ]
    if r.get("deleted_rows"):
        parts.append(f"{r['deleted_rows']:,} rows deleted (gone from the source)")
    if r.get("duplicates_folded"):
        parts.append(f"{r['duplicates_folded']:,} duplicate-key rows folded (one row per key kept)")
    nc = r.get("null_cursor")
    if nc:
        verb = {"include": "re-read and merged", "skip": "left out", "error": "found"}
        parts.append(
            f"NULL cursor {nc['column']}: {nc['rows']:,} rows {verb.get(nc['policy'], '')} "
            f"(null_cursor: {nc['policy']})"
        )
    constraints = r.get("constraints") or {}
    if constraints.get("primary_key") or constraints.get("not_null"):
        key = ", ".join(constraints.get("primary_key") or []) or "none"
        parts.append(
            f"constraints: primary key ({key}); NOT NULL: "
            + (", ".join(constraints.get("not_null") or []) or "none")
        )
    changes = r.get("schema_changes") or {}
    for key in ("added", "widened", "missing"):
        if changes.get(key):
            parts.append(f"columns {key}: {', '.join(changes[key])}")
    if plan.get("resync_reason"):
        parts.append(f"full reload: {plan['resync_reason']}")
    if job.get("attempts", 1) > 1:
        parts.append(f"succeeded on attempt {job['attempts']}")
    return "\n".join(parts)


@sync_group.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@client_options
def status(name: str, as_json: bool, url: str, client_data_dir: Path, token: str | None) -> None:
    """Show a spec and how its last run went (state, progress, error with its step)."""
    record = Api(url, token, client_data_dir).request("GET", f"/api/v1/syncs/{name}")
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    s = record["spec"]
    click.echo(f"name:      {s['name']} ({record['origin']})")
    click.echo(f"source:    {s['source']}")
    click.echo(f"target:    {s['target']}")
    mode = s["mode"]
    if mode == "incremental":
        mode += f" on {s['cursor']}" + (f", lookback {s['lookback']}" if s.get("lookback") else "")
    click.echo(f"mode:      {mode}")
    if s.get("primary_key"):
        click.echo(f"key:       {', '.join(s['primary_key'])}")
    click.echo(f"dup keys:  {s.get('on_duplicate_key', 'fold')}")
    if s.get("mode") == "incremental":
        default = "include" if s.get("primary_key") else "error"
        click.echo(f"nulls:     null_cursor {s.get('null_cursor') or f'{default} (default)'}")
    if s.get("column_types"):
        shown = ", ".join(f"{k}={v}" for k, v in s["column_types"].items())
        click.echo(f"types:     {shown}")
    click.echo(
        f"deletes:   {s['deletes']}"
        + (f" (every {s['reconcile_every']} runs)" if s["deletes"] == "reconcile" else "")
    )
    schedule = s.get("schedule")
    click.echo(
        f"schedule:  {schedule if schedule not in (None, '') else '-'}"
        + ("" if s.get("enabled", True) else " (disabled)")
    )
    click.echo(f"runs:      {record['runs']}")
    last = record.get("last_job")
    if not last:
        return
    click.echo(f"last job:  {last['id']} {last['state']} (attempts {last['attempts']})")
    for line in attempt_lines(last):
        click.echo(line)
    click.echo(f"progress:  {last['progress_rows']:,} rows, {last['progress_bytes']:,} bytes")
    if last.get("error"):
        e = last["error"]
        click.echo(f"error:     step {e.get('step')}: {e.get('code')}: {e.get('message')}")
    if last.get("result"):
        click.echo(_summary(s["name"], {**last, "result": last["result"]}))


@sync_group.command("rm")
@click.argument("name")
@client_options
def rm(name: str, url: str, client_data_dir: Path, token: str | None) -> None:
    """Delete a sync spec (the table and past jobs stay)."""
    Api(url, token, client_data_dir).request("DELETE", f"/api/v1/syncs/{name}")
    click.echo(f"deleted sync {name}")
