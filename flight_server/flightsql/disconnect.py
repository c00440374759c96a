"""Stop a query when its client goes away while DuckDB is busy computing.

The engine notices a vanished client between batches (`StreamOptions.is_cancelled`),
but DuckDB computes a blocking operator (an aggregate, a sort, a big join) before it
hands out the first batch, and that can take minutes. One watcher thread polls the
call contexts of such work a few times a second and cancels the query when the
client has cancelled the call or disconnected.

A call context is only valid while its RPC handler runs, so it is watched only
inside `watching()`, which the handler enters and leaves itself; leaving waits for
the poller to let go of the context.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow.flight as fl

log = logging.getLogger("agentdata.flightsql")


@dataclass
class _Watch:
    context: fl.ServerCallContext
    on_disconnect: Callable[[], bool]  # True once it took effect (the query was found)
    done: bool = False


class DisconnectWatcher:
    """Polls watched call contexts every `interval_s` seconds (a thread started on demand)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self._watches: dict[int, _Watch] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """End the polling thread (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    @contextmanager
    def watching(
        self, context: fl.ServerCallContext, on_disconnect: Callable[[], bool]
    ) -> Iterator[None]:
        """While inside, call `on_disconnect()` if the client goes away (until it returns True)."""
        key = next(self._ids)
        with self._cond:
            self._watches[key] = _Watch(context, on_disconnect)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="agentdata-flightsql-disconnect", daemon=True
                )
                self._thread.start()
            # No wake-up: the poller keeps its pace even when idle. Waking it for each
            # new watch (every query of a serial client) cost a GIL hand-over per query.
        try:
            yield
        finally:
            with self._cond:
                del self._watches[key]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                # Contexts are read under the lock: a handler cannot leave `watching()`
                # (and so cannot end its call) while its context is being polled.
                gone = [
                    w for w in self._watches.values() if not w.done and w.context.is_cancelled()
                ]
            for watch in gone:
                try:
                    watch.done = watch.on_disconnect()
                except Exception:  # the watcher must outlive any one query's failure
                    log.exception("cancelling the query of a vanished client failed")
                    watch.done = True
            with self._cond:
                self._cond.wait(self.interval_s)
