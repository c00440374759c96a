"""From a checked DuckDB statement to what Snowflake runs, with sqlglot.

Two plans, both built from the statement the guard approved (`CheckedStatement.sql`):

- whole pushdown (`whole_query`): the statement reads only remote tables, so all of it
  is translated from DuckDB's dialect to Snowflake's and sent as one query. Refused
  (None) when a function is unknown to sqlglot or a construct has no Snowflake form:
  the router then runs it as a mixed query instead, which is always correct.
- remote scans (`plan_scans`): for each remote table a statement reads, the columns
  it needs (projection pushdown) and the conditions on that table alone that can be
  applied before any join (filter pushdown), as `SELECT cols FROM source WHERE ...`.
  DuckDB then runs the whole statement over those scans, so a condition that is not
  pushed is still applied, and one that is pushed is applied twice (harmless).

Identifiers: DuckDB matches them case-insensitively; Snowflake folds unquoted ones to
upper case and matches quoted ones exactly. Every identifier is therefore sent quoted,
as Snowflake's exact column name where it names a remote column and in upper case
otherwise (what an unquoted name means to Snowflake), so aliases, CTE names and
columns resolve in Snowflake as they did in DuckDB.

A condition is pushed only when dropping the rows it rejects cannot change the result:
a WHERE conjunct on a table that is not on the null-supplying side of an outer join,
or an ON conjunct of the table's own INNER or LEFT join (as its right side). It must
name only that table's columns, and hold no subquery, aggregate, window, parameter,
volatile or unknown function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from agentdata.federation.catalog import RemoteTable

#: Functions whose value changes per call: a filter using one must run exactly once.
_VOLATILE = frozenset({"RANDOM", "RAND", "UUID", "GEN_RANDOM_UUID", "SETSEED", "NEXTVAL"})


def parse(sql: str) -> exp.Expr | None:
    """The statement as sqlglot reads DuckDB's dialect, or None if it cannot."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError:
        return None
    return tree


def remote_references(
    tree: exp.Expr, remotes: Mapping[str, RemoteTable]
) -> list[tuple[exp.Table, RemoteTable]]:
    """Every table reference in `tree` that names a remote table (not a CTE)."""
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    found = []
    for table in tree.find_all(exp.Table):
        if table.args.get("catalog") is not None or not table.name:
            continue
        schema = table.db.lower()
        if not schema and table.name.lower() in ctes:
            continue
        remote = remotes.get(f"{schema or 'main'}.{table.name.lower()}")
        if remote is not None:
            found.append((table, remote))
    return found


# -- whole pushdown ---------------------------------------------------------------------


