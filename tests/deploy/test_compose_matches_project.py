"""docker-compose.yml, the Dockerfile, .dockerignore and .env.example, checked against the project.

Docker does not run here, so each claim the files make is checked against the thing it
names: commands resolve through the real `agentdata` click group, variables are real
settings, ports and volumes are the settings' defaults, and every health check is run,
as Docker would run it, against a real process of that service (server, worker, beat,
Flower, Redis, the Snowflake emulator).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
from dotenv import dotenv_values

from agentdata.cli import cli
from agentdata.settings import Settings
from tests.deploy import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    INTERPOLATION,
    REPO,
    dependency_closure,
    healthcheck_argv,
    interpolate,
    load_compose,
    lock_pins,
    runtime_requirements,
)
from tests.support.redis_db import scratch_database
from tests.support.server import ServerProcess, free_port

#: This module's own Redis database (flushed before and after, never another's).
AGENTDATA_SERVICES = ("server", "worker", "beat", "flower")
SERVICES = {*AGENTDATA_SERVICES, "redis", "snowflake-emulator"}
SECRETS = ("AGENTDATA_ADMIN_TOKEN", "AGENTDATA_JWT_SECRET", "AGENTDATA_WORKER_TOKEN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [interpolate(a) for a in argv]


def _resolve(argv: list[str]) -> tuple[click.Command, click.Context]:
    """Resolve `agentdata ...` through the real click group, parsing every option given."""
    assert argv[0] == "agentdata", argv
    ctx = click.Context(cli, info_name="agentdata")
    command: click.Command = cli
    rest = argv[1:]
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=name, parent=ctx)
        else:
            # make_context parses and validates every option (UsageError on a bad one).
            ctx = sub.make_context(name, list(rest), parent=ctx)
        command = sub
    return command, ctx


# -- services, commands, variables -------------------------------------------------------------
def test_the_services_of_the_issue_with_the_emulator_only_in_dev(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == SERVICES
    assert services["snowflake-emulator"]["profiles"] == ["dev"]
    assert all("profiles" not in services[name] for name in SERVICES - {"snowflake-emulator"})


@pytest.mark.parametrize("name", AGENTDATA_SERVICES)
def test_service_command_is_a_real_cli_command(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    command, ctx = _resolve(_command(services[name]))
    assert command.name == {"server": "serve"}.get(name, name)
    # Options given in the compose file reached the command (nothing was silently dropped).
    if name == "worker":
        assert ctx.params["concurrency"] == 2
    if name == "flower":
        assert (ctx.params["address"], ctx.params["port"]) == ("0.0.0.0", 5555)
    if name == "beat":
        assert ctx.params["schedule_file"] == Path("/app/beat/celerybeat-schedule")
        # Passed through to Celery beat (its real effect is checked by the beat health check).
        assert ctx.params["celery_args"] == ("--enable-remote-control",)


def test_dockerfile_default_command_is_serve() -> None:
    runtime = _dockerfile().stage("runtime")
    command, _ = _resolve(runtime.exec_form("CMD"))
    assert command.name == "serve"


def _settings_env_names() -> set[str]:
    return {f"AGENTDATA_{name.upper()}" for name in Settings.model_fields}


def _snowflake_env_names() -> set[str]:
    from workers.sync.credentials import ENV_PREFIX, SnowflakeSettings

    names = {f"{ENV_PREFIX}{name.upper()}" for name in SnowflakeSettings.model_fields}
    return names | {f"{ENV_PREFIX}SCHEMA"}  # the alias of schema_name


def _flower_env_names() -> set[str]:
    from flower.options import default_options

    return {f"FLOWER_{name.upper()}" for name in default_options}


def _compose_variable_names(services: dict[str, dict[str, Any]]) -> set[str]:
    """Every variable a container gets from the compose file (keys of `environment:`)."""
    return {key for service in services.values() for key in _environment(service)}


def _env_example() -> dict[str, str | None]:
    return dotenv_values(ENV_EXAMPLE)


def _documented_in_env_example() -> set[str]:
    """Variables .env.example sets or shows commented out (`# NAME=value`)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def test_every_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    used = _compose_variable_names(services) | _documented_in_env_example()
    unknown = [
        name
        for prefix, known in (
            ("AGENTDATA_", _settings_env_names()),
            ("SNOWFLAKE_", _snowflake_env_names()),
            ("FLOWER_", _flower_env_names()),
        )
        for name in sorted(used)
        if name.startswith(prefix) and name not in known
    ]
    # pydantic-settings ignores unknown AGENTDATA_* variables, so a typo here would
    # silently do nothing in production.
    assert unknown == []
    assert {"AGENTDATA_ADMIN_TOKEN", "SNOWFLAKE_ACCOUNT", "FLOWER_BASIC_AUTH"} <= used


