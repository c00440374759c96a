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


def with_freshness(schema: pa.Schema, freshness: dict[str, dict[str, Any]]) -> pa.Schema:
    """`schema` with the freshness under `FRESHNESS_KEY` (other metadata kept)."""
    metadata = dict(schema.metadata or {})
    metadata[FRESHNESS_KEY] = json.dumps(freshness, separators=(",", ":")).encode()
    return schema.with_metadata(metadata)


def read_freshness(schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """The freshness a result schema carries (empty when it has none)."""
    raw = (schema.metadata or {}).get(FRESHNESS_KEY)
    return json.loads(raw) if raw else {}
