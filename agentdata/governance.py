"""Per-token row filters and column masks, enforced on DuckDB's own parse tree.

A token may carry

    row_filters:  {"sales.orders": "region = 'EU'"}
    column_masks: {"crm.customers": {"ssn": "last4", "email": "hash"}}

For such a token (admins are exempt) the guard (`agentdata.sqlguard`) replaces every
reference to a governed table in the statement's parse tree, wherever it stands (FROM,
joins, subqueries, CTE bodies, `query_table()`, the body of a view it inlines), with a
subquery over the same table that keeps only the rows the filter admits and projects
each masked column, under its own name, as its mask:

    FROM sales.orders o
 -> FROM (SELECT * REPLACE (sha256('<salt>' || CAST(email AS VARCHAR)) AS email)
          FROM sales.orders WHERE (region = 'EU')) AS o

(Masked columns are listed one by one in the real subquery; `* REPLACE` shows the idea.)
Every later use of the column (functions, WHERE, GROUP BY, ORDER BY, join keys) sees
the masked value only, so a mask cannot be undone by computing on it, and a filter on
a raw value (`WHERE ssn = '...'`) can only ever match masked values.

Masks: `null` (NULL of the column's type), `hash` (hex SHA-256 of the value salted
per server: stable, joinable, not reversible without the salt), `redact` (the string
`'***'`), `last4` (all but the last 4 characters replaced by `*`).

Filters and masks are validated when the token is created (`validate`): the table
must exist, a filter must parse as one boolean expression over that table's columns
(no subqueries, no parameters), and a mask must name a real column and a known kind.
The canonical text (DuckDB's own printing of the parsed expression) is what the token
carries.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from agentdata import sql_tree
from agentdata.errors import AgentdataError, InvalidArgument, PermissionDenied
from agentdata.names import parse_table_ref, quote_ident
from agentdata.sql_tree import Node

if TYPE_CHECKING:
    from agentdata.tokens import Principal

#: The mask kinds a column may have.
MASKS = ("null", "hash", "redact", "last4")

#: Field metadata key set on a masked column in table listings (value: the mask kind).
MASK_METADATA = b"agentdata.mask"

_TARGET = "__agentdata_filter_target"
#: Node classes a row filter may contain: plain expressions over the row.
_FILTER_CLASSES = frozenset(
    {
        "CONSTANT",
        "COLUMN_REF",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "FUNCTION",
        "CASE",
        "CAST",
        "BETWEEN",
        "COLLATE",
    }
)


@dataclass(frozen=True)
class TablePolicy:
    """What a token sees of one table: a row filter and masked columns."""

    row_filter: str | None
    masks: tuple[tuple[str, str], ...]  # (column lower case, mask kind)

    def mask_of(self, column: str) -> str | None:
        return dict(self.masks).get(column.lower())


@dataclass(frozen=True)
class Governance:
    """A token's row filters and column masks (hashable: part of cache keys)."""

    row_filters: tuple[tuple[str, str], ...] = ()
    column_masks: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    @classmethod
    def from_maps(
        cls,
        row_filters: Mapping[str, str] | None,
        column_masks: Mapping[str, Mapping[str, str]] | None,
    ) -> Governance | None:
        """From the JSON forms a token carries (already validated); None if empty."""
        filters = tuple(sorted((k.lower(), v) for k, v in (row_filters or {}).items()))
        masks = tuple(
            sorted(
                (k.lower(), tuple(sorted((c.lower(), m) for c, m in cols.items())))
                for k, cols in (column_masks or {}).items()
                if cols
            )
        )
        if not filters and not masks:
            return None
        return cls(filters, masks)

    def row_filter_map(self) -> dict[str, str]:
        return dict(self.row_filters)

    def column_mask_map(self) -> dict[str, dict[str, str]]:
        return {t: dict(cols) for t, cols in self.column_masks}

    @property
    def tables(self) -> frozenset[str]:
        """Every governed table, as lower-case "schema.table"."""
        return frozenset(t for t, _ in self.row_filters) | frozenset(
            t for t, _ in self.column_masks
        )

    def policy(self, schema: str, table: str) -> TablePolicy | None:
        """The policy for `schema.table`, or None if the token sees it whole."""
        key = f"{schema}.{table}".lower()
        cached: dict[str, TablePolicy | None] = self.__dict__.setdefault("_policies", {})
        if key not in cached:
            row_filter = dict(self.row_filters).get(key)
            masks = dict(self.column_masks).get(key, ())
            cached[key] = TablePolicy(row_filter, masks) if row_filter or masks else None
        return cached[key]

    def governs_name(self, name: str) -> bool:
        """True if some governed table (in any schema) is called `name`."""
        return any(t.split(".", 1)[1] == name.lower() for t in self.tables)


