"""DuckDB's own parse tree, as JSON: read it, change it, turn it back into SQL.

`json_serialize_sql` gives the tree DuckDB's parser builds (SELECT statements only);
`json_deserialize_sql` turns a tree back into SQL. The guard walks this tree to see
every function, table function and catalog reference a statement names, and rewrites
it (row filters on catalog sources, bounds on value-amplifying functions) on the tree,
never by editing text. A rewritten tree must serialize back to itself, so nothing the
JSON form cannot carry silently drops out of the check.

Node shapes used here (DuckDB 2.0):
    {"class": "FUNCTION", "function_name": "abs", "schema": "", "arguments": [{"name": "", "expression": {...}}]}
    {"class": "WINDOW", "function_name": "row_number", ...}
    {"type": "TABLE_FUNCTION", "function": {FUNCTION node}, "alias": "", "column_name_alias": [...]}
    {"type": "BASE_TABLE", "schema_name": "demo", "table_name": "orders", "catalog_name": ""}
    {"type": "SHOW_REF", "show_type": "SHOW_SPECIAL" | "DESCRIBE" | "SUMMARY", "table_name": "\\"tables\\"", "query": ...}
    {"type": "SUBQUERY", "subquery": {"node": ...}, "alias": ""}
    {"class": "CONSTANT", "literal": {"kind": "STRING", "text": "..."}}
    {"class": "PARAMETER", ...}
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import duckdb

Node = dict[str, Any]

_LOCATION_KEYS = ("query_location", "query_location_length")


def serialize(cur: duckdb.DuckDBPyConnection, sql: str) -> Node | None:
    """The parse tree of one SELECT statement, or None if DuckDB cannot serialize it."""
    raw = cur.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()[0][0]
    tree: Node = json.loads(raw)
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return None
    return tree


def deserialize(cur: duckdb.DuckDBPyConnection, tree: Node) -> str:
    """SQL text for a tree `serialize` returned (possibly changed)."""
    return str(cur.execute("SELECT json_deserialize_sql($1)", [json.dumps(tree)]).fetchall()[0][0])


def round_trips(cur: duckdb.DuckDBPyConnection, sql: str, tree: Node) -> bool:
    """True if `sql` parses to exactly `tree` (source positions aside)."""
    again = serialize(cur, sql)
    return again is not None and without_locations(again) == without_locations(tree)


def parse_expression(cur: duckdb.DuckDBPyConnection, expr_sql: str) -> Node:
    """The tree of one scalar expression (from `SELECT <expr>`)."""
    tree = serialize(cur, f"SELECT {expr_sql}")
    if tree is None:  # our own templates always parse
        raise ValueError(f"not an expression: {expr_sql}")
    return tree["statements"][0]["node"]["select_list"][0]  # type: ignore[no-any-return]


def parse_table_ref(cur: duckdb.DuckDBPyConnection, select_sql: str) -> Node:
    """The FROM node of `select_sql` (our own templates)."""
    tree = serialize(cur, select_sql)
    if tree is None:
        raise ValueError(f"not a select: {select_sql}")
    return tree["statements"][0]["node"]["from_table"]  # type: ignore[no-any-return]


def expression_text(cur: duckdb.DuckDBPyConnection, expr: Node) -> str:
    """DuckDB's own text of an expression node (what it names an unaliased column)."""
    tree = serialize(cur, "SELECT 1")
    assert tree is not None
    tree["statements"][0]["node"]["select_list"] = [expr]
    return deserialize(cur, tree).removeprefix("SELECT ")


def without_locations(node: Any) -> Any:
    """A copy of a tree without source positions (they differ between texts)."""
    if isinstance(node, list):
        return [without_locations(n) for n in node]
    if isinstance(node, dict):
        return {k: without_locations(v) for k, v in node.items() if k not in _LOCATION_KEYS}
    return node


def nodes(tree: Any) -> Iterator[Node]:
    """Every dict in the tree, parents before children."""
    stack = [tree]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(reversed(list(cur.values())))
        elif isinstance(cur, list):
            stack.extend(reversed(cur))


def replace_nodes(tree: Any, replace: Callable[[Node], Node | None]) -> Any:
    """A copy of `tree` where each node for which `replace` returns a node is swapped
    for it (children of a replaced node are not visited again)."""
    if isinstance(tree, list):
        return [replace_nodes(n, replace) for n in tree]
    if isinstance(tree, dict):
        swapped = replace(tree)
        if swapped is not None:
            return swapped
        return {k: replace_nodes(v, replace) for k, v in tree.items()}
    return tree


def function_arguments(func: Node) -> list[Node]:
    """The argument expressions of a FUNCTION node."""
    return [a.get("expression", a) for a in func.get("arguments", []) if isinstance(a, dict)]


def string_constant(expr: Node) -> str | None:
    """The value of a string literal node, else None."""
    if expr.get("class") != "CONSTANT":
        return None
    literal = expr.get("literal") or {}
    if literal.get("kind") != "STRING":
        return None
    text = literal.get("text")
    return text if isinstance(text, str) else None


def substitute(template: Node, values: dict[str, Node]) -> Node:
    """`template` with each column reference named in `values` replaced by a copy of
    that node (templates name their holes `__a`, `__b`, ...)."""

    def swap(node: Node) -> Node | None:
        if node.get("class") == "COLUMN_REF":
            names = node.get("column_names") or []
            if len(names) == 1 and names[0] in values:
                return copy.deepcopy(values[names[0]])
        return None

    return replace_nodes(copy.deepcopy(template), swap)  # type: ignore[no-any-return]


def ident(text: str) -> str:
    """An identifier from the tree (`"tables"` is quoted there) without its quotes."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text
