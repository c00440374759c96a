"""`agentdata artefact upload|download|ls|rm|usage`: REST clients with progress bars.

Uploads stream the file from disk in a hand-built multipart body (so nothing is held
in memory and Content-Length is exact) and send its SHA-256, which the server checks.
Downloads stream to `<out>.part`, verify the SHA-256 against the artefact's record,
then rename; an interrupted download resumes from the `.part` file with a Range
request (If-Range guards against the artefact having changed).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import click
import httpx
from tqdm import tqdm

from agentdata.cli.client import Api, client_options, problem_message
from agentdata.timestamps import short

_CHUNK = 1024 * 1024


@click.group("artefact")
def artefact_group() -> None:
    """Upload, download, list and delete artefacts (files and export results)."""


# -- upload ----------------------------------------------------------------------
@artefact_group.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Name to store (default: the file's name).")
@click.option("--content-type", default=None, help="Media type (default: guessed from the name).")
@click.option("--expires-in", type=int, default=None, help="Expire after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the artefact's JSON record.")
@client_options
def upload(
    path: Path,
    name: str | None,
    content_type: str | None,
    expires_in: int | None,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Upload PATH; prints the new artefact's id."""
    import mimetypes

    api = Api(url, token, client_data_dir)
    size = path.stat().st_size
    limits = api.request("GET", "/api/v1/artefacts/usage")
    if size > limits["max_upload_bytes"]:
        raise click.ClickException(
            f"{path} has {size} bytes; the server accepts at most {limits['max_upload_bytes']}"
        )
    digest = _sha256_file(path, size, "hashing")
    ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    fields = {"expires_in_s": str(expires_in)} if expires_in is not None else {}
    body = MultipartFile(path, name or path.name, ctype, fields)
    with _bar(size, f"uploading {path.name}") as bar:
        response = _send(
            api,
            "POST",
            "/api/v1/artefacts",
            content=body.iter(bar.update),
            headers={
                "Content-Type": body.content_type,
                "Content-Length": str(body.length),
                "X-Checksum-SHA256": digest,
            },
            timeout=httpx.Timeout(60, read=600),
        )
    record = response.json()
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(record["id"])
        click.echo(
            f"# {record['name']}: {_human(record['size'])}, sha256 {record['sha256']}", err=True
        )


