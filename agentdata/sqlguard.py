"""What a statement may do, decided from DuckDB's own parser and binder, never by
matching strings.

Two checks, both before anything runs:
1. the statement type (from `duckdb.extract_statements`) against the caller's role;
2. every table the statement binds (from `cursor.get_table_names`, which sees through
   joins, subqueries, CTEs, `query()`/`query_table()` and views) against the token's
   allow-list.
File access, ATTACH, INSTALL/LOAD and SET are additionally impossible in the engine
itself (external access disabled, configuration locked): these checks are the
second wall, and they give the clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import duckdb

from agentdata.errors import InvalidArgument, PermissionDenied
from agentdata.tokens import Principal

ST = duckdb.StatementType

#: Statements that only read (DESCRIBE, SHOW, SUMMARIZE, FROM-first and WITH parse as SELECT).
READ_TYPES = frozenset({ST.SELECT, ST.EXPLAIN})
#: Statements writers and admins may also run: DDL and DML on the data database.
WRITE_TYPES = frozenset(
    {ST.CREATE, ST.INSERT, ST.UPDATE, ST.DELETE, ST.DROP, ST.ALTER, ST.MERGE_INTO, ST.MULTI}
)
# Everything else (COPY, ATTACH, DETACH, LOAD/INSTALL, EXPORT, SET/RESET/USE, PRAGMA,
# CALL, TRANSACTION, PREPARE/EXECUTE, VACUUM, ...) is refused for every role: each one
# either reaches outside the database, changes the engine, or breaks the one-statement
# transaction model.


class Kind(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class CheckedStatement:
    """A single statement that passed both checks."""

    sql: str
    kind: Kind
    statement_type: str
    tables: frozenset[str]  # normalised "schema.table", lower case


def statement_kind(sql: str) -> tuple[Kind, str]:
    """Classify exactly one statement; raise InvalidArgument/PermissionDenied otherwise."""
    if not sql or not sql.strip():
        raise InvalidArgument("empty SQL")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise InvalidArgument(str(e)) from None
    except ValueError as e:  # statement types the Python enum does not know yet
        raise PermissionDenied(f"statement type not allowed: {e}") from None
    if len(statements) != 1:
        raise InvalidArgument(f"exactly one SQL statement per request (got {len(statements)})")
    st = statements[0].type
    name = st.name
    if st in READ_TYPES:
        return Kind.READ, name
    if st in WRITE_TYPES:
        return Kind.WRITE, name
    raise PermissionDenied(f"{name} statements are not allowed")


def check(cursor: duckdb.DuckDBPyConnection, principal: Principal, sql: str) -> CheckedStatement:
    """Check one statement for `principal`, binding it on `cursor` without running it."""
    kind, type_name = statement_kind(sql)
    if kind is Kind.WRITE and not principal.can_write:
        raise PermissionDenied(f"role {principal.role.value!r} may only read ({type_name} refused)")
    if kind is Kind.WRITE and principal.tables is not None:
        # DuckDB's binder cannot name the target of every DML statement (UPDATE, DELETE,
        # MERGE, INSERT ... VALUES bind no table here), so a token limited to some tables
        # writes only through DoPut/ingest, whose target is explicit and checked.
        raise PermissionDenied(
            "a token limited to some tables may not run free-form DDL/DML; use DoPut (ingest) instead"
        )
    try:
        raw = cursor.get_table_names(sql, qualified=True)
    except duckdb.PermissionException as e:
        raise PermissionDenied(str(e)) from None
    except duckdb.Error as e:
        if kind is Kind.READ:
            raise InvalidArgument(str(e)) from None
        raw = set()  # unrestricted writer: DuckDB reports any real error when it runs
    tables = frozenset(normalise_table_name(t) for t in raw)
    denied = sorted(t for t in tables if not principal.can_read_table(t))
    if denied:
        raise PermissionDenied(f"token may not access table(s): {', '.join(denied)}")
    return CheckedStatement(sql=sql, kind=kind, statement_type=type_name, tables=tables)


def normalise_table_name(name: str) -> str:
    """`s."Secret" AS x` -> `s.secret`; bare names are in `main`; a catalog prefix and an
    alias (DuckDB's binder reports aliased tables as `schema.table AS alias`) are dropped."""
    parts = split_identifier(_strip_alias(name.strip()))
    if len(parts) == 1:
        parts = ["main", *parts]
    elif len(parts) > 2:
        parts = parts[-2:]
    return ".".join(p.lower() for p in parts)


def _strip_alias(name: str) -> str:
    """The qualified name before the first unquoted whitespace."""
    quoted = False
    for i, ch in enumerate(name):
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            return name[:i]
    return name


def split_identifier(name: str) -> list[str]:
    """Split a dotted identifier, honouring double quotes (`"a.b".c` has two parts)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == '"':
            if quoted and i + 1 < len(name) and name[i + 1] == '"':
                cur.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def quote_ident(name: str) -> str:
    """Quote one identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def parse_table_ref(ref: str) -> tuple[str, str]:
    """`schema.table` (quotes allowed) -> (schema, table); a bare name is in `main`."""
    parts = split_identifier(ref.strip())
    if len(parts) == 1:
        parts = ["main", parts[0]]
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f"table must be 'schema.table' (got {ref!r})")
    return parts[0], parts[1]
