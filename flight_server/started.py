"""Queries started by GetFlightInfo, waiting for the DoGet of their ticket.

A Flight SQL client executes a statement with GetFlightInfo and then fetches it with
DoGet. Starting the query in GetFlightInfo runs it once, instead of once to learn its
schema and again to stream it (a DuckDB round trip saved on every point query, half
the work of every aggregate), and the FlightInfo then carries the running query's own
schema, exact even when it depends on bound parameter values. Plain Flight starts
there only the reads that do no work before their first row (agentdata.streaming).

A started query holds a cursor and at most its first batch. One not fetched within
`ttl_s`, or pushed out by newer ones of the same token past `max_per_token`, is
closed; a DoGet that comes later simply runs the query afresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from agentdata.engine import ResultStream, StreamOptions


@dataclass
class StartedQuery:
    stream: ResultStream
    options: StreamOptions
    token_id: str
    expires: float = field(default=0.0)


class StartedQueries:
    """Started queries by ticket; a janitor thread closes the ones left unfetched."""

    def __init__(
        self, ttl_s: float = 60.0, max_per_token: int = 16, *, name: str = "agentdata-started"
    ) -> None:
        self.ttl_s = ttl_s
        self.name = name
        self.max_per_token = max_per_token
        self._queries: OrderedDict[bytes, StartedQuery] = OrderedDict()
        self._cond = threading.Condition()
        self._janitor: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """Close every started query and end the janitor (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            janitor = self._janitor
        self.close_all()
        if janitor is not None:
            janitor.join(5)

    def put(self, ticket: bytes, query: StartedQuery) -> None:
        query.expires = time.monotonic() + self.ttl_s
        dropped: list[StartedQuery] = []
        with self._cond:
            self._queries[ticket] = query
            mine = [t for t, q in self._queries.items() if q.token_id == query.token_id]
            for old in mine[: max(0, len(mine) - self.max_per_token)]:
                dropped.append(self._queries.pop(old))
            if self._janitor is None:
                self._janitor = threading.Thread(
                    target=self._sweep_forever, name=f"{self.name}-janitor", daemon=True
                )
                self._janitor.start()
            # No wake-up: the janitor sweeps at its own pace (waking it for every
            # query cost a GIL hand-over per query).
        _close(dropped)

    def take(self, ticket: bytes) -> StartedQuery | None:
        """The started query for `ticket`, handed over once (None if gone or never started)."""
        with self._cond:
            return self._queries.pop(ticket, None)

    def discard(self, ticket: bytes) -> None:
        _close([q for q in [self.take(ticket)] if q is not None])

    def close_all(self) -> None:
        with self._cond:
            dropped = list(self._queries.values())
            self._queries.clear()
        _close(dropped)

    def __len__(self) -> int:
        return len(self._queries)

    def _sweep_forever(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [t for t, q in self._queries.items() if q.expires <= now]
                dropped = [self._queries.pop(t) for t in expired]
            _close(dropped)
            with self._cond:
                self._cond.wait(max(1.0, self.ttl_s / 4))


def _close(queries: list[StartedQuery]) -> None:
    # Closing the stream releases its cursor and unregisters the query; a generator
    # that never ran does so when it is dropped (the engine finalizes it).
    for q in queries:
        q.stream.close()
    queries.clear()
