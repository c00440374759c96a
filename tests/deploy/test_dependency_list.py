"""One dependency list: pyproject.toml declares what the code imports, and the lock is
compiled from it (`make lock`), naming no package host."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import lock_pins
from tests.support.server import REPO

PACKAGES = ("agentdata", "flight_server", "control_api", "mcp_server", "workers")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(*, dev: bool) -> list[Requirement]:
    project = _pyproject()
    listed = list(project["dependencies"])
    if dev:
        listed += project["optional-dependencies"]["dev"]
    return [Requirement(r) for r in listed]


def test_pyproject_is_the_only_list() -> None:
    assert not (REPO / "requirements.in").exists(), "pyproject.toml is the dependency list"
    makefile = (REPO / "Makefile").read_text()
    lock_rule = re.search(r"^lock:.*\n\t(.+)$", makefile, re.M)
    assert lock_rule is not None
    assert "compile pyproject.toml --extra dev" in lock_rule.group(1)
    assert "-o requirements.lock" in lock_rule.group(1)


def test_the_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = lock_pins()
    wrong = {
        str(req): pins.get(canonicalize_name(req.name))
        for req in _requirements(dev=True)
        if pins.get(canonicalize_name(req.name)) is None
        or not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)
    }
    assert wrong == {}


def test_the_lock_names_no_package_host() -> None:
    text = (REPO / "requirements.lock").read_text()
    hosts = [
        line
        for line in text.splitlines()
        if "://" in line or line.lstrip().startswith(("-i", "--index", "--extra-index", "--find"))
    ]
    assert hosts == []


def _imported_top_levels() -> dict[str, str]:
    """Third-party top-level modules our packages import -> one file importing it."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "proto" in path.relative_to(REPO).parts:
                continue  # generated protobuf code
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_imported_distribution_is_declared() -> None:
    """A module we import belongs to a distribution pyproject declares itself, not one
    that merely arrives with another (it could leave with it)."""
    declared = {canonicalize_name(r.name) for r in _requirements(dev=False)}
    by_module = metadata.packages_distributions()
    imported = _imported_top_levels()
    assert {"click", "pyarrow", "duckdb"} <= imported.keys()
    undeclared = {
        module: f"{where} ({', '.join(by_module.get(module, ['?']))})"
        for module, where in imported.items()
        if not {canonicalize_name(d) for d in by_module.get(module, [])} & declared
    }
    assert undeclared == {}