def mask_salt(secret: str) -> str:
    """The per-server salt of `hash` masks, derived from the server's JWT secret (so it
    is stable across restarts and never stored or shown)."""
    return hmac.new(secret.encode(), b"agentdata column mask salt", hashlib.sha256).hexdigest()


#: Salts in use in this process: engine messages quote the SQL that failed (DuckDB's
#: "LINE 1: ..." context), which for a masked table holds the salt.
_SALTS: set[str] = set()


def register_salt(salt: str) -> None:
    """Remember a salt so `hide_salts` can take it out of messages."""
    if salt:
        _SALTS.add(salt)


#: What DuckDB quotes from the data in an error: 'strings' and bare numbers.
_QUOTED_VALUE = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
#: DuckDB's echo of the statement it ran (the rewritten one: filters and masks).
_SQL_ECHO = re.compile(r"\n\s*LINE \d+:.*", re.S)


def redact_values(text: str) -> str:
    """An error text as a governed token may see it: without the values DuckDB quotes
    from rows (a conversion error names the value it met, and DuckDB may evaluate a
    condition before the row filter) and without the rewritten statement it echoes."""
    text = _SQL_ECHO.sub("", text)
    text = _QUOTED_VALUE.sub("'<value>'", text)
    return _NUMBER.sub("<value>", text).strip()


def redacting_errors(
    batches: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """`batches`, any error raised while streaming them redacted (`redact_values`)."""
    try:
        yield from batches
    except AgentdataError as e:
        message = redact_values(e.message)
        if message != e.message:
            e.message = message
            e.args = (message,)
        raise


def hide_salts(text: str) -> str:
    """`text` with every registered salt replaced by `<salt>`."""
    for salt in _SALTS:
        if salt in text:
            text = text.replace(salt, "<salt>")
    return text


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def mask_expression(column: str, kind: str, salt: str) -> str:
    """SQL for a masked column's value (`column` unquoted)."""
    col = quote_ident(column)
    text = f"CAST({col} AS VARCHAR)"
    if kind == "null":
        # NULL of the column's own type, without naming the type.
        return f"CASE WHEN false THEN {col} END"
    if kind == "hash":
        return f"sha256({_literal(salt)} || {text})"
    if kind == "redact":
        return "'***'"
    if kind == "last4":
        return f"repeat('*', greatest(length({text}) - 4, 0)) || right({text}, 4)"
    raise InvalidArgument(f"unknown mask {kind!r}: use one of {', '.join(MASKS)}")


def source_sql(
    cur: duckdb.DuckDBPyConnection, schema: str, table: str, policy: TablePolicy, salt: str
) -> str:
    """The SELECT a governed table is read through (server-built from validated parts).

    Masked columns are listed one by one, in the table's order: `* REPLACE (...)` would
    be shorter, but DuckDB serializes its replace list in no stable order, and a tree
    that does not round-trip is refused by the guard."""
    ref = f"{quote_ident(schema)}.{quote_ident(table)}"
    select = "*"
    if policy.masks:
        columns = [
            str(r[0])
            for r in cur.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database()"
                " AND lower(schema_name) = $1 AND lower(table_name) = $2 ORDER BY column_index",
                [schema.lower(), table.lower()],
            ).fetchall()
        ]
        masks = dict(policy.masks)
        select = ", ".join(
            f"{mask_expression(c, masks[c.lower()], salt)} AS {quote_ident(c)}"
            if c.lower() in masks
            else quote_ident(c)
            for c in columns
        )
    where = f" WHERE ({policy.row_filter})" if policy.row_filter else ""
    return f"SELECT {select} FROM {ref}{where}"


