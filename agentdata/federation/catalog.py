"""Remote tables: Snowflake tables declared to agentdata and queried where they live.

A declaration is kept in two places, each for what it is good at:

- the meta store (`remote_tables`): the name, the Snowflake source, the columns as
  Snowflake describes them with the types the sync mapping gives them
  (`workers.sync.types`), the row count Snowflake reported, and when it was read. Agent
  SQL can never reach this store, so the source stays an administrator's business.
- the data database: a placeholder table `schema.table` with those columns, no rows and
  a `CHECK (false)` constraint, so no row can ever be written to it. DuckDB's parser,
  binder and the guard (`agentdata.sqlguard`) then treat a remote name exactly like a
  local one: the allow-list, read-only containment, result schemas (`LIMIT 0` probes),
  catalog listings, and the binder's report of the tables a statement reads (through
  views too) all work unchanged. Nothing ever reads the placeholder for data: the
  router (`agentdata.federation.router`) swaps it for Snowflake before a query runs.

    catalog.declare(engine, "sales.big_orders", "SHOP.PUBLIC.ORDERS", describe=...)
    catalog.get("sales.big_orders")   # RemoteTable, or None for a local name
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentdata.errors import Conflict, InvalidArgument, NotFound
from agentdata.meta import MetaStore
from agentdata.names import parse_table_ref, quote_ident, validate_name

if TYPE_CHECKING:
    from agentdata.engine import Engine


#: The constraint that marks (and write-protects) a remote table's placeholder.
PLACEHOLDER_CONSTRAINT = "agentdata_remote_table"


@dataclass(frozen=True)
class RemoteColumn:
    """One column of a remote table: Snowflake's exact name and type, and the DuckDB
    type it has here (the sync mapping)."""

    name: str
    duckdb_type: str
    snowflake_type: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "type": self.duckdb_type,
            "snowflake_type": self.snowflake_type,
        }


@dataclass(frozen=True)
class RemoteTable:
    """A declared remote table."""

    schema: str
    table: str
    source: str
    columns: tuple[RemoteColumn, ...]
    rows: int | None
    description: str | None = None
    created_at: float = 0.0
    refreshed_at: float = 0.0
    created_by: str | None = None
    #: Lower-case column name -> exact Snowflake name (identifiers are matched as DuckDB
    #: does, case-insensitively; Snowflake needs the exact spelling).
    exact: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.exact.update({c.name.lower(): c.name for c in self.columns})

    @property
    def name(self) -> str:
        """`schema.table`, lower case: the key allow-lists and the binder use."""
        return f"{self.schema}.{self.table}".lower()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "columns": [c.to_dict() for c in self.columns],
            "rows": self.rows,
            "location": "snowflake",
            "created_at": self.created_at,
            "refreshed_at": self.refreshed_at,
        }


#: What describing a source gives: its columns and its row count (None if unknown).
Described = tuple[list[RemoteColumn], int | None]


class RemoteCatalog:
    """The declared remote tables, cached in memory (this process is the only writer)."""

    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta
        self._lock = threading.Lock()
        self._tables: dict[str, RemoteTable] | None = None

    # -- reading ---------------------------------------------------------------
    def all(self) -> list[RemoteTable]:
        """Every remote table, by name."""
        return sorted(self._load().values(), key=lambda t: t.name)

    def get(self, name: str) -> RemoteTable | None:
        """The remote table called `name` ("schema.table", any case), or None."""
        return self._load().get(name.lower())

    def names(self) -> frozenset[str]:
        return frozenset(self._load())

    def require(self, name: str) -> RemoteTable:
        table = self.get(_key(name))
        if table is None:
            raise NotFound(f"no remote table {name}")
        return table

    # -- changing (admins) ---------------------------------------------------------
    def declare(
        self,
        engine: Engine,
        name: str,
        source: str,
        describe: Callable[[str], Described],
        *,
        description: str | None = None,
        created_by: str | None = None,
    ) -> RemoteTable:
        """Declare `name` as the Snowflake table `source`: read its columns and rows from
        Snowflake's metadata, then create the placeholder view. CONFLICT if the name is
        taken (by a local table, a view, or another remote table)."""
        schema, table = _parts(name)
        if self.get(f"{schema}.{table}") is not None:
            raise Conflict(f"remote table {schema}.{table} already exists; DELETE it first")
        columns, rows = describe(source)
        now = time.time()
        remote = RemoteTable(
            schema=schema,
            table=table,
            source=source,
            columns=tuple(columns),
            rows=rows,
            description=description,
            created_at=now,
            refreshed_at=now,
            created_by=created_by,
        )
        self._create_placeholder(engine, remote, replace=False)
        self.meta.execute(
            "INSERT INTO remote_tables (name, schema_name, table_name, source, description,"
            " columns, rows, created_at, refreshed_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                remote.name,
                schema,
                table,
                source,
                description,
                _columns_json(remote.columns),
                rows,
                now,
                now,
                created_by,
            ),
        )
        self._invalidate()
        return remote

    def refresh(
        self, engine: Engine, name: str, describe: Callable[[str], Described]
    ) -> RemoteTable:
        """Read the columns and row count from Snowflake again (the table changed there)."""
        old = self.require(name)
        columns, rows = describe(old.source)
        now = time.time()
        remote = RemoteTable(
            schema=old.schema,
            table=old.table,
            source=old.source,
            columns=tuple(columns),
            rows=rows,
            description=old.description,
            created_at=old.created_at,
            refreshed_at=now,
            created_by=old.created_by,
        )
        self._create_placeholder(engine, remote, replace=True)
        self.meta.execute(
            "UPDATE remote_tables SET columns = ?, rows = ?, refreshed_at = ? WHERE name = ?",
            (_columns_json(remote.columns), rows, now, remote.name),
        )
        self._invalidate()
        return remote

    def drop(self, engine: Engine, name: str) -> None:
        """Forget a remote table and drop its placeholder (nothing changes in Snowflake)."""
        remote = self.require(name)
        with engine.writer() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {_ref(remote)}")
        self.meta.execute("DELETE FROM remote_tables WHERE name = ?", (remote.name,))
        self._invalidate()

    # -- plumbing ---------------------------------------------------------------------
    def _create_placeholder(self, engine: Engine, remote: RemoteTable, *, replace: bool) -> None:
        if not remote.columns:
            raise InvalidArgument(f"source {remote.source!r} has no columns")
        columns = ", ".join(f"{quote_ident(c.name)} {c.duckdb_type}" for c in remote.columns)
        with engine.writer() as cur:
            taken = cur.execute(
                "SELECT 1 FROM duckdb_tables() WHERE lower(schema_name) = $1 AND lower(table_name) = $2"
                " UNION ALL SELECT 1 FROM duckdb_views() WHERE NOT internal"
                " AND lower(schema_name) = $1 AND lower(view_name) = $2",
                [remote.schema.lower(), remote.table.lower()],
            ).fetchall()
            if taken and not replace:
                raise Conflict(
                    f"{remote.schema}.{remote.table} is already a local table or view; "
                    "choose another name for the remote table"
                )
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(remote.schema)}")
            # CHECK (false): no row can ever be written here by mistake.
            cur.execute(
                f"CREATE OR REPLACE TABLE {_ref(remote)} ({columns},"
                f" CONSTRAINT {PLACEHOLDER_CONSTRAINT} CHECK (false))"
            )

    def _load(self) -> dict[str, RemoteTable]:
        tables = self._tables
        if tables is not None:
            return tables
        with self._lock:
            rows = self.meta.all("SELECT * FROM remote_tables")
            tables = {r["name"]: _from_row(r) for r in rows}
            self._tables = tables
        return tables

    def _invalidate(self) -> None:
        with self._lock:
            self._tables = None


def _key(name: str) -> str:
    schema, table = parse_table_ref(name)
    return f"{schema}.{table}".lower()


def _parts(name: str) -> tuple[str, str]:
    if "." not in name:
        raise InvalidArgument(f"remote table name {name!r} must be schema.table")
    schema, table = parse_table_ref(name)
    validate_name(schema, "schema name")
    validate_name(table, "table name")
    return schema, table


def _ref(remote: RemoteTable) -> str:
    return f"{quote_ident(remote.schema)}.{quote_ident(remote.table)}"


def _columns_json(columns: Iterable[RemoteColumn]) -> str:
    return json.dumps([[c.name, c.duckdb_type, c.snowflake_type] for c in columns])


def _from_row(row: Any) -> RemoteTable:
    return RemoteTable(
        schema=row["schema_name"],
        table=row["table_name"],
        source=row["source"],
        columns=tuple(RemoteColumn(*c) for c in json.loads(row["columns"])),
        rows=row["rows"],
        description=row["description"],
        created_at=row["created_at"],
        refreshed_at=row["refreshed_at"],
        created_by=row["created_by"],
    )
