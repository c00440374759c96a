"""An in-memory Arrow cache for hot queries, bounded in bytes, never stale.

Agents repeat themselves: the same `SELECT ... WHERE id = ?` or dashboard aggregate
arrives many times between writes. A hit streams the batches a previous run produced,
without DuckDB.

- **Key**: the caller's scope (everything about a token that changes what a query
  returns: role, allow-list, max_rows), the SQL text as checked, and the parameters.
  Two tokens with the same scope share entries; nothing crosses scopes.
- **Freshness**: every table has a version, bumped by each committed write to it
  (`bump`). An entry remembers the versions of the tables it read *as of when its
  query started*; a lookup whose current versions differ is a miss and drops the
  entry. A read that started before a write committed therefore never serves (or
  stores) data older than the last committed write to a later reader.
- **Bounds**: entries above `max_entry_bytes` are not kept; the total stays under
  `max_bytes` by evicting the least recently used; `max_bytes == 0` turns it off.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa

from agentdata import metrics

Versions = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CachedResult:
    """One cached result: its schema and batches, and the table versions it saw."""

    schema: pa.Schema
    batches: tuple[pa.RecordBatch, ...]
    versions: Versions
    nbytes: int


class ResultCache:
    """Thread-safe LRU of query results keyed by (scope, SQL, parameters)."""

    def __init__(self, max_bytes: int, *, max_entry_fraction: float = 0.25) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = int(max_bytes * max_entry_fraction)
        self._entries: OrderedDict[Hashable, CachedResult] = OrderedDict()
        self._bytes = 0
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    # -- versions ----------------------------------------------------------------
    def versions(self, tables: Iterable[str]) -> Versions:
        """The current version of each table (sorted, so it compares as a whole)."""
        with self._lock:
            return tuple(sorted((t, self._versions.get(t, 0)) for t in set(tables)))

    def bump(self, tables: Iterable[str]) -> None:
        """Tables changed (a write committed): entries that read them are stale now."""
        with self._lock:
            for t in tables:
                self._versions[t] = self._versions.get(t, 0) + 1

    # -- entries -----------------------------------------------------------------
    def get(self, key: Hashable, tables: Iterable[str]) -> CachedResult | None:
        """The entry for `key` if it is as fresh as the tables now are, else None."""
        if not self.enabled:
            return None
        current = self.versions(tables)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.versions != current:
                self._drop(key)
                entry = None
            if entry is None:
                metrics.CACHE_REQUESTS.labels("miss").inc()
                return None
            self._entries.move_to_end(key)
        metrics.CACHE_REQUESTS.labels("hit").inc()
        return entry

    def schema_of(self, key: Hashable, tables: Iterable[str]) -> pa.Schema | None:
        """The schema of a fresh entry for `key`, if there is one (not counted as a
        request: the DoGet that follows asks `get`)."""
        if not self.enabled:
            return None
        current = self.versions(tables)
        with self._lock:
            entry = self._entries.get(key)
        return entry.schema if entry is not None and entry.versions == current else None

    def put(
        self,
        key: Hashable,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        versions: Versions,
    ) -> bool:
        """Keep a finished result; `versions` are those seen when its query started.
        Returns False when it was too big, or a write already made it stale."""
        kept = tuple(batches)
        nbytes = sum(b.nbytes for b in kept)
        if not self.enabled or nbytes > self.max_entry_bytes:
            return False
        with self._lock:
            if any(self._versions.get(t, 0) != v for t, v in versions):
                return False  # written since the query started: never store old data
            if key in self._entries:
                self._drop(key)
            self._entries[key] = CachedResult(schema, kept, versions, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))
                metrics.CACHE_EVICTIONS.inc()
            metrics.CACHE_BYTES.set(self._bytes)
        return True

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.nbytes
        metrics.CACHE_BYTES.set(self._bytes)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            metrics.CACHE_BYTES.set(0)


class Recorder:
    """Passes a stream's batches through while keeping a copy (references, not bytes)
    up to `limit` bytes; `finished()` says whether the whole stream was seen."""

    def __init__(self, batches: Iterator[pa.RecordBatch], limit: int) -> None:
        self._batches = batches
        self._limit = limit
        self.kept: list[pa.RecordBatch] | None = []
        self.done = False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        size = 0
        for batch in self._batches:
            if self.kept is not None:
                size += batch.nbytes
                if size > self._limit:
                    self.kept = None  # too big to cache: stop holding references
                else:
                    self.kept.append(batch)
            yield batch
        self.done = True


def params_key(params: object) -> Hashable:
    """A hashable form of a statement's parameters (None, a sequence or a mapping)."""
    if params is None:
        return None
    if isinstance(params, Mapping):
        return tuple(sorted((str(k), repr(v)) for k, v in params.items()))
    if isinstance(params, (list, tuple)):
        return tuple(repr(v) for v in params)
    return repr(params)
