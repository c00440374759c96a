"""Cursors already inside a READ ONLY transaction, made before the requests that take them.

Every read runs on its own cursor in a `BEGIN TRANSACTION READ ONLY` transaction
(see `agentdata.engine`). DuckDB parses even that statement, and in DuckDB 2.0 that
costs about 0.2 ms: on a point query of ~1.5 ms, a seventh of the time. `ReadCursors`
keeps a few such cursors ready, begun by a background thread, so a request takes one
without waiting. Nothing about what they allow changes: each is still a fresh cursor
in its own READ ONLY transaction, used by one request and closed after it.

Why a cursor begun ahead reads current data: DuckDB takes a transaction's snapshot
lazily, at the transaction's first access to the database (its first bind or scan),
not at BEGIN; an idle begun transaction holds no snapshot and does not block a
checkpoint. What BEGIN does fix is the transaction's start time, which `now()` and
`current_timestamp` return; so a ready cursor older than `max_age_s` is not handed
out (closed instead), and the time a query sees is at most that much before its
request arrived.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import duckdb

log = logging.getLogger(__name__)

BEGIN_READ_ONLY = "BEGIN TRANSACTION READ ONLY"


class ReadCursors:
    """A small pool of fresh READ ONLY cursors, refilled in the background."""

    def __init__(
        self,
        open_cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        size: int = 4,
        max_age_s: float = 0.25,
    ) -> None:
        self._open = open_cursor
        self.size = size
        self.max_age_s = max_age_s
        self._ready: deque[tuple[float, duckdb.DuckDBPyConnection]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def begin(self) -> duckdb.DuckDBPyConnection:
        """A new cursor in a READ ONLY transaction, made now (raises what DuckDB raises)."""
        cur = self._open()
        try:
            cur.execute(BEGIN_READ_ONLY)
        except BaseException:
            cur.close()
            raise
        return cur

    def take(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor in a READ ONLY transaction: a ready one, else one made now.
        The caller owns it (and closes it)."""
        stale: list[duckdb.DuckDBPyConnection] = []
        cur = None
        with self._cond:
            oldest = time.monotonic() - self.max_age_s
            while self._ready:
                made, candidate = self._ready.popleft()
                if made >= oldest:
                    cur = candidate
                    break
                stale.append(candidate)
            self._start_refiller()
            self._cond.notify()
        for old in stale:
            old.close()
        return cur if cur is not None else self.begin()

    def close(self) -> None:
        """Close the ready cursors and end the refiller (before the database closes)."""
        with self._cond:
            self._closed = True
            ready = [cur for _, cur in self._ready]
            self._ready.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        for cur in ready:
            cur.close()

    def _start_refiller(self) -> None:
        if self._thread is None and not self._closed and self.size > 0:
            self._thread = threading.Thread(
                target=self._refill_forever, name="agentdata-read-cursors", daemon=True
            )
            self._thread.start()

    def _refill_forever(self) -> None:
        while True:
            with self._cond:
                # Refill on demand only: an idle server keeps no transactions open, and
                # the first request after a pause begins its own.
                while not self._closed and len(self._ready) >= self.size:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                cur = self.begin()
            # Any failure (the database closing under it, or broken): requests will say,
            # and a refiller that died of it would stop the pool for good.
            except Exception as e:
                log.debug("read cursor not made: %s", e)
                with self._cond:
                    self._cond.wait(0.5)
                continue
            with self._cond:
                if self._closed:
                    cur.close()
                    return
                self._ready.append((time.monotonic(), cur))
