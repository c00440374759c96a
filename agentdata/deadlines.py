"""One watchdog thread that fires callbacks at deadlines.

DuckDB settings are locked after start-up, so a per-query timeout cannot be a
`SET`; instead the watchdog calls `cursor.interrupt()` when a query's time is up.
A single thread with a heap serves thousands of queries without a timer thread each.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watchdog:
    """Schedule `callback()` at a monotonic deadline; cancel by handle."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="agentdata-watchdog", daemon=True)
        self._thread.start()

    def schedule(self, delay_s: float, callback: Callable[[], None]) -> int:
        handle = next(self._ids)
        deadline = time.monotonic() + delay_s
        with self._cond:
            self._callbacks[handle] = callback
            # Wake the thread only when it must wait less than it does now: a wake-up
            # per query (two deadlines each) cost a GIL hand-over per query.
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, handle))
            if earliest:
                self._cond.notify()
        return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._callbacks.pop(handle, None)
            if len(self._heap) > 2 * len(self._callbacks) + 1024:
                # Most entries are cancelled ones far from the top (queries end long
                # before their timeout): rebuild instead of letting them pile up.
                self._heap = [e for e in self._heap if e[1] in self._callbacks]
                heapq.heapify(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    # Drop cancelled entries from the top so the heap cannot grow without bound.
                    while self._heap and self._heap[0][1] not in self._callbacks:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, handle = heapq.heappop(self._heap)
                callback = self._callbacks.pop(handle, None)
            if callback is not None:
                try:
                    callback()
                except Exception:  # a failing callback must not kill the watchdog
                    pass