def wrap(
    cur: duckdb.DuckDBPyConnection,
    ref: Node,
    schema: str,
    table: str,
    policy: TablePolicy,
    salt: str,
) -> Node:
    """A subquery table reference standing for the BASE_TABLE `ref` as `policy` allows:
    the original alias (or the table's name, so `orders.id` still binds), column
    aliases and sample are kept."""
    if ref.get("at_clause"):
        raise PermissionDenied("AT (time travel) is not available on a filtered or masked table")
    wrapped: Node = sql_tree.parse_table_ref(
        cur, f"SELECT * FROM ({source_sql(cur, schema, table, policy, salt)})"
    )
    wrapped["alias"] = ref.get("alias") or table
    if ref.get("column_name_alias"):
        wrapped["column_name_alias"] = copy.deepcopy(ref["column_name_alias"])
    if ref.get("sample"):
        wrapped["sample"] = copy.deepcopy(ref["sample"])
    return wrapped


# -- views ---------------------------------------------------------------------------
def view_body(
    cur: duckdb.DuckDBPyConnection, schema: str, name: str
) -> tuple[Node, list[str]] | None:
    """(SELECT node, column names) of the view `schema.name`, or None if it is no view.

    Unqualified table names in the body are qualified as DuckDB binds them inside the
    view: the view's own schema if it holds such an object, else `main`."""
    rows = cur.execute(
        "SELECT sql FROM duckdb_views() WHERE database_name = current_database()"
        " AND NOT internal AND lower(schema_name) = $1 AND lower(view_name) = $2",
        [schema.lower(), name.lower()],
    ).fetchall()
    if not rows:
        return None
    query = _view_query(str(rows[0][0]))
    tree = sql_tree.serialize(cur, query) if query is not None else None
    if tree is None:
        raise PermissionDenied("a view over a filtered or masked table cannot be checked")
    # The binder's names for the view's columns: duckdb_columns() shows placeholders
    # (`__dummy_col0`) for a `SELECT *` view once the catalog has changed.
    columns = list(
        cur.sql(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(name)} LIMIT 0").columns
    )
    local = {
        str(r[0]).lower()
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            " AND lower(schema_name) = $1 UNION SELECT view_name FROM duckdb_views()"
            " WHERE database_name = current_database() AND lower(schema_name) = $1",
            [schema.lower()],
        ).fetchall()
    }
    ctes = {
        str(e["key"]).lower()
        for n in sql_tree.nodes(tree)
        for e in (n.get("cte_map") or {}).get("map", [])
        if isinstance(e, dict) and isinstance(e.get("key"), str)
    }

    def qualify(node: Node) -> Node | None:
        if node.get("type") == "BASE_TABLE" and not node.get("schema_name"):
            table = str(node.get("table_name") or "").lower()
            if not node.get("catalog_name") and table not in ctes:
                node = dict(node)
                node["schema_name"] = schema if table in local else "main"
                return node
        return None

    node = sql_tree.replace_nodes(tree["statements"][0]["node"], qualify)
    return node, columns


def may_reach(cur: duckdb.DuckDBPyConnection, gov: Governance, schema: str, name: str) -> bool:
    """True if the view `schema.name` may read a governed table, judged by table name
    alone (the binder reports names as the view wrote them, unqualified included)."""
    try:
        under = cur.get_table_names(
            f"SELECT * FROM {quote_ident(schema)}.{quote_ident(name)}", qualified=False
        )
    except duckdb.Error:
        return True
    return any(gov.governs_name(t.strip('"')) for t in under)


