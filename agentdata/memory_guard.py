"""A watchdog on the server's resident memory.

DuckDB's `memory_limit` bounds what its buffer manager holds, not every allocation:
values built by string and list functions live outside it (see
`agentdata.value_bounds`). This thread samples the process's RSS (from /proc, every
50 ms) and, when it passes its bound, calls `on_exceeded` once, which stops the
queries that could be growing it. The bound moves with the work in flight: the
engine computes it as idle RSS + memory_limit + headroom + 2 batches per running
stream (what legitimate streaming may hold, see docs/deployment.md). It fires again only after RSS falls back
under the bound or grows another `rearm_bytes` (memory freed by stopped queries may
stay mapped for a while, and that must not stop every later query).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_bytes(text: str) -> int:
    """`2GB` -> 2_000_000_000, `256MiB` -> 268_435_456 (DuckDB's own reading)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGuard:
    """Call `on_exceeded(rss)` when RSS passes `limit()` (see module docstring)."""

    def __init__(
        self,
        limit: Callable[[], int],
        on_exceeded: Callable[[int], None],
        *,
        interval_s: float = 0.05,
        rearm_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self._limit = limit
        self._on_exceeded = on_exceeded
        self._interval_s = interval_s
        self._rearm_bytes = rearm_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentdata-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        fired_at: int | None = None
        while not self._stop.wait(self._interval_s):
            rss = rss_bytes()
            limit = self._limit()
            if rss <= limit:
                fired_at = None
                continue
            if fired_at is not None and rss < fired_at + self._rearm_bytes:
                continue
            fired_at = rss
            log.warning(
                "resident memory %d MiB is over the bound of %d MiB: stopping queries",
                rss >> 20,
                limit >> 20,
            )
            try:
                self._on_exceeded(rss)
            except Exception:  # the watchdog must outlive a failing callback
                log.exception("memory guard callback failed")
