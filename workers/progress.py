"""A thread that reports a running task's progress on a fixed period.

Exports and syncs both report from a thread of their own, so heartbeats (for the
stale-job rule) and cancellation checks do not wait for the next batch. Subclasses
say what one report does; this class owns the thread, its period and its client (a
clone, since the task's own client may be busy uploading meanwhile).
"""

from __future__ import annotations

import threading

from workers.client import ServerClient


class PeriodicReporter:
    """Calls `report()` every `every_s` seconds between `start()` and `stop()`."""

    def __init__(self, client: ServerClient, every_s: float, name: str) -> None:
        self.every_s = max(0.05, every_s)
        self._stop = threading.Event()
        self._client = client.clone()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting (idempotent; safe from the reporter's own thread)."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._thread.join(30)
            self._client.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.report()

    def report(self) -> None:
        """One report; subclasses decide what it sends and what the answer means."""
        raise NotImplementedError
