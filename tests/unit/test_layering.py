"""The import graph (DESIGN.md, Layout): the core imports no adapter, only the launcher
and the CLI compose them, adapters never import each other, and no module imports
itself back through others. Read with `ast` from the source: fast, no server, nothing
imported.

Every import counts, at module level or inside a function (a deferred import is still
a dependency; the cycle this test was written against ran through one), except those
under `if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = "agentdata"
ADAPTERS = ("flight_server", "control_api", "mcp_server", "workers")
PACKAGES = (CORE, *ADAPTERS)
#: Core modules that compose adapters: `agentdata serve` and the command line.
COMPOSERS = ("agentdata.launcher", "agentdata.cli")
#: Generated code, not ours to arrange.
GENERATED = ("flight_server.flightsql.proto",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = _module_name(path)
            if not name.startswith(GENERATED):
                found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of `if TYPE_CHECKING:` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an `ImportFrom` names (relative imports included)."""
    if node.level == 0:
        return node.module or ""
    is_package = _modules()[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def _imports(module: str, *, runtime_only: bool) -> frozenset[str]:
    """The project modules `module` imports (`from pkg import submodule` names the
    submodule), and every other top-level package it imports."""
    tree = ast.parse(_modules()[module].read_text(), str(_modules()[module]))
    nodes = _runtime_nodes(tree) if runtime_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                names.add(submodule if submodule in _modules() else source)
    return frozenset(names)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _is_composer(module: str) -> bool:
    return any(module == c or module.startswith(f"{c}.") for c in COMPOSERS)


def test_the_graph_sees_every_package_and_their_imports() -> None:
    """Guard against a test that passes because it reads nothing."""
    modules = _modules()
    assert {_top(m) for m in modules} == set(PACKAGES)
    assert "agentdata.tasks" in _imports("workers.registry", runtime_only=True)
    assert "workers.registry" in _imports("agentdata.launcher", runtime_only=True)
    # `if TYPE_CHECKING:` imports count for layering, not for cycles.
    assert "agentdata.core" in _imports("agentdata.tasks", runtime_only=False)
    assert "agentdata.core" not in _imports("agentdata.tasks", runtime_only=True)


def test_core_modules_import_no_adapter() -> None:
    offenders = {
        module: sorted(n for n in _imports(module, runtime_only=False) if _top(n) in ADAPTERS)
        for module in _modules()
        if _top(module) == CORE and not _is_composer(module)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_adapters_never_import_each_other() -> None:
    offenders = {
        module: sorted(
            n
            for n in _imports(module, runtime_only=False)
            if _top(n) in ADAPTERS and _top(n) != _top(module)
        )
        for module in _modules()
        if _top(module) in ADAPTERS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles() -> None:
    graph = {
        module: sorted(n for n in _imports(module, runtime_only=True) if n in _modules())
        for module in _modules()
    }
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert cycles == []


#: Adapter modules that may name the whole core: the entry points that unpack it into
#: collaborators (`create_app`, `mount_mcp`), the REST dependencies (use cases spanning
#: several stores take the core), and the Celery dispatcher (`Dispatcher.start`'s type).
TAKE_THE_CORE = {"control_api.app", "control_api.deps", "mcp_server.mount", "workers.dispatcher"}


def test_adapters_take_collaborators_not_the_core() -> None:
    """Handlers get the engine, the token verifier, the job store... so tests can hand
    them fakes; only the entry points listed above see a `Core`."""
    takers = {
        module
        for module in _modules()
        if _top(module) in ADAPTERS and "agentdata.core" in _imports(module, runtime_only=False)
    }
    assert takers - TAKE_THE_CORE == set()
    assert "control_api.app" in takers  # the test reads what it means to


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


#: SQL naming a table of the job store (agentdata.jobs), in any string of the source.
_JOBS_SQL = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+(?:jobs|job_attempts)\b", re.IGNORECASE)
#: The job store, and the migrations that create its tables.
_JOB_STORE = {"agentdata.jobs", "agentdata.meta"}


def test_the_jobs_tables_are_queried_through_the_job_store_only() -> None:
    offenders = sorted(
        module
        for module, path in _modules().items()
        if module not in _JOB_STORE
        and any(
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _JOBS_SQL.search(node.value)
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
        )
    )
    assert offenders == []
    assert _JOBS_SQL.search("SELECT id FROM jobs WHERE task_id = ?")  # the check can fail