def _view_query(create_sql: str) -> str | None:
    """The query of `CREATE VIEW name [(cols)] AS query`, from DuckDB's tokenizer."""
    depth = 0
    for start, kind in duckdb.tokenize(create_sql):
        word = create_sql[start : start + 2]
        if create_sql[start] == "(":
            depth += 1
        elif create_sql[start] == ")":
            depth -= 1
        elif (
            depth == 0
            and kind == duckdb.token_type.keyword
            and word.upper() == "AS"
            and not create_sql[start + 2 : start + 3].isalnum()
        ):
            return create_sql[start + 2 :].strip().rstrip(";")
    return None


def subquery(
    cur: duckdb.DuckDBPyConnection, node: Node, alias: str, columns: list[str], original: Node
) -> Node:
    """A SUBQUERY table reference over a SELECT node (an inlined view), named and with
    the columns the view reference had."""
    ref: Node = sql_tree.parse_table_ref(cur, "SELECT * FROM (SELECT 1) AS x")
    ref["subquery"]["node"] = node
    ref["alias"] = original.get("alias") or alias
    ref["sample"] = copy.deepcopy(original.get("sample"))
    ref["column_name_alias"] = copy.deepcopy(original.get("column_name_alias")) or columns
    return ref


# -- validation at token creation ---------------------------------------------------------
def validate(
    cur: duckdb.DuckDBPyConnection,
    row_filters: Any,
    column_masks: Any,
) -> Governance | None:
    """Check a token's row_filters and column_masks against the database (on a READ
    ONLY cursor) and return them in canonical form; InvalidArgument says what is wrong."""
    filters: dict[str, str] = {}
    masks: dict[str, dict[str, str]] = {}
    if row_filters is not None:
        if not isinstance(row_filters, dict):
            raise InvalidArgument('row_filters must be an object {"schema.table": "<condition>"}')
        for key, expr in row_filters.items():
            schema, table = parse_table_ref(str(key))
            columns = _table_columns(cur, schema, table, "row_filters")
            if not isinstance(expr, str) or not expr.strip():
                raise InvalidArgument(f"row_filters[{key!r}] must be a SQL condition (a string)")
            filters[f"{schema}.{table}".lower()] = _canonical_filter(
                cur, schema, table, expr, columns, str(key)
            )
    if column_masks is not None:
        if not isinstance(column_masks, dict):
            raise InvalidArgument(
                'column_masks must be an object {"schema.table": {"column": "null|hash|redact|last4"}}'
            )
        for key, cols in column_masks.items():
            schema, table = parse_table_ref(str(key))
            columns = _table_columns(cur, schema, table, "column_masks")
            if not isinstance(cols, dict) or not cols:
                raise InvalidArgument(
                    f'column_masks[{key!r}] must be an object {{"column": "null|hash|redact|last4"}}'
                )
            entry: dict[str, str] = {}
            for column, kind in cols.items():
                if str(column).lower() not in columns:
                    raise InvalidArgument(f"column_masks[{key!r}]: table has no column {column!r}")
                if kind not in MASKS:
                    raise InvalidArgument(
                        f"column_masks[{key!r}][{column!r}]: mask must be one of "
                        f"{', '.join(MASKS)} (got {kind!r})"
                    )
                entry[columns[str(column).lower()]] = str(kind)
            masks[f"{schema}.{table}".lower()] = entry
    return Governance.from_maps(filters, masks)


