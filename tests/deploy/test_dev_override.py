"""docker-compose.override.example.yml: the development override, checked against the
project (Docker does not run here): it names real services and settings, mounts every
package the image ships, and a process started the way it starts them imports the
mounted source, not the installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from agentdata.settings import Settings
from tests.deploy import REPO, load_compose

OVERRIDE = REPO / "docker-compose.override.example.yml"


def _override() -> dict[str, Any]:
    doc = yaml.safe_load(OVERRIDE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_override_names_real_services_and_settings() -> None:
    base = load_compose()["services"]
    services = _override()["services"]
    assert set(services) <= set(base)
    assert {"server", "worker", "beat"} <= set(services)
    known = {f"AGENTDATA_{n.upper()}" for n in Settings.model_fields}
    for name, service in services.items():
        environment = service.get("environment", {})
        assert environment.get("PYTHONPATH") == "/src", name
        assert {k for k in environment if k.startswith("AGENTDATA_")} <= known, name
        assert "command" not in service or "--reload" not in service["command"]


def test_every_shipped_package_is_mounted_read_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    for name, service in _override()["services"].items():
        mounts = {}
        for volume in service["volumes"]:
            source, target, mode = volume.split(":")
            assert mode == "ro", (name, volume)
            assert (REPO / source).is_dir(), volume
            mounts[source.removeprefix("./")] = target
        assert mounts == {p: f"/src/{p}" for p in shipped}, name


def test_the_mounted_source_is_what_gets_imported(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for volume in _override()["services"]["server"]["volumes"]:
        source, target, _ = volume.split(":")
        (src / Path(target).name).symlink_to(REPO / source)
    env = {**os.environ, "PYTHONPATH": str(src)}
    found = subprocess.run(
        [sys.executable, "-c", "import agentdata.cli, workers; print(agentdata.cli.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().startswith(str(src)), found.stdout


def test_the_real_override_file_stays_out_of_git_and_images() -> None:
    assert "docker-compose.override.yml" in (REPO / ".gitignore").read_text().splitlines()
