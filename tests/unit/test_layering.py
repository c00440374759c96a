"""The core imports no adapter: only the launcher and the CLI compose them (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "agentdata"
ADAPTERS = ("flight_server", "control_api", "mcp_server")
COMPOSERS = {CORE / "launcher.py", *(CORE / "cli").rglob("*.py")}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_modules_import_no_adapter() -> None:
    offenders = {
        str(path.relative_to(CORE)): sorted(
            n for n in _imports(path) if n.split(".")[0] in ADAPTERS
        )
        for path in CORE.rglob("*.py")
        if path not in COMPOSERS
    }
    assert {k: v for k, v in offenders.items() if v} == {}
