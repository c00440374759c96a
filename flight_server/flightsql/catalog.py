"""Catalog metadata commands: catalogs, schemas, tables, table types, primary keys.

Everything is listed through the engine for the calling token, so a token limited to
some tables sees only those tables (and only the schemas that hold them). Filter
patterns are SQL LIKE patterns as Flight SQL defines them: `%` any run of characters,
`_` one character, `\\` escapes the next character; names match case-sensitively.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pyarrow as pa

from agentdata.engine import Engine, TableInfo
from agentdata.tokens import Principal
from flight_server.flightsql import schemas
from flight_server.flightsql.proto import FlightSql_pb2 as pb

TABLE_TYPES = ("TABLE", "VIEW")

# Column metadata keys clients (ADBC get_objects, JDBC) read from table schemas.
META_CATALOG = b"ARROW:FLIGHT:SQL:CATALOG_NAME"
META_SCHEMA = b"ARROW:FLIGHT:SQL:DB_SCHEMA_NAME"
META_TABLE = b"ARROW:FLIGHT:SQL:TABLE_NAME"
META_TYPE_NAME = b"ARROW:FLIGHT:SQL:TYPE_NAME"
#: The spec's key for a column's description (JDBC's REMARKS).
META_REMARKS = b"ARROW:FLIGHT:SQL:REMARKS"
#: Schema-level metadata: the table's own description (the spec has no key for it).
META_TABLE_DESCRIPTION = b"agentdata.description"
#: Schema-level metadata: where the table's data lives, "duckdb" or "snowflake" (remote).
META_LOCATION = b"agentdata.location"


def like(pattern: str | None) -> Callable[[str], bool]:
    """A matcher for a Flight SQL filter pattern (None matches everything)."""
    if pattern is None:
        return lambda _name: True
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    compiled = re.compile("".join(parts), re.DOTALL)
    return lambda name: compiled.fullmatch(name) is not None


def _catalog_matches(requested: str | None, catalog: str) -> bool:
    # Unset: no narrowing. "": objects without a catalog, and every object here has one.
    return requested is None or requested == catalog


def catalogs(catalog: str) -> pa.Table:
    """CommandGetCatalogs: the one database this server serves."""
    return pa.Table.from_pylist([{"catalog_name": catalog}], schema=schemas.CATALOGS)


def db_schemas(
    engine: Engine, principal: Principal, catalog: str, cmd: pb.CommandGetDbSchemas
) -> pa.Table:
    """CommandGetDbSchemas, filtered by catalog and schema pattern."""
    requested = cmd.catalog if cmd.HasField("catalog") else None
    matches = like(
        cmd.db_schema_filter_pattern if cmd.HasField("db_schema_filter_pattern") else None
    )
    rows = []
    if _catalog_matches(requested, catalog):
        rows = [
            {"catalog_name": catalog, "db_schema_name": s}
            for s in engine.list_schemas(principal)
            if matches(s)
        ]
    return pa.Table.from_pylist(rows, schema=schemas.DB_SCHEMAS)


def tables(
    engine: Engine, principal: Principal, catalog: str, cmd: pb.CommandGetTables
) -> pa.Table:
    """CommandGetTables, filtered; with each table's Arrow schema when asked."""
    requested = cmd.catalog if cmd.HasField("catalog") else None
    schema_ok = like(
        cmd.db_schema_filter_pattern if cmd.HasField("db_schema_filter_pattern") else None
    )
    table_ok = like(
        cmd.table_name_filter_pattern if cmd.HasField("table_name_filter_pattern") else None
    )
    types = {t.upper() for t in cmd.table_types}
    found: list[TableInfo] = []
    if _catalog_matches(requested, catalog):
        found = [
            t
            for t in engine.list_tables(principal)
            if schema_ok(t.schema) and table_ok(t.name) and (not types or t.kind in types)
        ]
    found.sort(key=lambda t: (t.schema, t.name, t.kind))
    rows = [
        {
            "catalog_name": catalog,
            "db_schema_name": t.schema,
            "table_name": t.name,
            "table_type": t.kind,
        }
        for t in found
    ]
    if not cmd.include_schema:
        return pa.Table.from_pylist(rows, schema=schemas.TABLES)
    for row, t in zip(rows, found, strict=True):
        described = _described(t, catalog, engine.column_types(t.schema, t.name))
        row["table_schema"] = described.serialize().to_pybytes()
    return pa.Table.from_pylist(rows, schema=schemas.TABLES_WITH_SCHEMA)


def _described(table: TableInfo, catalog: str, type_names: dict[str, str]) -> pa.Schema:
    """The table's Arrow schema with the Flight SQL column metadata clients look for,
    and the descriptions an admin set (column REMARKS, the table's in schema metadata)."""
    fields = []
    for field in table.arrow_schema:
        meta = dict(field.metadata or {})
        meta.update(
            {
                META_CATALOG: catalog.encode(),
                META_SCHEMA: table.schema.encode(),
                META_TABLE: table.name.encode(),
            }
        )
        if field.name in type_names:
            meta[META_TYPE_NAME] = type_names[field.name].encode()
        remarks = table.column_descriptions.get(field.name)
        if remarks:
            meta[META_REMARKS] = remarks.encode()
        fields.append(field.with_metadata(meta))
    schema_meta = dict(table.arrow_schema.metadata or {})
    schema_meta[META_LOCATION] = table.location.encode()
    if table.description:
        schema_meta[META_TABLE_DESCRIPTION] = table.description.encode()
    return pa.schema(fields, metadata=schema_meta or None)


def table_types() -> pa.Table:
    """CommandGetTableTypes."""
    return pa.Table.from_pylist(
        [{"table_type": t} for t in sorted(TABLE_TYPES)], schema=schemas.TABLE_TYPES
    )


def primary_keys(
    engine: Engine, principal: Principal, catalog: str, cmd: pb.CommandGetPrimaryKeys
) -> pa.Table:
    """CommandGetPrimaryKeys for one table (only tables the token may read)."""
    requested = cmd.catalog if cmd.HasField("catalog") else None
    rows = []
    if _catalog_matches(requested, catalog):
        schema = cmd.db_schema if cmd.HasField("db_schema") else None
        rows = [
            {
                "catalog_name": catalog,
                "db_schema_name": s,
                "table_name": t,
                "column_name": column,
                "key_name": None,
                "key_sequence": seq,
            }
            for s, t, column, seq in engine.primary_keys(principal, schema, cmd.table)
        ]
    return pa.Table.from_pylist(rows, schema=schemas.PRIMARY_KEYS)
