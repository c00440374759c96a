"""`agentdata job ls|show|cancel`, and `wait_for_job`, the progress bar other commands
(e.g. `agentdata export`) use while a job runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from agentdata.cli.client import Api, client_options
from agentdata.tasks import JOB_KINDS
from agentdata.timestamps import seconds, short

FINISHED = ("succeeded", "failed", "cancelled")


def wait_for_job(
    api: Api,
    job_id: str,
    *,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    progress: bool = True,
    raise_on_failure: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """Poll a job until it finishes, showing its progress on stderr when it is a
    terminal: a bar with the percentage once the job knows its total, and always its
    state, rows and bytes so far. Returns the final job record.

    `label` names what the user asked for (`export orders.csv`, `sync orders`);
    default `job <id>`. With `raise_on_failure`, a failed or cancelled job becomes a
    click error that names the failing step. Ctrl-C stops waiting (the job keeps
    running) and says how to cancel it.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar = tqdm(
        total=100.0,
        desc=label or f"job {job_id[:8]}",
        bar_format="{desc}: queued",
        disable=None if progress else True,
        file=sys.stderr,
    )
    try:
        while True:
            job = api.request("GET", f"/api/v1/jobs/{job_id}")
            _update_bar(bar, job)
            if job["state"] in FINISHED:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(
                    f"job {job_id} still {job['state']} after {timeout_s:g} s"
                )
            time.sleep(poll_s)
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"\nstopped waiting; job {job_id} keeps running "
            f"(cancel it with: agentdata job cancel {job_id})",
            err=True,
        )
        raise SystemExit(130) from None
    finally:
        bar.close()
    if raise_on_failure and job["state"] != "succeeded":
        raise click.ClickException(describe_failure(job))
    return job  # type: ignore[no-any-return]


def describe_failure(job: dict[str, Any]) -> str:
    """One line saying how a job ended badly, naming the step and error code."""
    if job["state"] == "cancelled":
        return f"job {job['id']} was cancelled"
    err = job.get("error") or {}
    return (
        f"job {job['id']} {job['state']} at step {err.get('step', '?')}: "
        f"{err.get('code', '?')}: {err.get('message', '')}"
    )


def _update_bar(bar: tqdm, job: dict[str, Any]) -> None:
    """Redraw the line: `LABEL:  42%|████      | running, 420,000 rows, 12.3 MiB` once
    the job knows its percentage, `LABEL: running, 420,000 rows, 12.3 MiB` before."""
    percent = 100.0 if job["state"] == "succeeded" else job.get("percent")
    status = progress_text(job).replace("{", "{{").replace("}", "}}")
    if percent is None:
        bar.bar_format = "{desc}: " + status
    else:
        bar.n = float(percent)
        bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| " + status
    bar.refresh()


def progress_text(job: dict[str, Any]) -> str:
    """State, then rows and bytes once there are any: `running, 1,200 rows, 0.1 MiB`."""
    parts = [str(job["state"])]
    rows, nbytes = job.get("progress_rows") or 0, job.get("progress_bytes") or 0
    if rows or nbytes:
        parts += [f"{rows:,} rows", f"{nbytes / 1048576:,.1f} MiB"]
    return ", ".join(parts)


@click.group("job")
def job_group() -> None:
    """List, inspect and cancel jobs (exports, syncs, maintenance runs)."""


@job_group.command("ls")
@click.option("--kind", type=click.Choice(JOB_KINDS), default=None)
@click.option(
    "--state",
    type=click.Choice(["queued", "running", "retrying", "succeeded", "failed", "cancelled"]),
    default=None,
)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@client_options
def ls(
    kind: str | None,
    state: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """List jobs, newest first."""
    params = {"kind": kind, "state": state, "limit": limit, "offset": offset}
    page = Api(url, token, client_data_dir).request(
        "GET", "/api/v1/jobs", params={k: v for k, v in params.items() if v is not None}
    )
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{'ID':32}  {'KIND':11}  {'STATE':9}  {'CREATED':20}  {'ROWS':>12}  PROGRESS")
    for j in page["items"]:
        pct = f"{j['percent']:.0f}%" if j["percent"] is not None else "-"
        click.echo(
            f"{j['id']:32}  {j['kind']:11}  {j['state']:9}  {_ts(j['created_at']):20}"
            f"  {j['progress_rows']:>12,}  {pct}"
        )
    shown = offset + len(page["items"])
    if shown < page["total"]:
        click.echo(f"# {shown} of {page['total']}; more with --offset {shown}", err=True)


@job_group.command("show")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait (with a progress bar) until the job finishes.")
@click.option("--json", "as_json", is_flag=True)
@client_options
def show(
    job_id: str, wait: bool, as_json: bool, url: str, client_data_dir: Path, token: str | None
) -> None:
    """Show one job: state, progress, result or the failing step."""
    api = Api(url, token, client_data_dir)
    if wait:
        job = wait_for_job(api, job_id, raise_on_failure=False)
    else:
        job = api.request("GET", f"/api/v1/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    click.echo(f"id:        {job['id']}")
    click.echo(f"kind:      {job['kind']}")
    pending_cancel = job["cancel_requested"] and job["state"] not in FINISHED
    click.echo(f"state:     {job['state']}" + (" (cancel requested)" if pending_cancel else ""))
    click.echo(f"attempts:  {job['attempts']}")
    pct = f", {job['percent']:.1f}%" if job["percent"] is not None else ""
    click.echo(f"progress:  {job['progress_rows']:,} rows, {job['progress_bytes']:,} bytes{pct}")
    click.echo(f"created:   {_ts(job['created_at'])}")
    if job["started_at"]:
        click.echo(f"started:   {_ts(job['started_at'])}")
    if job["finished_at"]:
        click.echo(f"finished:  {_ts(job['finished_at'])}")
    if job["result"]:
        click.echo(f"result:    {json.dumps(job['result'])}")
    if job["error"]:
        e = job["error"]
        click.echo(f"error:     step {e.get('step')}: {e.get('code')}: {e.get('message')}")
    for line in attempt_lines(job):
        click.echo(line)
    if wait and job["state"] != "succeeded":
        sys.exit(1)


@job_group.command("cancel")
@click.argument("job_id")
@client_options
def cancel(job_id: str, url: str, client_data_dir: Path, token: str | None) -> None:
    """Cancel a job: a queued one at once, a running one at its next progress report."""
    job = Api(url, token, client_data_dir).request("DELETE", f"/api/v1/jobs/{job_id}")
    if job["state"] == "cancelled":
        click.echo(f"cancelled {job_id}")
    else:
        click.echo(f"cancel requested for {job_id} ({job['state']}; it stops at its next report)")


def attempt_lines(job: dict[str, Any]) -> list[str]:
    """The job's attempt history, one line per attempt (none for a single clean run)."""
    history = job.get("attempt_history") or []
    if len(history) < 2 and not any(a.get("error") for a in history):
        return []
    lines = ["history:"]
    for a in history:
        took = ""
        if a.get("ended_at"):
            took = f" ({seconds(a['ended_at']) - seconds(a['started_at']):.1f}s)"
        line = f"  attempt {a['attempt']}: {a['outcome']} at {_ts(a['started_at'])}{took}"
        e = a.get("error")
        if e:
            line += f", step {e.get('step')}: {e.get('code')}: {e.get('message')}"
        lines.append(line)
    return lines


def _ts(t: str | float) -> str:
    """A REST timestamp (RFC 3339) to the second."""
    return short(t)