def whole_query(
    tree: exp.Expr, remotes: Mapping[str, RemoteTable], limit: int | None
) -> str | None:
    """Snowflake SQL for a statement that reads only remote tables, or None when it
    cannot be translated with confidence."""
    tree = tree.copy()
    if not isinstance(tree, exp.Query):
        return None
    if any(True for _ in tree.find_all(exp.Anonymous, exp.Placeholder, exp.Parameter)):
        return None  # a function sqlglot does not know, or a placeholder
    references = remote_references(tree, remotes)
    if not references:
        return None
    _snowflake_identifiers(tree, _exact_names(r for _, r in references))
    for table, remote in references:
        alias = table.alias or table.name.upper()
        replacement = exp.to_table(remote.source, dialect="snowflake")
        replacement.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        table.replace(replacement)
    try:
        sql = tree.sql(dialect="snowflake", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError:
        return None
    if limit is not None:
        sql = f"SELECT * FROM (\n{sql}\n) LIMIT {int(limit)}"
    return sql


# -- remote scans -------------------------------------------------------------------------


@dataclass
class Scan:
    """What to read of one remote table for a mixed query."""

    remote: RemoteTable
    #: Exact Snowflake names, in the table's order (empty: any one column will do).
    columns: list[str] = field(default_factory=list)
    #: Snowflake conditions, one per reference, each the AND of its pushed conjuncts
    #: (None for a reference with none: then the whole table is read).
    conditions: list[str | None] = field(default_factory=list)
    #: True when the needed columns could not be worked out: read them all.
    all_columns: bool = False

    @property
    def condition(self) -> str | None:
        """The filter the scan applies: rows any reference may need."""
        if not self.conditions or any(c is None for c in self.conditions):
            return None
        unique = list(dict.fromkeys(c for c in self.conditions if c is not None))
        return unique[0] if len(unique) == 1 else " OR ".join(f"({c})" for c in unique)

    def sql(self) -> str:
        """`SELECT <columns> FROM <source> [WHERE <condition>]` in Snowflake's dialect."""
        names = [c.name for c in self.remote.columns]
        wanted = names if self.all_columns else [n for n in names if n in set(self.columns)]
        wanted = wanted or names[:1]
        projection = ", ".join(_quote(n) for n in wanted)
        sql = f"SELECT {projection} FROM {self.remote.source}"
        condition = self.condition
        return f"{sql} WHERE {condition}" if condition else sql

    def selected(self) -> list[str]:
        """The exact names `sql()` selects, in order."""
        names = [c.name for c in self.remote.columns]
        wanted = names if self.all_columns else [n for n in names if n in set(self.columns)]
        return wanted or names[:1]


def plan_scans(
    tree: exp.Expr,
    remotes: Mapping[str, RemoteTable],
    columns_of: Callable[[str, str], dict[str, str] | None],
) -> dict[str, Scan]:
    """The scan of each remote table `tree` reads (see the module docstring).

    `columns_of(schema, table)` gives a local table's or view's columns (name -> type),
    which sqlglot needs to tell whose column an unqualified name is."""
    scans = {r.name: Scan(r) for _, r in remote_references(tree, remotes)}
    qualified = _qualified(tree, remotes, columns_of)
    if qualified is None:
        for scan in scans.values():
            scan.all_columns = True
            scan.conditions.append(None)
        return scans
    from sqlglot.optimizer.scope import traverse_scope

    scopes = traverse_scope(qualified)
    for scope in scopes:
        for alias, source in scope.selected_sources.items():
            node = source[1] if isinstance(source, tuple) else source
            if not isinstance(node, exp.Table):
                continue
            remote = _remote_of(node, remotes)
            if remote is None:
                continue
            scan = scans.setdefault(remote.name, Scan(remote))
            _collect_columns(scan, scopes, scope, alias)
            scan.conditions.append(_pushed_condition(scope.expression, node, alias, remote))
    return scans


def _qualified(
    tree: exp.Expr,
    remotes: Mapping[str, RemoteTable],
    columns_of: Callable[[str, str], dict[str, str] | None],
) -> exp.Expr | None:
    from sqlglot.optimizer.qualify import qualify

    schema: dict[str, Any] = {}
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name, db = table.name.lower(), (table.db or "").lower()
        if not name or (not db and name in ctes):
            continue
        remote = remotes.get(f"{db or 'main'}.{name}")
        columns = (
            {c.name.lower(): c.duckdb_type for c in remote.columns}
            if remote is not None
            else columns_of(db or "main", name)
        )
        if columns is None:
            return None  # a table sqlglot cannot be told about: no pushdown
        schema.setdefault(db or "main", {})[name] = {k.lower(): v for k, v in columns.items()}
    try:
        return qualify(
            tree.copy(),
            schema=schema,
            dialect="duckdb",
            db="main",
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
    except (SqlglotError, KeyError, ValueError, TypeError, AttributeError):
        return None


def _remote_of(table: exp.Table, remotes: Mapping[str, RemoteTable]) -> RemoteTable | None:
    return remotes.get(f"{(table.db or 'main').lower()}.{table.name.lower()}")


def _collect_columns(scan: Scan, scopes: list[Any], home: Any, alias: str) -> None:
    """Add the columns any scope reads through `alias` (a superset is harmless)."""
    projections = getattr(home.expression, "expressions", [])
    if any(isinstance(p, exp.Star) or isinstance(p.this, exp.Star) for p in projections):
        scan.all_columns = True  # a star sqlglot could not expand
    aliases = {p.alias.lower() for p in projections if p.alias}
    for scope in scopes:
        for column in scope.columns:
            if column.table == alias:
                exact = scan.remote.exact.get(column.name.lower())
                if exact is not None and exact not in scan.columns:
                    scan.columns.append(exact)
            elif not column.table and scope is home and column.name.lower() not in aliases:
                scan.all_columns = True  # whose column this is, sqlglot could not tell


def _pushed_condition(
    select: exp.Expr, table: exp.Table, alias: str, remote: RemoteTable
) -> str | None:
    if not isinstance(select, exp.Select):
        return None
    joins = list(select.args.get("joins") or [])
    own_join = table.parent if isinstance(table.parent, exp.Join) else None
    position = joins.index(own_join) if own_join in joins else -1
    if own_join is None and not isinstance(table.parent, exp.From):
        return None  # a table in some other place (LATERAL, a function argument, ...)
    if own_join is not None and position < 0:
        return None
    later = joins[position + 1 :]
    if any(j.side in ("RIGHT", "FULL") for j in later):
        null_supplied = True
    elif own_join is not None:
        null_supplied = own_join.side in ("LEFT", "FULL")
    else:
        null_supplied = False
    unusual = own_join is not None and (own_join.kind or "").upper() in (
        "ASOF",
        "POSITIONAL",
        "LATERAL",
        "ANTI",
    )
    candidates: list[exp.Expr] = []
    where = select.args.get("where")
    if where is not None and not null_supplied and not unusual:
        candidates.extend(_conjuncts(where.this))
    if own_join is not None and not unusual and own_join.side in ("", "LEFT", None):
        on = own_join.args.get("on")
        if on is not None:
            candidates.extend(_conjuncts(on))
    pushed = [sql for c in candidates if (sql := _translated(c, alias, remote)) is not None]
    if not pushed:
        return None
    return " AND ".join(f"({p})" for p in dict.fromkeys(pushed))


def _conjuncts(condition: exp.Expr) -> Iterable[exp.Expr]:
    if isinstance(condition, exp.And):
        yield from _conjuncts(condition.left)
        yield from _conjuncts(condition.right)
    elif isinstance(condition, exp.Paren):
        yield from _conjuncts(condition.this)
    else:
        yield condition


def _translated(condition: exp.Expr, alias: str, remote: RemoteTable) -> str | None:
    """`condition` in Snowflake's dialect over the bare table, if it may be pushed."""
    columns = list(condition.find_all(exp.Column))
    if not columns or any(c.table != alias for c in columns):
        return None
    if any(
        True
        for _ in condition.find_all(
            exp.Subquery,
            exp.Select,
            exp.Placeholder,
            exp.Parameter,
            exp.AggFunc,
            exp.Window,
            exp.Anonymous,
            exp.Rand,
        )
    ):
        return None
    if any(f.sql_name().upper() in _VOLATILE for f in condition.find_all(exp.Func)):
        return None
    if any(remote.exact.get(c.name.lower()) is None for c in columns):
        return None
    copy = condition.copy()
    for column in copy.find_all(exp.Column):
        column.set("table", None)
    _snowflake_identifiers(copy, remote.exact)
    try:
        return copy.sql(dialect="snowflake", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError:
        return None


# -- identifiers ----------------------------------------------------------------------------


def _exact_names(remotes: Iterable[RemoteTable]) -> dict[str, str]:
    exact: dict[str, str] = {}
    for remote in remotes:
        exact.update(remote.exact)
    return exact


def _snowflake_identifiers(tree: exp.Expr, exact: Mapping[str, str]) -> None:
    """Quote every identifier: a remote column's exact name, else the upper-case name."""
    for ident in list(tree.find_all(exp.Identifier)):
        name = ident.name
        ident.set("this", exact.get(name.lower(), name.upper()))
        ident.set("quoted", True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
