"""`agentdata serve --reload`: restart the server when its source changes (development only).

The parent process never opens the data dir: it runs `agentdata serve` (the same
arguments, without `--reload`) as a child, watches the `.py` files of the watched
directories (by default the installed packages: agentdata, flight_server,
control_api, mcp_server, workers), and on a change stops the child as SIGTERM does
(queries cancelled, DuckDB checkpointed and closed) and starts a new one. A child that
exits by itself (a syntax error, say) is started again at the next change. SIGINT or
SIGTERM to the parent stops the child and then the parent.

Refused in production settings (`production_reason`): with TLS configured, or bound
to an address other than loopback, the server is one that others use, and a server
that restarts whenever a file under it changes is no such server.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType

from agentdata.settings import Settings

log = logging.getLogger("agentdata.reload")

#: The packages whose source `--reload` watches by default.
PACKAGES = ("agentdata", "flight_server", "control_api", "mcp_server", "workers")
#: How often the watched files are checked, in seconds.
POLL_S = 0.5


def production_reason(settings: Settings) -> str | None:
    """Why these settings are a production server's (None for a development one)."""
    if settings.tls_cert is not None:
        return "TLS is configured (AGENTDATA_TLS_CERT)"
    if not is_loopback(settings.host):
        return f"the server binds {settings.host!r}, not a loopback address (AGENTDATA_HOST)"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_dirs() -> list[Path]:
    """The directories of the packages `serve` runs (where they are installed from)."""
    import importlib

    dirs = []
    for name in PACKAGES:
        module = importlib.import_module(name)
        if module.__file__ is not None:
            dirs.append(Path(module.__file__).parent)
    return dirs


def snapshot(dirs: Iterable[Path]) -> dict[Path, float]:
    """Every watched source file with its modification time."""
    found: dict[Path, float] = {}
    for root in dirs:
        for path in root.rglob("*.py"):
            try:
                found[path] = path.stat().st_mtime
            except OSError:  # removed while listing
                continue
    return found


def changed(before: dict[Path, float], after: dict[Path, float]) -> list[Path]:
    """Files added, removed or modified between two snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def child_argv(argv: Sequence[str]) -> list[str]:
    """The `serve` command line again, without the reload options (the child serves)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--reload":
            continue
        elif arg == "--reload-dir":
            skip = True
        elif not arg.startswith("--reload-dir="):
            out.append(arg)
    return [sys.executable, "-m", "agentdata", *out]


def run(argv: Sequence[str], dirs: Sequence[Path]) -> int:
    """Serve through a child process, restarting it when a watched file changes."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command = child_argv(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    log.info("reload: watching %s for changes (development only)", ", ".join(str(d) for d in dirs))
    seen = snapshot(dirs)
    child: subprocess.Popen[bytes] | None = subprocess.Popen(command)
    try:
        while not stop.wait(POLL_S):
            now = snapshot(dirs)
            paths = changed(seen, now)
            seen = now
            if paths:
                log.info("reload: %s changed; restarting the server", _names(paths))
                _stop(child)
                child = subprocess.Popen(command)
            elif child is not None and child.poll() is not None:
                log.warning(
                    "reload: the server exited with %d; waiting for a change to restart it",
                    child.returncode,
                )
                child = None
    finally:
        code = _stop(child)
        for s, h in previous.items():
            signal.signal(s, h)
    return code


def _stop(child: subprocess.Popen[bytes] | None) -> int:
    if child is None:
        return 0
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0 if child.returncode in (0, -signal.SIGTERM) else int(child.returncode)


def _names(paths: list[Path]) -> str:
    shown = ", ".join(os.fspath(p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
