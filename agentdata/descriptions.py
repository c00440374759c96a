"""Table and column descriptions: what a table holds, in words agents read.

Kept in the meta store (table `descriptions`), not as DuckDB `COMMENT ON`: the
database's configuration is locked and agent SQL never writes, and descriptions are
metadata an admin owns, like a token. Shown by MCP (`list_tables`, `describe_table`,
table resources), REST (`GET /api/v1/tables`), and Flight SQL `GetTables` with
`include_schema` (field metadata, see flight_server.flightsql.catalog).

    PATCH /api/v1/tables/demo/orders
    {"description": "One row per order line", "columns": {"amount": "Net, in EUR"}}

A description set to null or "" is removed. Descriptions of columns a table no longer
has are kept but not shown (a column that comes back gets its words back).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentdata.errors import InvalidArgument
from agentdata.meta import MetaStore

#: Longest description accepted, in characters (descriptions are read by models: keep them short).
MAX_DESCRIPTION_CHARS = 4000


@dataclass(frozen=True)
class Described:
    """A table's description and its columns' (column name -> text)."""

    table: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)


def read(meta: MetaStore, names: Iterable[str] | None = None) -> dict[str, Described]:
    """Descriptions by table ("schema.table", lower case); all tables when `names` is None."""
    if names is None:
        rows = meta.all("SELECT name, column_name, description FROM descriptions")
    else:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        rows = meta.all(
            "SELECT name, column_name, description FROM descriptions"
            f" WHERE name IN ({', '.join('?' * len(wanted))})",
            wanted,
        )
    tables: dict[str, str | None] = {}
    columns: dict[str, dict[str, str]] = {}
    for r in rows:
        if r["column_name"] == "":
            tables[r["name"]] = r["description"]
        else:
            columns.setdefault(r["name"], {})[r["column_name"]] = r["description"]
    return {
        name: Described(tables.get(name), columns.get(name, {}))
        for name in sorted(set(tables) | set(columns))
    }


def fill(
    meta: MetaStore,
    name: str,
    *,
    table: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> None:
    """Set descriptions that are not set yet (a sync's source comments): a description
    an admin wrote (PATCH) always wins over the source's. Empty texts are ignored."""
    entries = [("", table)] if table else []
    entries.extend((c, t) for c, t in (columns or {}).items() if t)
    now = time.time()
    with meta.transaction() as tx:
        for column, text in entries:
            text = (text or "").strip()[:MAX_DESCRIPTION_CHARS]
            if text:
                tx.execute(
                    "INSERT INTO descriptions (name, column_name, description, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(name, column_name) DO NOTHING",
                    (name, column, text, now),
                )


def update(
    meta: MetaStore,
    name: str,
    *,
    table: str | None = None,
    set_table: bool = False,
    columns: Mapping[str, str | None] | None = None,
) -> None:
    """Set (or, with None/"", remove) a table's description and some columns'.

    `name` is "schema.table" in lower case; the caller has checked that the table and
    the columns exist. `set_table` says whether `table` was given at all (None then
    removes the description); columns not named keep theirs.
    """
    changes: list[tuple[str, str | None]] = []
    if set_table:
        changes.append(("", table))
    changes.extend((columns or {}).items())
    for column, text in changes:
        if text is not None and len(text) > MAX_DESCRIPTION_CHARS:
            where = f"column {column!r}" if column else "the table"
            raise InvalidArgument(
                f"the description of {where} is longer than {MAX_DESCRIPTION_CHARS} characters"
            )
    now = time.time()
    with meta.transaction() as tx:
        for column, text in changes:
            if text is None or not text.strip():
                tx.execute(
                    "DELETE FROM descriptions WHERE name = ? AND column_name = ?", (name, column)
                )
            else:
                tx.execute(
                    "INSERT INTO descriptions (name, column_name, description, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(name, column_name) DO UPDATE SET"
                    " description = excluded.description, updated_at = excluded.updated_at",
                    (name, column, text.strip(), now),
                )
