"""Which reads start at no cost: DuckDB streams them from their first row.

Starting a query in DuckDB runs every pipeline that must finish before the first row
can come out (a sort, an aggregate, a hash join's build side, a window); a statement
with none of those (one table, filters, projections of scalar functions, a LIMIT)
does nothing until its first batch is asked for. Such a read can be started where
its schema is asked for (Flight's GetFlightInfo) and handed to the call that fetches
it, saving a second check and bind, without making that first call wait on real
work or hiding the query from `cancel` for longer than a lookup takes.

`starts_at_once` decides from DuckDB's parse tree (agentdata.sql_tree), and says
False for anything it does not recognise: a wrong False costs a bind, nothing more.
"""

from __future__ import annotations

from collections.abc import Container
from functools import cache
from typing import Any

import duckdb

from agentdata.sql_tree import Node

#: SELECT-node keys whose presence (non-empty) means work before the first row.
_BLOCKING_KEYS = ("group_expressions", "group_sets", "having", "sample", "qualify")
#: Expression classes and table-reference types that may block or read other tables.
_BLOCKING_CLASSES = frozenset({"SUBQUERY", "WINDOW"})
_BLOCKING_TYPES = frozenset({"SUBQUERY", "JOIN", "TABLE_FUNCTION", "EXPRESSION_LIST", "PIVOT"})


def starts_at_once(tree: Node, tables: Container[tuple[str, str]], macros: Container[str]) -> bool:
    """True if the one SELECT in `tree` reads one user table (a table in `tables`,
    as (schema, name) in lower case, not a view) through filters, scalar functions and
    a LIMIT only; `macros` are user macro names (a call of one may hide anything)."""
    statements = tree.get("statements") or []
    if len(statements) != 1:
        return False
    node = statements[0].get("node") or {}
    if node.get("type") != "SELECT_NODE":
        return False
    if any(node.get(k) for k in _BLOCKING_KEYS):
        return False
    if node.get("aggregate_handling", "STANDARD_HANDLING") != "STANDARD_HANDLING":
        return False
    if (node.get("cte_map") or {}).get("map"):
        return False
    if any(m.get("type") != "LIMIT_MODIFIER" for m in node.get("modifiers") or []):
        return False
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("catalog_name"):
        return False
    schema = str(source.get("schema_name") or "main").lower()
    if (schema, str(source.get("table_name") or "").lower()) not in tables:
        return False
    return _only_scalar_calls(node, macros)


def _only_scalar_calls(node: Any, macros: Container[str]) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        if item.get("class") in _BLOCKING_CLASSES or item.get("type") in _BLOCKING_TYPES:
            return False
        if item.get("class") == "FUNCTION":
            name = str(item.get("function_name", "")).lower()
            if item.get("schema") or name in macros or name not in streaming_scalars():
                return False
        stack.extend(item.values())
    return True


@cache
def streaming_scalars() -> frozenset[str]:
    """DuckDB's built-in scalar functions with no aggregate, window or macro of the
    same name (a name with such an overload could be one)."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT function_name, bool_and(function_type = 'scalar') FROM duckdb_functions()"
            " WHERE internal GROUP BY function_name"
        ).fetchall()
    finally:
        con.close()
    return frozenset(name for name, only_scalar in rows if only_scalar)
