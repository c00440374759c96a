"""Deployment tests: docker-compose.yml, the Dockerfile, TLS and the docs, checked against
the project itself (Docker does not run here, so the files are read and their commands,
variables and health checks are exercised against real processes).

Shared helpers for reading the deployment files live here.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

#: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`.
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (YAML merge keys resolved)."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Resolve compose `${...}` references like compose does: from `env`, else the default.

    `${VAR:?message}` without a value in `env` becomes `<VAR>`, a stand-in for the
    secret the user must supply. `$$` is compose's escaped dollar.
    """
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return interpolate(arg or "", env)
        return f"<{name}>"

    return INTERPOLATION.sub(one, value).replace("$$", "$")


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    """A service's health check as the argv Docker runs (CMD-SHELL goes through sh)."""
    test = service["healthcheck"]["test"]
    kind, *rest = [interpolate(str(part)) for part in test]
    if kind == "CMD-SHELL":
        return ["sh", "-c", " ".join(rest)]
    assert kind == "CMD", f"unexpected health check form {kind}"
    return rest


API_DOC = REPO / "docs" / "api.md"
README = REPO / "README.md"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"

#: `<!-- example: KIND -->` on the line before a ```python block says where it runs.
_EXAMPLE = re.compile(r"<!-- example: (?P<kind>[a-z]+) -->\n```python\n(?P<code>.*?)\n```", re.S)


#: Any marked ```sh or ```python block: `<!-- example: KIND -->` or
#: `<!-- example: skip (why it cannot run here) -->`.
_MARKED = re.compile(
    r"<!-- example: (?P<kind>[a-z]+)(?: \((?P<why>[^)]*)\))? -->\n"
    r"```(?P<lang>sh|python)\n(?P<code>.*?)\n```",
    re.S,
)


@dataclass(frozen=True)
class Example:
    kind: str  # shell, python, plain (api.md), tls, mtls, skip
    lang: str  # sh or python
    code: str


def marked_examples(doc: Path) -> list[Example]:
    """Every marked shell and Python block of `doc`, in document order."""
    return [Example(m["kind"], m["lang"], m["code"]) for m in _MARKED.finditer(doc.read_text())]


def code_blocks(doc: Path) -> int:
    """How many ```sh and ```python blocks `doc` has (each needs a marker)."""
    return len(re.findall(r"^```(?:sh|python)$", doc.read_text(), re.M))


def doc_examples(kind: str) -> list[str]:
    """The Python examples of docs/api.md meant to run against a server of `kind`."""
    return [m.group("code") for m in _EXAMPLE.finditer(API_DOC.read_text()) if m["kind"] == kind]


def run_example(code: str, *, flight_port: int, http_port: int) -> str:
    """Run one example as a reader would (its own namespace), on the given ports; its output."""
    import contextlib
    import io

    code = code.replace("127.0.0.1:8815", f"127.0.0.1:{flight_port}")
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{http_port}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(API_DOC), "exec"), {"__name__": "__example__"})
    return out.getvalue()


def lock_pins() -> dict[str, str]:
    """requirements.lock as {canonical name: version}."""
    pins: dict[str, str] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def runtime_requirements() -> list[str]:
    """pyproject's runtime dependencies: what the image installs (pinned by the lock)."""
    return list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def dependency_closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, extras and markers evaluated."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for dep in metadata.requires(name) or []:
            dep_req = Requirement(dep)
            if dep_req.marker is None or dep_req.marker.evaluate({"extra": ""}):
                todo.append((dep_req, ""))
            else:
                for wanted in req.extras:
                    if dep_req.marker.evaluate({"extra": wanted}):
                        todo.append((dep_req, wanted))
    return {key.split("[")[0] for key in seen}