def test_env_example_covers_every_interpolated_variable() -> None:
    referenced = {m.group("name") for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text())}
    assert referenced, "the compose file takes its secrets from .env"
    assert referenced - _documented_in_env_example() == set()


def test_env_example_has_no_secrets_and_parses_into_the_settings(
    monkeypatch: pytest.MonkeyPatch, services: dict[str, dict[str, Any]]
) -> None:
    example = _env_example()
    for name in (*SECRETS, "FLOWER_BASIC_AUTH"):
        assert example.get(name) == "", f"{name} must be an empty placeholder"
    # Snowflake lines are all commented out: a set variable, even empty, would count as
    # given (and an empty SNOWFLAKE_PORT would not even parse).
    assert [name for name in example if name.startswith("SNOWFLAKE_")] == []
    # Required secrets are required by compose too: `${NAME:?message}`.
    compose_text = COMPOSE_FILE.read_text()
    for name in ("AGENTDATA_ADMIN_TOKEN", "FLOWER_BASIC_AUTH"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", compose_text), name

    for name in list(os.environ):
        if name.startswith(("AGENTDATA_", "SNOWFLAKE_")):
            monkeypatch.delenv(name)
    for name, value in example.items():
        if name.startswith(("AGENTDATA_", "SNOWFLAKE_")) and value is not None:
            monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.admin_token is None and settings.jwt_secret is None  # empty means unset
    assert settings.memory_limit == "2GB" and settings.demo is True

    # The commented dev lines, uncommented, point the workers at the emulator service as
    # compose runs it, with the credentials its health check uses.
    from workers.sync.credentials import SnowflakeSettings

    dev_block = ENV_EXAMPLE.read_text().split("dev emulator", 1)[1]
    dev = dict(re.findall(r"^#\s*(SNOWFLAKE_[A-Z_]+)=(\S+)", dev_block, re.M))
    assert len(dev) == 6
    for name, value in dev.items():
        monkeypatch.setenv(name, value)
    snow = SnowflakeSettings()
    kwargs = snow.connect_kwargs()  # complete: no "credentials incomplete" error
    emulator = services["snowflake-emulator"]
    command = _command(emulator)
    assert snow.host == "snowflake-emulator" and snow.protocol == "http"
    assert str(snow.port) == command[command.index("--port") + 1]
    assert "--host" in command and command[command.index("--host") + 1] == "0.0.0.0"
    probe = " ".join(emulator["healthcheck"]["test"])
    for key in ("account", "user", "password"):
        assert f"{key}='{kwargs[key]}'" in probe


def test_secrets_reach_only_the_services_that_need_them(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in AGENTDATA_SERVICES:
        assert services[name]["env_file"] == ".env"
    # Only the server signs tokens; blank values count as unset (env_ignore_empty).
    for name in ("worker", "beat", "flower"):
        assert _environment(services[name])["AGENTDATA_JWT_SECRET"] == ""
    for name in ("beat", "flower"):
        assert _environment(services[name])["AGENTDATA_ADMIN_TOKEN"] == ""


# -- ports, volumes, networks -------------------------------------------------------------------
def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from `host_ip:host:container` entries."""
    out = {}
    for entry in service.get("ports", []):
        *_, host, container = interpolate(str(entry)).rsplit(":", 2)
        out[int(container)] = int(host)
    return out


def test_ports_match_the_settings_defaults(services: dict[str, dict[str, Any]]) -> None:
    defaults = Settings.model_fields
    flight, http = defaults["flight_port"].default, defaults["http_port"].default
    assert (flight, http) == (8815, 8000)
    server_env = _environment(services["server"])
    assert server_env["AGENTDATA_FLIGHT_PORT"] == str(flight)
    assert server_env["AGENTDATA_HTTP_PORT"] == str(http)
    assert server_env["AGENTDATA_HOST"] == "0.0.0.0"
    assert _published(services["server"]) == {flight: flight, http: http}
    assert set(_dockerfile().stage("runtime").values("EXPOSE")) == {str(flight), str(http)}

    flower_default = next(
        p for p in _resolve(["agentdata", "flower"])[0].params if p.name == "port"
    )
    assert flower_default.default == 5555
    assert _published(services["flower"]) == {5555: 5555}

    # Redis is reachable only inside the project, on the port the URLs name.
    assert "ports" not in services["redis"]
    for name in AGENTDATA_SERVICES:
        assert _environment(services[name])["AGENTDATA_REDIS_URL"] == "redis://redis:6379/0"
    worker = _environment(services["worker"])
    assert worker["AGENTDATA_SERVER_URL"] == f"http://server:{http}"
    assert worker["AGENTDATA_FLIGHT_URL"] == f"grpc://server:{flight}"


def _volume_targets(service: dict[str, Any]) -> dict[str, str]:
    out = {}
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        out[source] = target
    return out


def test_data_volume_is_the_settings_data_dir(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    runtime = _dockerfile().stage("runtime")
    default_dir = PurePosixPath(runtime.workdir) / Settings.model_fields["data_dir"].default
    data_dir = str(PurePosixPath(os.path.normpath(default_dir)))
    assert data_dir == "/app/data"
    assert _environment(services["server"])["AGENTDATA_DATA_DIR"] == data_dir
    assert _volume_targets(services["server"]) == {"agentdata-data": data_dir}
    # The image creates the directory for the non-root user (a named volume copies it).
    assert any(data_dir in line and "chown" in line for line in runtime.values("RUN"))

    beat_file = PurePosixPath(_command(services["beat"])[3])
    assert _volume_targets(services["beat"]) == {"beat-schedule": str(beat_file.parent)}
    assert _volume_targets(services["redis"]) == {"redis-data": "/data"}
    assert set(compose["volumes"]) == {"agentdata-data", "beat-schedule", "redis-data"}
    # Workers reach the data only through the server (DESIGN: one owner of data.duckdb).
    for name in ("worker", "flower"):
        assert "volumes" not in services[name]


def test_redis_persists_and_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    argv = _command(services["redis"])
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--maxmemory"] == "1gb"


def test_isolated_network_and_policies(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    networks = compose["networks"]
    assert networks["backend"]["internal"] is True
    assert services["redis"]["networks"] == ["backend"]
    for name, service in services.items():
        assert "backend" in service["networks"], name
        assert service["restart"] == "unless-stopped", name
        assert "healthcheck" in service, name
        # Anything published must sit on a network with a way out.
        if "ports" in service:
            assert any(not networks[n].get("internal") for n in service["networks"]), name
        for dependency in service.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}, name
    assert set(services["worker"]["depends_on"]) == {"redis", "server"}
    assert set(services["server"]["depends_on"]) == {"redis"}


# -- the Dockerfile -------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        found = []
        for key, value in self.instructions:
            if key == keyword:
                found.extend(value.split() if keyword == "EXPOSE" else [value])
        return found

    def exec_form(self, keyword: str) -> list[str]:
        import json

        (value,) = self.values(keyword)[-1:]
        return [str(a) for a in json.loads(value)]

    @property
    def workdir(self) -> str:
        return self.values("WORKDIR")[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def lineage(self, name: str) -> list[Stage]:
        """A stage and the stages it is built FROM, nearest first."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain


def _dockerfile() -> Dockerfile:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), re.sub(r"\s+", " ", value.strip())
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", value, re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda a: args[a.group(1)], m.group(1))
            stages.append(Stage(m.group(2) or str(len(stages)), base))
        else:
            stages[-1].instructions.append((keyword, value))
    return Dockerfile(args, stages)


def _env_of(stage_chain: list[Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(stage_chain):
        for value in stage.values("ENV"):
            env.update(re.findall(r"(\w+)=(\S+)", value))
    return env


def test_dockerfile_base_env_and_user() -> None:
    dockerfile = _dockerfile()
    assert dockerfile.stages[0].base == "python:3.11-slim"
    assert dockerfile.stages[-1].name == "runtime", "the default build target is the runtime"
    for target in ("runtime", "emulator"):
        chain = dockerfile.lineage(target)
        assert chain[-1].base == "python:3.11-slim"
        env = _env_of(chain)
        assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
        user = chain[0].values("USER")[-1]
        assert user.split(":")[0] not in ("root", "0"), f"{target} runs as {user}"
    runtime = dockerfile.stage("runtime")
    assert runtime.values("USER") == ["10001:10001"]
    assert any(
        "useradd" in v and "--uid 10001" in v for v in dockerfile.stage("base").values("RUN")
    )


def test_dependencies_install_from_the_lock_before_the_source() -> None:
    dockerfile = _dockerfile()
    deps = dockerfile.stage("deps")
    copies = deps.values("COPY")
    assert copies == ["requirements.lock pyproject.toml ./"], "the deps layer sees no source"
    (install,) = [v for v in deps.values("RUN") if "pip install" in v]
    assert "-c requirements.lock" in install
    # The runtime stage takes the dependency layer first, the project's wheel after it.
    runtime_copies = dockerfile.stage("runtime").values("COPY")
    assert runtime_copies[0] == "--from=deps /opt/venv /opt/venv"
    assert runtime_copies[1].startswith("--from=wheel ")
    emulator_runs = " ".join(dockerfile.stage("emulator").values("RUN"))
    assert "-c /tmp/requirements.lock" in emulator_runs and "fakesnow[server]" in emulator_runs


def test_the_lock_pins_every_runtime_dependency_of_the_image() -> None:
    """`pip install -r <pyproject deps> -c requirements.lock` is fully pinned by the lock."""
    lock = lock_pins()
    closure = dependency_closure(runtime_requirements())
    assert {"duckdb", "pyarrow", "celery", "flower", "uvicorn"} <= closure
    assert sorted(closure - set(lock)) == []
    # ... at the versions the tests run against here.
    mismatched = {
        n: (lock[n], metadata.version(n)) for n in closure if metadata.version(n) != lock[n]
    }
    assert mismatched == {}
    assert sorted(dependency_closure(["fakesnow[server]"]) - set(lock)) == []


def _dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rules (last match wins, `!` re-includes, dirs cover contents)."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            for part in re.split(r"(\*\*)", pattern)
        )
        regex = regex.replace(".*/", "(.*/)?")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def test_build_context_has_what_the_dockerfile_copies_and_no_secrets() -> None:
    dockerfile = _dockerfile()
    sources = []
    for stage in dockerfile.stages:
        for value in stage.values("COPY"):
            if value.startswith("--from="):
                continue
            *srcs, _dest = value.split()
            sources.extend(srcs)
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not _dockerignore_excludes(src), f".dockerignore hides {src}"
    for path in (".env", ".env.prod", "data/data.duckdb", "data/admin.token", ".git/config"):
        assert _dockerignore_excludes(path), path
    for path in (".venv/bin/python", "agentdata/x/data.duckdb", "tests/conftest.py"):
        assert _dockerignore_excludes(path), path
    assert not _dockerignore_excludes(".env.example")
    assert not _dockerignore_excludes("agentdata/settings.py")
    # Nothing of a developer's machine: IDE settings, editor swap files, logs, caches.
    for path in (
        ".idea/workspace.xml",
        ".vscode/settings.json",
        "agentdata/.engine.py.swp",
        "agentdata/engine.py~",
        ".DS_Store",
        "serve.log",
        "agentdata/debug.log",
        "logs/server.txt",
        ".hypothesis/examples/x",
        ".coverage",
        "htmlcov/index.html",
        ".mypy_cache/3.11/x.json",
        "agentdata/__pycache__/engine.cpython-311.pyc",
        "data-copy/data.duckdb",
        "docker-compose.override.yml",
    ):
        assert _dockerignore_excludes(path), path

    # The wheel stage copies exactly the packages pyproject ships.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {v.split()[0] for v in dockerfile.stage("wheel").values("COPY")}
    assert shipped <= copied


def test_image_health_check_is_the_server_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    runtime = _dockerfile().stage("runtime")
    (healthcheck,) = runtime.values("HEALTHCHECK")
    import json

    image_test = json.loads(healthcheck[healthcheck.index("CMD [") + 4 :])
    assert ["CMD", *image_test] == services["server"]["healthcheck"]["test"]


# -- health checks against real processes ---------------------------------------------------------
def test_server_health_check_route_exists(tmp_path: Path) -> None:
    """The path the probe requests is a route of the control plane, answering without auth."""
    import asyncio

    import httpx

    from agentdata.core import Core
    from control_api import create_app

    probe = " ".join(load_compose()["services"]["server"]["healthcheck"]["test"])
    (path,) = re.findall(r"'(/\w+)'", probe)
    assert path == "/healthz"

    async def get(app: Any, url: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(url)

    core = Core.open(Settings(data_dir=tmp_path / "data", demo=False))
    try:
        app = create_app(core)
        assert asyncio.run(get(app, path)).json()["status"] == "ok"
        assert asyncio.run(get(app, "/no-such-route")).status_code == 404
    finally:
        core.close()


def _probe_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOSTNAME"] = socket.gethostname()  # Docker sets it in every container
    return {**env, **(extra or {})}


def _probe(
    argv: list[str], env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _wait_healthy(
    name: str,
    argv: list[str],
    env: dict[str, str],
    proc: subprocess.Popen[bytes] | None,
    log: Path | None,
) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 150
    while True:
        result = _probe(argv, env)
        if result.returncode == 0:
            return result
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{name} exited {proc.returncode}:\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{name} never became healthy: {result.stdout}{result.stderr}")
        time.sleep(1)


def test_server_health_check_passes_against_a_real_server(
    server: ServerProcess, services: dict[str, dict[str, Any]]
) -> None:
    argv = healthcheck_argv(services["server"])
    env = _probe_env({"AGENTDATA_HTTP_PORT": str(server.http_port)})
    assert _probe(argv, env).returncode == 0
    env["AGENTDATA_HTTP_PORT"] = str(free_port())
    assert _probe(argv, env).returncode != 0


def test_redis_health_check(services: dict[str, dict[str, Any]]) -> None:
    argv = healthcheck_argv(services["redis"])
    assert _probe(argv, _probe_env()).returncode == 0
    # Pointed at a port where no Redis answers, it fails.
    dead = [argv[0], argv[1], argv[2].replace("redis-cli", f"redis-cli -p {free_port()}")]
    assert _probe(dead, _probe_env()).returncode != 0


def test_emulator_health_check_passes_against_the_real_emulator(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    service = services["snowflake-emulator"]
    port = free_port()
    argv = [a if a != "8080" else str(port) for a in _command(service)]
    assert argv[:3] == ["python", "-m", "fakesnow"]
    probe = [a.replace("port=8080", f"port={port}") for a in healthcheck_argv(service)]
    assert probe != healthcheck_argv(service)
    env = _probe_env()
    log = tmp_path / "emulator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *argv[1:]], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy("snowflake-emulator", probe, env, proc, log)
    finally:
        proc.terminate()
        proc.wait(30)
    assert _probe(probe, env, timeout=60).returncode != 0


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    probe: list[str]
    env: dict[str, str]
    #: A Redis database no worker listens on (where the health probes must fail).
    empty_redis_url: str

    def wait_started(self, marker: str, timeout: float = 120) -> None:
        """Wait for the log line saying it is up (a probe then needs only one try)."""
        deadline = time.monotonic() + timeout
        while marker not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name} did not start:\n{self.log.read_text()}")
            time.sleep(0.2)


#: The log line each process writes once it is connected and serving.
STARTED = {"worker": " ready.", "beat": "beat pidbox: Connected", "flower": "Connected to redis"}


@pytest.fixture(scope="module", autouse=True)
def celery_services(
    services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Running]]:
    """worker, beat and Flower started with their compose commands and environments.

    Started with the module (autouse) so they boot while the tests above run; their
    tests come last.
    """
    stack = contextlib.ExitStack()
    redis_url = stack.enter_context(scratch_database())
    # A second, where no worker listens: the health probes must fail against it.
    empty_url = stack.enter_context(scratch_database())
    work = tmp_path_factory.mktemp("celery")
    flower_port = free_port()
    running: dict[str, Running] = {}
    try:
        for name in ("worker", "beat", "flower"):
            service = services[name]
            env = _probe_env(
                {
                    **_environment(service),
                    # What .env and the compose network provide, pointed at this machine.
                    "AGENTDATA_REDIS_URL": redis_url,
                    # (No task runs here: the server's URLs are never called.)
                    "AGENTDATA_ADMIN_TOKEN": "adt_compose_test" if name == "worker" else "",
                    "AGENTDATA_SERVER_URL": "http://127.0.0.1:9",
                    "AGENTDATA_FLIGHT_URL": "grpc://127.0.0.1:9",
                    "AGENTDATA_DATA_DIR": str(work / name / "data"),
                    "FLOWER_BASIC_AUTH": "ops:s3cret",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            argv = _command(service)
            probe = healthcheck_argv(service)
            if name == "beat":
                argv[argv.index("/app/beat/celerybeat-schedule")] = str(work / "beat-schedule")
            if name == "flower":
                argv[argv.index("5555")] = str(flower_port)
                probe = [a.replace(":5555/", f":{flower_port}/") for a in probe]
            log = work / f"{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / argv[0]), *argv[1:]],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running[name] = Running(name, proc, log, probe, env, empty_url)
        yield running
    finally:
        for item in running.values():
            if item.proc.poll() is None:
                item.proc.send_signal(signal.SIGTERM)
        for item in running.values():
            try:
                item.proc.wait(30)
            except subprocess.TimeoutExpired:
                item.proc.kill()
                item.proc.wait()
        stack.close()


@pytest.mark.parametrize("name", ["worker", "beat", "flower"])
def test_celery_service_health_check_passes_against_the_real_process(
    celery_services: dict[str, Running], name: str
) -> None:
    item = celery_services[name]
    negative = None
    if name in ("worker", "beat"):
        # The probe asks for this very node through Redis, not just any node ...
        node = ("'celery@'" if name == "worker" else "'celerybeat@'") + " + socket.gethostname()"
        assert node in item.probe[-1]
        # ... and fails where this node is not (a broker no worker listens on); started
        # now because it waits out its timeout while the service boots.
        elsewhere = {**item.env, "AGENTDATA_REDIS_URL": item.empty_redis_url}
        negative = subprocess.Popen(item.probe, env=elsewhere, cwd=REPO)
    item.wait_started(STARTED[name])
    _wait_healthy(name, item.probe, item.env, item.proc, item.log)
    if negative is not None:
        assert negative.wait(90) != 0
    if name == "flower":
        import httpx

        port = re.search(r":(\d+)/healthcheck", " ".join(item.probe))
        assert port is not None
        base = f"http://127.0.0.1:{port.group(1)}"
        assert httpx.get(f"{base}/healthcheck").text == "OK"
        # Flower itself asks for the login set in .env.
        assert httpx.get(f"{base}/").status_code == 401
        assert httpx.get(f"{base}/", auth=("ops", "s3cret")).status_code == 200