def _table_columns(
    cur: duckdb.DuckDBPyConnection, schema: str, table: str, what: str
) -> dict[str, str]:
    """lower-case column name -> its real name, for a base table (views are refused:
    a filter belongs on the table, and then holds under every view over it)."""
    rows = cur.execute(
        "SELECT c.column_name FROM duckdb_columns() c JOIN duckdb_tables() t"
        " ON c.database_name = t.database_name AND c.schema_name = t.schema_name"
        " AND c.table_name = t.table_name WHERE t.database_name = current_database()"
        " AND NOT t.temporary AND lower(t.schema_name) = $1 AND lower(t.table_name) = $2"
        " ORDER BY c.column_index",
        [schema.lower(), table.lower()],
    ).fetchall()
    if not rows:
        raise InvalidArgument(f"{what}: no table {schema}.{table} (a base table, not a view)")
    return {str(r[0]).lower(): str(r[0]) for r in rows}


def _canonical_filter(
    cur: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    expr: str,
    columns: Mapping[str, str],
    key: str,
) -> str:
    """DuckDB's own text of one boolean expression over the table's columns."""
    bad = InvalidArgument(
        f"row_filters[{key!r}] must be one SQL condition over the table's columns "
        "(e.g. \"region = 'EU'\"), without subqueries or parameters"
    )
    try:
        tree = sql_tree.serialize(cur, f"SELECT * FROM {_TARGET} WHERE {expr}")
    except duckdb.Error:
        raise bad from None
    if tree is None:
        raise bad
    node = tree["statements"][0]["node"]
    star = node.get("select_list") or []
    from_table = node.get("from_table") or {}
    where = node.get("where_clause")
    plain = (
        node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not (node.get("cte_map") or {}).get("map")
        and len(star) == 1
        and star[0].get("class") == "STAR"
        and from_table.get("type") == "BASE_TABLE"
        and from_table.get("table_name") == _TARGET
        and not from_table.get("alias")
        and where is not None
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and node.get("sample") is None
    )
    if not plain:
        raise bad
    for n in sql_tree.nodes(where):
        cls = n.get("class")
        if cls is not None and cls not in _FILTER_CLASSES:
            raise bad
        if cls == "COLUMN_REF":
            names = n.get("column_names") or []
            if not names or len(names) > 2 or str(names[-1]).lower() not in columns:
                raise InvalidArgument(
                    f"row_filters[{key!r}]: table {schema}.{table} has no column "
                    f"{'.'.join(map(str, names))!r}"
                )
    canonical = sql_tree.expression_text(cur, where)
    ref = f"{quote_ident(schema)}.{quote_ident(table)}"
    try:
        # In WHERE too: an aggregate or window function binds in a select list only.
        types = cur.sql(f"SELECT ({canonical}) AS f FROM {ref} WHERE ({canonical}) LIMIT 0").types
    except duckdb.Error as e:
        raise InvalidArgument(f"row_filters[{key!r}]: {str(e).splitlines()[0]}") from None
    if str(types[0]) != "BOOLEAN":
        raise InvalidArgument(f"row_filters[{key!r}] must be a condition (BOOLEAN), not {types[0]}")
    return canonical


def policy_for(principal: Principal, schema: str, table: str) -> TablePolicy | None:
    """The policy `principal` reads `schema.table` under (None for admins and for
    tables the token sees whole)."""
    if principal.is_admin or principal.governance is None:
        return None
    return principal.governance.policy(schema, table)


def mask_of(field: pa.Field) -> str | None:
    """The mask kind a listed column carries (see `mark_masked`), or None."""
    value = (field.metadata or {}).get(MASK_METADATA)
    return value.decode() if value is not None else None


def masked_type(field: pa.Field, type_name: str) -> str:
    """The DuckDB type name a listed column has as the token reads it: a `hash`,
    `redact` or `last4` mask turns any column into VARCHAR."""
    return "VARCHAR" if mask_of(field) in ("hash", "redact", "last4") else type_name


def mark_masked(schema: pa.Schema, policy: TablePolicy) -> pa.Schema:
    """`schema` with each masked column's field tagged `agentdata.mask: <kind>` (how
    listings show a column as masked)."""
    fields = []
    for f in schema:
        kind = policy.mask_of(f.name)
        if kind is not None:
            f = f.with_metadata({**(f.metadata or {}), MASK_METADATA: kind.encode()})
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)
