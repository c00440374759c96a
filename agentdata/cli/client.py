"""A small REST client for the CLI commands that talk to a running server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: URL schemes of the control plane (REST) and of Flight.
HTTP_SCHEMES = ("http", "https")
FLIGHT_SCHEMES = ("grpc", "grpc+tcp", "grpc+tls", "grpc+unix")


class BadArgument(click.ClickException):
    """A bad option value: one line on stderr (no usage block), exit status 2."""

    exit_code = 2


def check_url(url: str, schemes: tuple[str, ...], option: str) -> None:
    """Refuse a URL of the wrong kind with one line naming the option and what it takes."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in schemes or not rest:
        wanted = " or ".join(f"{s}://" for s in schemes[:3])
        hint = (
            " (that is the REST URL: Flight is grpc://host:8815)" if scheme in HTTP_SCHEMES else ""
        )
        if schemes == HTTP_SCHEMES and scheme.startswith("grpc"):
            hint = " (that is the Flight URL: REST is http://host:8000)"
        raise BadArgument(f"{option} {url!r}: expected a URL starting {wanted}{hint}")


def one_line(error: BaseException) -> str:
    """A client library's error as one line: no gRPC debug context, no server detail."""
    text = str(error)
    for marker in (". Detail:", ". gRPC client debug context:", "\ngRPC client debug context"):
        text = text.split(marker, 1)[0]
    return " ".join(text.split()) or type(error).__name__


def client_options(func: Any) -> Any:
    """--url and --token, shared by every client command."""
    func = click.option(
        "--token",
        envvar="AGENTDATA_TOKEN",
        default=None,
        help="Bearer token [env: AGENTDATA_TOKEN; default: the admin token file in --data-dir].",
    )(func)
    func = click.option(
        "--data-dir",
        "client_data_dir",
        envvar="AGENTDATA_DATA_DIR",
        default="./data",
        type=click.Path(path_type=Path),
        help="Where to find admin.token when --token is not given [env: AGENTDATA_DATA_DIR].",
    )(func)
    func = click.option(
        "--url",
        envvar="AGENTDATA_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Control plane URL [env: AGENTDATA_URL].",
    )(func)
    return func


class Api:
    """REST calls with the token attached; problem+json errors become click errors."""

    def __init__(self, url: str, token: str | None, data_dir: Path) -> None:
        if token is None:
            env_admin = os.environ.get("AGENTDATA_ADMIN_TOKEN")
            token_file = data_dir / "admin.token"
            if env_admin:
                token = env_admin
            elif token_file.exists():
                token = token_file.read_text().strip()
            else:
                raise click.UsageError(
                    "no token: pass --token, set AGENTDATA_TOKEN, or run where admin.token is"
                )
        check_url(url, HTTP_SCHEMES, "--url")
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def close(self) -> None:
        """Close the connection pool (a CLI command's process exit does it otherwise)."""
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise click.ClickException(f"cannot reach {self.url}: {one_line(e)}") from None
        if response.status_code >= 400:
            raise click.ClickException(problem_message(response))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content


def problem_message(response: httpx.Response) -> str:
    """An error response as one line: the problem's detail, which starts with its [code]."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    code = body.get("code", response.status_code)
    detail = str(body.get("detail", ""))
    return detail if detail.startswith(f"[{code}]") else f"[{code}] {detail}"
