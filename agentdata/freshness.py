"""Freshness: when each table last changed and, for synced tables, when it was synced
and from which source snapshot. Every answer that reads tables carries it.

The engine records the times (`Engine.touch_tables`, into `table_stats` in the meta
store); this module reads them and renders one shape for every channel:

    {"demo.orders": {"last_modified": "2024-05-01T10:00:00.123456Z",
                     "last_synced": null, "source": null}}

Flight and Flight SQL streams carry it as JSON under the schema metadata key
`agentdata.freshness` (`FRESHNESS_KEY`); MCP `query` results and REST
`/api/v1/tables` entries carry the same objects. Times are ISO-8601 UTC with
microseconds, so two writes within one second still tell apart.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from agentdata.meta import MetaStore

#: Schema metadata key of result streams (Flight, Flight SQL): JSON, table -> freshness.
FRESHNESS_KEY = b"agentdata.freshness"


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO-8601 UTC with microseconds (`2024-05-01T10:00:00.123456Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def entry(
    last_modified: float | None, last_synced: float | None, source: str | None
) -> dict[str, Any]:
    """One table's freshness object."""
    return {"last_modified": iso(last_modified), "last_synced": iso(last_synced), "source": source}


def freshness_of(meta: MetaStore, tables: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Freshness of each table ("schema.table", lower case), in name order.

    A table with no record yet (created outside the engine's write paths) is listed
    with nulls rather than left out: the answer still names every table it read.
    """
    names = sorted(set(tables))
    if not names:
        return {}
    rows = meta.all(
        "SELECT name, last_modified, last_synced, source_snapshot FROM table_stats"
        f" WHERE name IN ({', '.join('?' * len(names))})",
        names,
    )
    found = {r["name"]: r for r in rows}
    out = {}
    for name in names:
        r = found.get(name)
        out[name] = (
            entry(r["last_modified"], r["last_synced"], r["source_snapshot"])
            if r is not None
            else entry(None, None, None)
        )
    return out


class FreshnessCache:
    """Freshness of table sets as the stream metadata value, read once per change.

    Every read carries its tables' freshness, and a meta store query per read costs
    more than an indexed lookup does to run. The engine calls `changed()` after every
    change to `table_stats`; an answer read while a change lands is not kept (the
    version moved), so a later read never sees times older than the last change.
    """

    def __init__(self, meta: MetaStore, max_entries: int = 1024) -> None:
        self._meta = meta
        self._max = max_entries
        self._entries: OrderedDict[frozenset[str], bytes] = OrderedDict()
        self._version = 0
        self._lock = threading.Lock()

    def encoded(self, tables: frozenset[str]) -> bytes:
        """The JSON value of `FRESHNESS_KEY` for `tables`."""
        with self._lock:
            known = self._entries.get(tables)
            version = self._version
        if known is not None:
            return known
        value = json.dumps(freshness_of(self._meta, tables), separators=(",", ":")).encode()
        with self._lock:
            if self._version == version:
                self._entries[tables] = value
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return value

    def changed(self) -> None:
        """`table_stats` changed: forget every cached answer."""
        with self._lock:
            self._version += 1
            self._entries.clear()


def with_freshness(schema: pa.Schema, freshness: dict[str, dict[str, Any]]) -> pa.Schema:
    """`schema` with the freshness under `FRESHNESS_KEY` (other metadata kept)."""
    metadata = dict(schema.metadata or {})
    metadata[FRESHNESS_KEY] = json.dumps(freshness, separators=(",", ":")).encode()
    return schema.with_metadata(metadata)


def read_freshness(schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """The freshness a result schema carries (empty when it has none)."""
    raw = (schema.metadata or {}).get(FRESHNESS_KEY)
    return json.loads(raw) if raw else {}