class MultipartFile:
    """A multipart/form-data body with one file part, streamed from disk."""

    def __init__(self, path: Path, name: str, content_type: str, fields: dict[str, str]) -> None:
        self.path = path
        self.boundary = "agentdata-" + uuid.uuid4().hex
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        quoted = (
            name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        )
        head += (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self.head = head
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(head) + path.stat().st_size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def iter(self, progress: Any) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as f:
            while chunk := f.read(_CHUNK):
                progress(len(chunk))
                yield chunk
        yield self.tail


# -- download --------------------------------------------------------------------
@artefact_group.command("download")
@click.argument("artefact_id")
@click.option(
    "-o",
    "--output",
    default=None,
    help="File to write ('-' for stdout; default: the artefact's name in this directory).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@client_options
def download(
    artefact_id: str,
    output: str | None,
    force: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """Download an artefact, verifying its SHA-256 (resumes an interrupted download)."""
    api = Api(url, token, client_data_dir)
    meta = api.request("GET", f"/api/v1/artefacts/{artefact_id}")
    if output == "-":
        _download_to(api, meta, sys.stdout.buffer, offset=0, digest=hashlib.sha256(), label="-")
        return
    out = Path(output) if output else Path(meta["name"])
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists (use --force to overwrite)")
    part = out.with_name(out.name + ".part")
    digest = hashlib.sha256()
    offset = 0
    if part.exists() and part.stat().st_size <= meta["size"]:
        offset = part.stat().st_size
        digest = _hash_into(part, digest)
    with open(part, "ab" if offset else "wb") as f:
        _download_to(api, meta, f, offset=offset, digest=digest, label=str(out))
    os.replace(part, out)
    click.echo(f"{out}: {_human(meta['size'])}, sha256 verified", err=True)


def _download_to(
    api: Api, meta: dict[str, Any], sink: BinaryIO, *, offset: int, digest: Any, label: str
) -> None:
    """Stream the artefact into `sink` with a bar named `label` (the file the user asked
    for; `-` for stdout), checking its SHA-256."""
    headers = {}
    if offset:
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{meta["sha256"]}"'}
    path = f"/api/v1/artefacts/{meta['id']}/content"
    with api.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(60)) as response:
        _check(response)
        if response.status_code == 200 and offset:  # the server sent it all again
            sink.seek(0)
            sink.truncate()
            digest, offset = hashlib.sha256(), 0
        with _bar(meta["size"], f"downloading {label}", initial=offset) as bar:
            for chunk in response.iter_bytes(_CHUNK):
                sink.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    sink.flush()
    if digest.hexdigest() != meta["sha256"]:
        raise click.ClickException(
            f"checksum mismatch: got {digest.hexdigest()}, expected {meta['sha256']}"
        )


# -- ls, rm, usage -------------------------------------------------------------------
@artefact_group.command("ls")
@click.option("--source", type=click.Choice(["upload", "export"]), default=None)
@click.option("--name", "name_prefix", default=None, help="Name prefix.")
@click.option("--owner", default=None, help="Owner token id (admins only).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@client_options
def ls(
    source: str | None,
    name_prefix: str | None,
    owner: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    url: str,
    client_data_dir: Path,
    token: str | None,
) -> None:
    """List artefacts, newest first."""
    params = {
        "limit": limit,
        "offset": offset,
        "source": source,
        "name": name_prefix,
        "owner": owner,
    }
    page = Api(url, token, client_data_dir).request(
        "GET", "/api/v1/artefacts", params={k: v for k, v in params.items() if v is not None}
    )
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(f"{'ID':32}  {'SIZE':>9}  {'SOURCE':6}  {'CREATED':20}  {'EXPIRES':20}  NAME")
    for a in page["items"]:
        expires = _ts(a["expires_at"]) if a["expires_at"] else "-"
        click.echo(
            f"{a['id']:32}  {_human(a['size']):>9}  {a['source']:6}  {_ts(a['created_at']):20}"
            f"  {expires:20}  {a['name']}"
        )
    shown = offset + len(page["items"])
    if shown < page["total"]:
        click.echo(f"# {shown} of {page['total']}; more with --offset {shown}", err=True)


@artefact_group.command("rm")
@click.argument("artefact_ids", nargs=-1, required=True)
@client_options
def rm(artefact_ids: tuple[str, ...], url: str, client_data_dir: Path, token: str | None) -> None:
    """Delete artefacts (file and record) by id."""
    api = Api(url, token, client_data_dir)
    for artefact_id in artefact_ids:
        api.request("DELETE", f"/api/v1/artefacts/{artefact_id}")
        click.echo(f"deleted {artefact_id}")


@artefact_group.command("usage")
@click.option("--json", "as_json", is_flag=True)
@client_options
def usage(as_json: bool, url: str, client_data_dir: Path, token: str | None) -> None:
    """Space used per owner and in total, against the quota."""
    u = Api(url, token, client_data_dir).request("GET", "/api/v1/artefacts/usage")
    if as_json:
        click.echo(json.dumps(u, indent=2))
        return
    quota = _human(u["quota_bytes"]) if u["quota_bytes"] else "none"
    click.echo(f"{'OWNER':32}  {'COUNT':>6}  {'BYTES':>9}  QUOTA {quota}")
    for o in u["owners"]:
        click.echo(f"{o['owner'] or '-':32}  {o['count']:>6}  {_human(o['bytes']):>9}")
    t = u["total"]
    click.echo(
        f"{'total':32}  {t['count']:>6}  {_human(t['bytes']):>9}"
        f"  ({t['expired_count']} expired, {_human(t['expired_bytes'])}, awaiting cleanup)"
    )


# -- helpers ----------------------------------------------------------------------
def _bar(total: int, desc: str, initial: int = 0) -> tqdm:
    # disable=None: no bar when stderr is not a terminal (scripts, pipes, CI logs).
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=None,
        file=sys.stderr,
    )


def _sha256_file(path: Path, size: int, desc: str) -> str:
    with _bar(size, desc) as bar:
        return str(_hash_into(path, hashlib.sha256(), bar.update).hexdigest())


def _hash_into(path: Path, digest: Any, progress: Any = None) -> Any:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest


def _send(api: Api, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = api.http.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        raise click.ClickException(f"cannot reach {api.url}: {e}") from None
    _check(response)
    return response


def _check(response: httpx.Response) -> None:
    """problem+json (or any error) -> a click error naming the code."""
    if response.status_code < 400:
        return
    response.read()
    raise click.ClickException(problem_message(response))


def _human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ts(t: str | float) -> str:
    """A REST timestamp (RFC 3339) to the second."""
    return short(t)
