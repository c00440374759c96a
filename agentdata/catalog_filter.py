"""Catalog introspection for table-limited tokens: the same views, fewer rows.

Agents rely on `information_schema.tables`, `duckdb_tables()`, `SHOW TABLES` and
friends. For a token limited to some tables, the guard replaces each such source in
the parse tree with a subquery over the very same source that keeps only rows naming
objects the token may read:

    FROM duckdb_tables() t
 -> FROM (SELECT * FROM duckdb_tables() WHERE database_name = current_database()
          AND list_contains([['demo', 'orders'], ...], [lower(schema_name), lower(table_name)])) t

Readable objects are the tables the allow-list matches plus the views whose every
underlying table it matches (a view's SQL would otherwise name what lies beneath);
readable schemas are those holding a readable object.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from agentdata import sql_tree
from agentdata.names import binder_table_parts, quote_ident
from agentdata.sql_tree import Node
from agentdata.tokens import Principal

#: source -> (database column, schema column, object column or None for schema lists).
SOURCES: dict[str, tuple[str | None, str | None, str | None]] = {
    "duckdb_tables": ("database_name", "schema_name", "table_name"),
    "duckdb_columns": ("database_name", "schema_name", "table_name"),
    "duckdb_views": ("database_name", "schema_name", "view_name"),
    "duckdb_constraints": ("database_name", "schema_name", "table_name"),
    "duckdb_indexes": ("database_name", "schema_name", "table_name"),
    "duckdb_schemas": ("database_name", "schema_name", None),
    "information_schema.tables": ("table_catalog", "table_schema", "table_name"),
    "information_schema.columns": ("table_catalog", "table_schema", "table_name"),
    "information_schema.views": ("table_catalog", "table_schema", "table_name"),
    "information_schema.table_constraints": ("table_catalog", "table_schema", "table_name"),
    "information_schema.key_column_usage": ("table_catalog", "table_schema", "table_name"),
    "information_schema.schemata": ("catalog_name", "schema_name", None),
    "show tables": (None, None, "name"),  # the current schema (main) only
    "show all tables": ("database", "schema", "name"),
}


@dataclass(frozen=True)
class Visible:
    """What a token may see in the catalog."""

    objects: frozenset[tuple[str, str]]  # (schema, name), lower case
    schemas: frozenset[str]


def visible(cur: duckdb.DuckDBPyConnection, principal: Principal) -> Visible:
    """The tables and views `principal` may read, and the schemas holding them."""
    rows = cur.execute(
        "SELECT schema_name, table_name, false FROM duckdb_tables()"
        " WHERE database_name = current_database() AND NOT temporary"
        " UNION ALL SELECT schema_name, view_name, true FROM duckdb_views()"
        " WHERE database_name = current_database() AND NOT internal AND NOT temporary"
    ).fetchall()
    objects: set[tuple[str, str]] = set()
    for schema, name, is_view in rows:
        if not principal.can_read(schema, name):
            continue
        if is_view and not view_is_readable(cur, principal, schema, name):
            continue
        objects.add((schema.lower(), name.lower()))
    return Visible(frozenset(objects), frozenset(s for s, _ in objects))


def view_is_readable(
    cur: duckdb.DuckDBPyConnection, principal: Principal, schema: str, name: str
) -> bool:
    """True if every table under `schema.name` (a table reads only itself) is readable."""
    try:
        under = cur.get_table_names(
            f"SELECT * FROM {quote_ident(schema)}.{quote_ident(name)}", qualified=True
        )
    except duckdb.Error:
        return False
    return all(principal.can_read(*binder_table_parts(t)) for t in under)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def predicate(source: str, seen: Visible) -> str:
    """A SQL condition over `source`'s columns keeping only what `seen` allows."""
    db_col, schema_col, object_col = SOURCES[source]
    parts: list[str] = []
    if db_col is not None:
        parts.append(f"{quote_ident(db_col)} = current_database()")
    if object_col is None:
        items = ", ".join(_literal(s) for s in sorted(seen.schemas))
        listed = f"[{items}]" if items else "[]::VARCHAR[]"
        parts.append(f"list_contains({listed}, lower({quote_ident(schema_col or '')}))")
    elif schema_col is None:  # SHOW TABLES: the current schema is main
        items = ", ".join(_literal(n) for s, n in sorted(seen.objects) if s == "main")
        listed = f"[{items}]" if items else "[]::VARCHAR[]"
        parts.append(f"list_contains({listed}, lower({quote_ident(object_col)}))")
    else:
        pairs = ", ".join(f"[{_literal(s)}, {_literal(n)}]" for s, n in sorted(seen.objects))
        listed = f"[{pairs}]" if pairs else "[]::VARCHAR[][]"
        parts.append(
            f"list_contains({listed}, [lower({quote_ident(schema_col)}), lower({quote_ident(object_col)})])"
        )
    return " AND ".join(parts)


def wrap(cur: duckdb.DuckDBPyConnection, ref: Node, source: str, seen: Visible) -> Node:
    """A subquery table reference that reads `ref` filtered for `seen`, keeping the
    original alias and column aliases."""
    source_sql = "__agentdata_catalog_source"
    if ref.get("type") == "SHOW_REF":
        # DuckDB prints `SELECT * FROM <show> WHERE ...` as the bare SHOW statement,
        # dropping the WHERE: give the SHOW a subquery of its own.
        source_sql = f"(SELECT * FROM {source_sql})"
    template = sql_tree.parse_table_ref(
        cur, f"SELECT * FROM (SELECT * FROM {source_sql} WHERE {predicate(source, seen)})"
    )
    inner = dict(ref)
    alias, column_aliases = inner.get("alias", ""), inner.get("column_name_alias", [])
    inner["alias"] = ""
    if "column_name_alias" in inner:
        inner["column_name_alias"] = []

    def swap(node: Node) -> Node | None:
        if (
            node.get("type") == "BASE_TABLE"
            and node.get("table_name") == "__agentdata_catalog_source"
        ):
            return inner
        return None

    wrapped: Node = sql_tree.replace_nodes(template, swap)
    wrapped["alias"] = alias
    if column_aliases:
        wrapped["column_name_alias"] = column_aliases
    return wrapped
