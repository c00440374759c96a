"""Writes by a writer token with row filters or column masks (agentdata.governance).

DuckDB cannot serialize the parse tree of a write, so a write is read with sqlglot's
DuckDB dialect (a well-kept SQL parser) and changed on that tree, never as text:

- UPDATE / DELETE of a filtered table get the filter ANDed to their WHERE: rows
  outside it are not touched (an UPDATE or DELETE aimed at them changes nothing);
- INSERT and UPDATE of a filtered table get `RETURNING coalesce((filter), false)`:
  the engine runs the write in its transaction and rolls it back, refusing it, if
  any row it wrote (a new row, or a row's new image) lies outside the filter
  (`CheckedStatement.row_check`);
- anything the write reads (FROM / USING / subqueries / INSERT ... SELECT) may not be
  a governed table, a view over one, `query()` / `query_table()` or a user macro:
  those would read raw rows and masked values;
- a write to a governed table may not mention a masked column except as an UPDATE's
  SET target (a WHERE on it would tell a match by the rows changed), may not have its
  own RETURNING, and may not be an upsert (`ON CONFLICT`, `INSERT OR REPLACE`), a
  MERGE, or DDL (DROP / ALTER / TRUNCATE / CREATE OR REPLACE), which would reach rows
  outside the filter.

The rewritten text must classify as the same statement type to DuckDB, or the write is
refused: a dialect gap can refuse a write, never widen one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from agentdata.errors import PermissionDenied
from agentdata.governance import Governance, may_reach, policy_for

if TYPE_CHECKING:
    from agentdata.tokens import Principal

#: Table functions that read a table named in a string.
_TABLE_READERS = frozenset({"query", "query_table"})


@dataclass(frozen=True)
class GovernedWrite:
    """A write as it runs for a governed writer."""

    sql: str
    #: The SQL ends in `RETURNING <filter>`: every row it wrote must come back TRUE.
    row_check: bool


def check(
    cur: duckdb.DuckDBPyConnection, principal: Principal, sql: str, statement_type: str
) -> GovernedWrite | None:
    """The write as `principal` may run it; None when its governance is not involved
    (an admin, a token without governance, a write touching no governed table)."""
    gov = None if principal.is_admin else principal.governance
    if gov is None:
        return None
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        raise _refused("this write cannot be checked against this token's row filters") from None
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "SCHEMA":
        dropped = {(t.db or t.name).lower() for t in tree.args.get("tables") or []}
        if tree.this is not None:
            dropped.add(tree.this.name.lower())
        if any(t.split(".", 1)[0] in dropped for t in gov.tables):
            raise _refused("DROP SCHEMA of a schema holding a table this token sees filtered")
    target = _target(tree)
    refs = _table_refs(tree)
    functions = {f.name.lower() for f in tree.find_all(exp.Anonymous)} | {
        type(f).__name__.lower() for f in tree.find_all(exp.Func)
    }
    involved = any(_governed(cur, gov, ref) for ref in refs) or (
        target is not None and gov.policy(*target) is not None
    )
    if not involved:
        if gov.tables and (functions & _TABLE_READERS or functions & _user_macros(cur)):
            raise _refused("a write by this token may not call query(), query_table() or macros")
        return None
    reads = [r for r in refs if r != target]
    if any(_governed(cur, gov, r) for r in reads) or functions & _TABLE_READERS:
        raise _refused("a write by this token may not read a table it sees filtered or masked")
    if functions & _user_macros(cur):
        raise _refused("a write by this token may not call macros")
    policy = gov.policy(*target) if target is not None else None
    if policy is None or not isinstance(tree, exp.Insert | exp.Update | exp.Delete):
        raise _refused(
            f"{statement_type} of a table this token sees filtered or masked is not allowed; "
            "INSERT, UPDATE and DELETE within its row filter are"
        )
    if tree.args.get("returning") is not None:
        raise _refused("RETURNING is not available on a table this token sees filtered or masked")
    if tree.args.get("conflict") is not None or tree.args.get("alternative"):
        raise _refused("an upsert may change rows outside this token's row filter")
    masked = {c for c, _ in policy.masks}
    set_targets = (
        {id(e.this) for e in tree.expressions if isinstance(e, exp.EQ)}
        if isinstance(tree, exp.Update)
        else set()
    )
    for column in tree.find_all(exp.Column):
        if column.name.lower() in masked and id(column) not in set_targets:
            raise _refused(f"a write by this token may not use masked column {column.name!r}")
    row_check = False
    if policy.row_filter is not None:
        condition = sqlglot.parse_one(policy.row_filter, dialect="duckdb")
        if isinstance(tree, exp.Update | exp.Delete):
            tree = tree.where(condition.copy(), append=True, copy=True)
        if isinstance(tree, exp.Insert | exp.Update):
            ok = exp.func("coalesce", exp.Paren(this=condition.copy()), exp.false())
            tree.set("returning", exp.Returning(expressions=[exp.alias_(ok, "agentdata_ok")]))
            row_check = True
    rewritten = tree.sql(dialect="duckdb")
    statements = duckdb.extract_statements(rewritten)
    if len(statements) != 1 or statements[0].type.name != statement_type:
        raise _refused("this write cannot be checked against this token's row filters")
    return GovernedWrite(rewritten, row_check)


def require_admitted(returned: list[pa.Table]) -> None:
    """Raise (so the writer rolls back) unless every written row passed the filter."""
    for table in returned:
        column = table.column(0)
        if column.null_count or not all(column.to_pylist()):
            raise PermissionDenied(
                "the write would leave rows outside this token's row filter; nothing was written"
            )


def _refused(message: str) -> PermissionDenied:
    return PermissionDenied(message)


def _target(tree: exp.Expr) -> tuple[str, str] | None:
    """(schema, table) a DML statement or DDL writes, lower case."""
    node = tree.this if isinstance(tree, exp.Insert | exp.Update | exp.Delete) else None
    if isinstance(tree, exp.Create | exp.Alter | exp.Merge):
        node = tree.this
    elif isinstance(tree, exp.Drop):
        node = (tree.args.get("tables") or [tree.this])[0]
    elif isinstance(tree, exp.TruncateTable) and tree.expressions:
        node = tree.expressions[0]
    if isinstance(node, exp.Schema):
        node = node.this
    if isinstance(node, exp.Table):
        return _name(node)
    return None


def _table_refs(tree: exp.Expr) -> list[tuple[str, str]]:
    """Every table the statement names (CTE names left out), lower case."""
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    out = []
    for table in tree.find_all(exp.Table):
        if not table.name:
            continue
        if not table.db and table.name.lower() in ctes:
            continue
        out.append(_name(table))
    return out


def _name(table: exp.Table) -> tuple[str, str]:
    return (table.db or "main").lower(), table.name.lower()


def _governed(cur: duckdb.DuckDBPyConnection, gov: Governance, ref: tuple[str, str]) -> bool:
    """True if `ref` is a governed table, or a view that may read one (judged by table
    name alone: a view's unqualified names bind relative to its own schema)."""
    if gov.policy(*ref) is not None:
        return True
    rows = cur.execute(
        "SELECT 1 FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
        " AND lower(schema_name) = $1 AND lower(view_name) = $2",
        list(ref),
    ).fetchall()
    return bool(rows) and may_reach(cur, gov, *ref)


def _user_macros(cur: duckdb.DuckDBPyConnection) -> set[str]:
    rows = cur.execute(
        "SELECT DISTINCT lower(function_name) FROM duckdb_functions()"
        " WHERE NOT internal AND database_name = current_database()"
    ).fetchall()
    return {str(r[0]) for r in rows}


def check_ingest(
    cur: duckdb.DuckDBPyConnection,
    principal: Principal,
    schema: str,
    table: str,
    stage: str,
    *,
    plain_append: bool,
) -> None:
    """Refuse an upload (DoPut / ingest) by a governed writer into a governed table
    unless it only appends rows that all pass the token's row filter: replace, upsert,
    reconcile and schema changes would reach rows outside it."""
    policy = policy_for(principal, schema, table)
    if policy is None:
        return
    if not plain_append:
        raise _refused(
            "an upload into a table this token sees filtered or masked may only append "
            "(mode append, no evolve, no constraints)"
        )
    if policy.row_filter is None:
        return
    try:
        outside = cur.execute(
            f"SELECT count(*) FROM {stage} WHERE NOT coalesce(({policy.row_filter}), false)"
        ).fetchall()[0][0]
    except duckdb.Error:
        raise _refused(
            "the upload lacks a column this token's row filter needs; nothing was written"
        ) from None
    if outside:
        raise _refused(
            f"{outside} uploaded row(s) lie outside this token's row filter; nothing was written"
        )
