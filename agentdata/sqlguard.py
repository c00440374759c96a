"""What a statement may do, decided from DuckDB's own parser, parse tree and binder,
never by matching strings. This is the second wall: the first is the engine itself,
which runs every read inside a READ ONLY transaction with external access off and
configuration locked (see `agentdata.engine`), so no verdict here can turn a read
into a write.

The checks, all before anything runs:
1. size: SQL longer than `max_sql_bytes` is refused;
2. the statement type (`duckdb.extract_statements`) against the caller's role;
   `EXPLAIN [ANALYZE] x` is judged as `x`, and `EXPLAIN ANALYZE` of a write is for
   admins only;
3. for everyone but admins, the parse tree (`json_serialize_sql`) is walked: every
   function must be on the allow-list (`agentdata.sql_functions`), catalog sources are
   filtered to what a table-limited token may read (`agentdata.catalog_filter`), and
   value-amplifying calls get run-time bounds (`agentdata.value_bounds`). A rewritten
   tree is run only if it serializes back to itself;
4. every table the statement names in its text, then every table DuckDB's binder
   binds (`cursor.get_table_names`, which sees through views, CTEs and `query()`),
   against the token's allow-list.

Error texts from DuckDB's binder are scrubbed of "Did you mean" and candidate hints
for table-limited tokens: they could name objects outside the allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import duckdb

from agentdata import (
    catalog_filter,
    governance,
    governed_writes,
    returning,
    sql_functions,
    sql_tree,
    streaming,
)
from agentdata.errors import InvalidArgument, PermissionDenied
from agentdata.names import (
    binder_table_parts,
    parse_table_ref,
    quote_ident,
    split_identifier,
)
from agentdata.sql_tree import Node
from agentdata.tokens import Principal
from agentdata.value_bounds import ValueBounds

__all__ = [
    "CatalogSnapshot",
    "CheckedStatement",
    "Guard",
    "Kind",
    "normalise_table_name",
    "parse_table_ref",
    "quote_ident",
    "split_identifier",
    "statement_kind",
]

ST = duckdb.StatementType

#: Statements that only read (DESCRIBE, SHOW, SUMMARIZE, FROM-first and WITH parse as SELECT).
READ_TYPES = frozenset({ST.SELECT})
#: Statements writers and admins may also run: DDL and DML on the data database.
WRITE_TYPES = frozenset(
    {ST.CREATE, ST.INSERT, ST.UPDATE, ST.DELETE, ST.DROP, ST.ALTER, ST.MERGE_INTO, ST.MULTI}
)
# Everything else (COPY, ATTACH, DETACH, LOAD/INSTALL, EXPORT, SET/RESET/USE, PRAGMA,
# CALL, TRANSACTION, PREPARE/EXECUTE, VACUUM, ...) is refused for every role: each one
# either reaches outside the database, changes the engine, or breaks the one-statement
# transaction model.

#: Result schema columns of EXPLAIN (any form): known without running anything.
EXPLAIN_COLUMNS = ("explain_key", "explain_value")

_HINT_LINE = re.compile(r"^\s*(Did you mean|Candidate (bindings|functions|tables)).*$", re.I | re.M)


class Kind(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Classified:
    """One statement's kind, seen through EXPLAIN."""

    kind: Kind
    statement_type: str  # of the statement itself, or of the one EXPLAIN wraps
    explain: str | None = None  # the EXPLAIN prefix text ("EXPLAIN ANALYZE "), if any
    analyze: bool = False
    inner: str = ""  # the statement EXPLAIN wraps (or the statement itself)
    has_params: bool = False  # placeholders (`?`, `$1`, `$name`)


@dataclass(frozen=True)
class CheckedStatement:
    """A single statement that passed the checks: `sql` is what runs (it may be a
    rewrite of the text the client sent, with the same meaning)."""

    sql: str
    kind: Kind
    statement_type: str
    tables: frozenset[str]  # "schema.table", lower case
    explain: bool = False
    analyze: bool = False
    #: For statements with placeholders: SQL with each one replaced by NULL (binds
    #: the same tables; used to learn a result schema).
    probe_sql: str | None = None
    #: For EXPLAIN [ANALYZE]: the statement it wraps (what the cost guard estimates).
    explained: str | None = None
    #: DML with a RETURNING clause: its result is the rows it returns, not `{rows}`.
    returning: bool = False
    #: Same text, same data -> same rows: no volatile function (random(), now(), ...)
    #: and no sample. Only walked statements (non-admins) can be known to be.
    deterministic: bool = False
    #: A governed writer's INSERT/UPDATE: `sql` ends in a RETURNING of the row filter,
    #: and every row written must pass it (agentdata.governed_writes).
    row_check: bool = False
    #: A read that does no work before its first row (agentdata.streaming): starting
    #: it costs nothing. Only walked statements (non-admins) can be known to be.
    starts_at_once: bool = False


@dataclass(frozen=True)
class CatalogSnapshot:
    """User objects the guard needs to resolve names; rebuilt after each write."""

    #: (schema, name) of user tables and views, lower case.
    objects: frozenset[tuple[str, str]]
    #: function name (lower) -> [(schema, kind "macro"/"table_macro", definition)].
    macros: dict[str, list[tuple[str, str, str]]]
    #: Names of DuckDB's own views: (schema, name); schema "main" means system.main.
    system_views: frozenset[tuple[str, str]]
    catalog: str  # this database's catalog name ("data")
    #: The subset of `objects` that are tables (not views).
    tables: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def read(cls, cur: duckdb.DuckDBPyConnection) -> CatalogSnapshot:
        objects = cur.execute(
            "SELECT lower(schema_name), lower(table_name), true FROM duckdb_tables()"
            " WHERE database_name = current_database() AND NOT temporary"
            " UNION SELECT lower(schema_name), lower(view_name), false FROM duckdb_views()"
            " WHERE database_name = current_database() AND NOT internal AND NOT temporary"
        ).fetchall()
        macros: dict[str, list[tuple[str, str, str]]] = {}
        for schema, name, kind, definition in cur.execute(
            "SELECT schema_name, function_name, function_type, macro_definition"
            " FROM duckdb_functions() WHERE NOT internal AND database_name = current_database()"
        ).fetchall():
            macros.setdefault(name.lower(), []).append((schema, kind, definition or ""))
        system_views = cur.execute(
            "SELECT lower(schema_name), lower(view_name) FROM duckdb_views() WHERE internal"
        ).fetchall()
        catalog = cur.execute("SELECT current_database()").fetchall()[0][0]
        return cls(
            objects=frozenset((s, n) for s, n, _ in objects),
            tables=frozenset((s, n) for s, n, is_table in objects if is_table),
            macros=macros,
            system_views=frozenset((s, n) for s, n in system_views),
            catalog=str(catalog).lower(),
        )


@dataclass
class Guard:
    """The checks, configured once per engine."""

    max_sql_bytes: int = 256 * 1024
    bounds: ValueBounds = field(default_factory=lambda: ValueBounds(64 * 1024))
    #: The per-server salt of `hash` column masks (agentdata.governance).
    mask_salt: str = ""

    def check(
        self,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        sql: str,
        snapshot: CatalogSnapshot,
        checkpoint: Callable[[], None] = lambda: None,
    ) -> CheckedStatement:
        """Check one statement for `principal`, parsing and binding it on `cur`
        (which the caller keeps in a READ ONLY transaction) without running it."""
        if len(sql.encode("utf-8", "surrogatepass")) > self.max_sql_bytes:
            raise InvalidArgument(
                f"SQL text is longer than the server's max_sql_bytes ({self.max_sql_bytes} bytes)"
            )
        c = classify(sql)
        checkpoint()  # each step may be long for a big statement: stop at the deadline
        if c.kind is Kind.WRITE:
            return self._check_write(cur, principal, sql, c)
        with scrubbed(principal):
            if principal.is_admin:
                return self._bind_admin(cur, sql, c)
            tree = sql_tree.serialize(cur, c.inner)
            checkpoint()
            if tree is None:
                raise PermissionDenied(
                    "this statement form cannot be checked for this token; write it as a plain SELECT"
                )
            inspector = _Inspector(self, cur, principal, snapshot)
            new_tree = inspector.transform(tree)
            checkpoint()
            if inspector.governed and c.explain:
                # A plan prints the filters and masks (and the hash salt) it runs.
                raise PermissionDenied(
                    "EXPLAIN is not available on tables this token sees filtered or masked"
                )
            inner = c.inner
            if inspector.rewritten:
                inner = sql_tree.deserialize(cur, new_tree)
                if not sql_tree.round_trips(cur, inner, new_tree):
                    raise PermissionDenied(
                        "this statement cannot be checked for this token; simplify it"
                    )
            final = f"{c.explain}{inner}" if c.explain else inner
            checked = self._bind(
                cur,
                principal,
                final,
                c,
                inner,
                inspector.named,
                new_tree if inspector.has_params else None,
            )
            return replace(
                checked,
                deterministic=not inspector.volatile,
                starts_at_once=not inspector.rewritten
                and not c.explain
                and streaming.starts_at_once(tree, snapshot.tables, snapshot.macros),
            )

    # -- writes ------------------------------------------------------------------
    def _check_write(
        self, cur: duckdb.DuckDBPyConnection, principal: Principal, sql: str, c: Classified
    ) -> CheckedStatement:
        if c.analyze and not principal.is_admin:
            raise PermissionDenied(
                f"EXPLAIN ANALYZE runs the {c.statement_type} it wraps: admins only"
            )
        if not principal.can_write:
            raise PermissionDenied(
                f"role {principal.role.value!r} may only read ({c.statement_type} refused)"
            )
        if principal.tables is not None:
            # DuckDB's binder cannot name the target of every DML statement (UPDATE,
            # DELETE, MERGE, INSERT ... VALUES bind no table here), so a token limited
            # to some tables writes only through DoPut/ingest, whose target is explicit.
            raise PermissionDenied(
                "a token limited to some tables may not run free-form DDL/DML; use DoPut (ingest) instead"
            )
        if not principal.is_admin:
            _refuse_system_calls_in_text(c.inner)
        governed = governed_writes.check(cur, principal, c.inner, c.statement_type)
        if governed is not None:
            if c.explain:
                raise PermissionDenied(
                    "EXPLAIN is not available on tables this token sees filtered or masked"
                )
            sql = governed.sql
        try:  # which tables it touches, for their last-modified times (best effort)
            raw = cur.get_table_names(c.inner, qualified=True)
        except duckdb.InterruptException:
            raise
        except duckdb.Error:
            raw = set()  # DuckDB reports any real error when it runs
        return CheckedStatement(
            sql=sql,
            kind=Kind.WRITE,
            statement_type=c.statement_type,
            tables=frozenset(normalise_table_name(t) for t in raw),
            explain=c.explain is not None,
            analyze=c.analyze,
            returning=c.explain is None and returning.has_returning(sql, c.statement_type),
            row_check=governed is not None and governed.row_check,
        )

    # -- binding -------------------------------------------------------------------
    def _bind(
        self,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        final: str,
        c: Classified,
        inner: str,
        named: set[tuple[str, str]],
        has_params: Node | None,
    ) -> CheckedStatement:
        probe = inner
        if has_params is not None:
            probe = sql_tree.deserialize(cur, _parameters_to_null(cur, has_params))
            if not sql_tree.round_trips(cur, probe, _parameters_to_null(cur, has_params)):
                raise InvalidArgument(
                    "cannot check this statement with parameters: write the values into the SQL text instead"
                )
        try:
            raw = cur.get_table_names(probe, qualified=True)
        except duckdb.PermissionException as e:
            raise PermissionDenied(str(e)) from None
        except duckdb.InterruptException:
            raise
        except duckdb.Error as e:
            if _USING_JOIN_BUG in str(e) and _has_using_join(probe):
                # DuckDB 2.0.1's table-name binder fails on every USING join (the query
                # itself would bind): say what works instead of a misleading message.
                raise InvalidArgument(
                    "JOIN ... USING (...) cannot be checked for this token (a limitation "
                    "of DuckDB 2.0.1's binder); write the join with ON, e.g. "
                    "JOIN b ON a.id = b.id"
                ) from None
            raise InvalidArgument(str(e)) from None
        parts = {binder_table_parts(t) for t in raw}
        denied = sorted((s, t) for s, t in parts if not principal.can_read(s, t))
        if denied:
            raise _denied(denied, named)
        return CheckedStatement(
            sql=final,
            kind=Kind.READ,
            statement_type=c.statement_type,
            tables=frozenset(f"{s}.{t}".lower() for s, t in parts),
            explain=c.explain is not None,
            analyze=c.analyze,
            probe_sql=probe if has_params is not None else None,
            explained=inner if c.explain is not None else None,
        )

    def _bind_admin(
        self, cur: duckdb.DuckDBPyConnection, sql: str, c: Classified
    ) -> CheckedStatement:
        """Admins read everything: binding only reports the tables (and SQL errors)."""
        try:
            raw = cur.get_table_names(c.inner, qualified=True)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as e:
            if not c.has_params:
                raise InvalidArgument(str(e)) from None
            raw = set()  # unbound placeholders: DuckDB reports real errors when it runs
        parts = {binder_table_parts(t) for t in raw}
        return CheckedStatement(
            sql=sql,
            kind=Kind.READ,
            statement_type=c.statement_type,
            tables=frozenset(f"{s}.{t}".lower() for s, t in parts),
            explain=c.explain is not None,
            analyze=c.analyze,
            explained=c.inner if c.explain is not None else None,
        )


#: Expression classes with no function, table or parameter below them.
_LEAVES = frozenset({"CONSTANT", "COLUMN_REF"})


class _Inspector:
    """One walk over one statement's parse tree (see `Guard.check`, step 3)."""

    def __init__(
        self,
        guard: Guard,
        cur: duckdb.DuckDBPyConnection,
        principal: Principal,
        snapshot: CatalogSnapshot,
        depth: int = 0,
    ) -> None:
        self.guard = guard
        self.cur = cur
        self.principal = principal
        self.snapshot = snapshot
        self.depth = depth
        self.rewritten = False
        self.has_params = False
        self.volatile = False  # calls a function whose result changes run to run
        self.named: set[tuple[str, str]] = set()  # tables the text names
        #: A governed table (row filter, column masks) was replaced by its policy.
        self.governed = False
        self.ctes: set[str] = set()
        self._visible: catalog_filter.Visible | None = None

    @property
    def limited(self) -> bool:
        return self.principal.tables is not None

    def visible(self) -> catalog_filter.Visible:
        if self._visible is None:
            self._visible = catalog_filter.visible(self.cur, self.principal)
        return self._visible

    def transform(self, tree: Node) -> Node:
        return self._walk(tree)  # type: ignore[no-any-return]

    def _walk(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self._walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        node_type, node_class = node.get("type"), node.get("class")
        if node_class in _LEAVES:
            return node  # nothing to check below, and the common case (IN lists)
        if node.get("sample"):
            self.volatile = True  # USING SAMPLE / TABLESAMPLE draw differently each run
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            # A node's CTEs come before its body in the tree, so they are known
            # before any reference to them is walked.
            for entry in cte_map.get("map", []):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    self.ctes.add(entry["key"].lower())
        if node_type == "TABLE_FUNCTION":
            return self._table_function(node)
        if node_type == "BASE_TABLE":
            return self._base_table(node)
        if node_type == "SHOW_REF":
            return self._show(node)
        if node_class == "PARAMETER":
            self.has_params = True
        out = {
            k: self._select_list(v) if k == "select_list" else self._walk(v)
            for k, v in node.items()
        }
        if node_class in ("FUNCTION", "WINDOW") and "function_name" in out:
            return self._function(out)
        if node_class == "TYPE":
            self._type(out)
        return out

    def _select_list(self, items: Any) -> Any:
        """Walk a select list; a rewritten column keeps the name the client's text gave
        it (DuckDB names an unaliased column after its expression)."""
        if not isinstance(items, list):
            return self._walk(items)
        out = []
        for item in items:
            before, self.rewritten = self.rewritten, False
            new = self._walk(item)
            if (
                self.rewritten
                and isinstance(item, dict)
                and not item.get("alias")
                and item.get("class") != "STAR"
            ):
                new = {**new, "alias": sql_tree.expression_text(self.cur, item)}
            self.rewritten = self.rewritten or before
            out.append(new)
        return out

    # -- functions -------------------------------------------------------------------
    def _function(self, node: Node) -> Node:
        name = str(node["function_name"]).lower()
        if name in sql_functions.volatile_functions():
            self.volatile = True
        schema = str(node.get("schema") or "").lower()
        macro = self._user_macro(name, schema)
        if macro is not None:
            self._check_macro(name, *macro)
            return node
        if schema not in ("", "main", "pg_catalog") or name not in sql_functions.allowed_scalars():
            raise PermissionDenied(f"function {name}() is not allowed for this token")
        bounded = self.guard.bounds.rewrite(self.cur, node)
        if bounded is None:
            return node
        self.rewritten = True
        return bounded

    def _user_macro(self, name: str, schema: str) -> tuple[str, str, str] | None:
        """(schema, kind, definition) of the user macro a call resolves to, if any."""
        for m_schema, kind, definition in self.snapshot.macros.get(name, []):
            if (schema or "main") == m_schema.lower():
                return m_schema, kind, definition
        return None

    def _check_macro(self, name: str, schema: str, kind: str, definition: str) -> None:
        if not self.principal.can_read(schema, name):
            raise PermissionDenied(f"function {name}() is not allowed for this token")
        if self.depth >= 8:
            raise PermissionDenied(f"macro {name}() nests too deeply to be checked")
        body = definition if "table" in kind else f"SELECT {definition}"
        self._nested(body, f"macro {name}()")

    def _nested(self, sql: str, what: str) -> None:
        """Check SQL that runs inside this statement (a macro body, a query() string)."""
        tree = sql_tree.serialize(self.cur, sql)
        if tree is None:
            raise PermissionDenied(f"{what} cannot be checked for this token")
        inner = _Inspector(self.guard, self.cur, self.principal, self.snapshot, self.depth + 1)
        inner.transform(tree)
        self.named |= inner.named
        if inner.governed:
            raise PermissionDenied(
                f"{what} reads a table this token sees filtered or masked; query the table in the statement itself"
            )
        if inner.rewritten:
            raise PermissionDenied(
                f"{what} uses catalog views or size-bounded functions; write them in the statement itself"
            )

    def _type(self, node: Node) -> None:
        schema = str(node.get("schema") or "").lower()
        if (
            self.limited
            and schema not in ("", "main", "pg_catalog")
            and schema not in self.visible().schemas
        ):
            raise PermissionDenied("a type outside this token's schemas")

    # -- table functions ----------------------------------------------------------------
    def _table_function(self, node: Node) -> Node:
        func = node.get("function") or {}
        name = str(func.get("function_name", "")).lower()
        schema = str(func.get("schema") or "").lower()
        args = sql_tree.function_arguments(func)
        if any(n.get("class") == "PARAMETER" for n in sql_tree.nodes(args)):
            raise PermissionDenied(
                "a parameter may not be an argument of a table function (it could name a "
                "table): write that value into the SQL text"
            )
        walked = dict(node)
        walked["function"] = {
            k: (self._walk(v) if k == "arguments" else v) for k, v in func.items()
        }
        macro = self._user_macro(name, schema)
        if macro is not None:
            self._check_macro(name, *macro)
            return walked
        if schema not in ("", "main"):
            raise PermissionDenied(f"table function {name}() is not allowed for this token")
        if name in sql_functions.TABLE_FUNCTIONS:
            if name == "query":
                text = sql_tree.string_constant(args[0]) if args else None
                if text is None:
                    raise PermissionDenied("query() needs its SQL as a string literal")
                self._nested(text, "query()")
            if name == "query_table":
                for arg in args[:1]:
                    for table in _string_constants(arg):
                        self._require_readable(*parse_table_ref(table))
                governed = self._govern_query_table(node, args)
                if governed is not None:
                    return governed
            return walked
        if name in sql_functions.TABLE_ARGUMENT_FUNCTIONS:
            text = sql_tree.string_constant(args[0]) if len(args) == 1 else None
            if text is None:
                raise PermissionDenied(f"{name}() needs one table name as a string literal")
            schema_name, table_name = parse_table_ref(text)
            self._require_readable(schema_name, table_name)
            gov = self._governance()
            if name == "pragma_storage_info" and gov is not None and gov.tables:
                # Segment statistics hold raw minima and maxima.
                raise PermissionDenied(f"{name}() is not available to this token")
            # A view's columns describe what lies beneath it: all of that must be readable.
            if self.limited and not catalog_filter.view_is_readable(
                self.cur, self.principal, schema_name, table_name
            ):
                raise _denied([("?", "?")], set())
            return walked
        if name in sql_functions.CATALOG_FUNCTIONS:
            return self._catalog(walked, name)
        raise PermissionDenied(f"table function {name}() is not allowed for this token")

    def _govern_query_table(self, node: Node, args: list[Node]) -> Node | None:
        """`query_table('t')` over a governed table (or a view over one) as that table's
        policy subquery; None when no table it names is governed."""
        if self._governance() is None or not args:
            return None
        names = [parse_table_ref(t) for t in _string_constants(args[0])]
        for schema, table in names:
            base = sql_tree.parse_table_ref(
                self.cur, f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)}"
            )
            base["alias"] = node.get("alias") or ""
            base["column_name_alias"] = node.get("column_name_alias") or []
            governed = self._govern(base, schema, table)
            if governed is base:
                continue
            if len(names) != 1 or len(args) != 1 or args[0].get("class") != "CONSTANT":
                raise PermissionDenied(
                    "query_table() over a filtered or masked table takes that one table only"
                )
            return governed
        return None

    # -- tables ---------------------------------------------------------------------------
    def _base_table(self, node: Node) -> Node:
        schema = str(node.get("schema_name") or "").lower()
        name = str(node.get("table_name") or "").lower()
        catalog = str(node.get("catalog_name") or "").lower()
        if not schema and not catalog and name in self.ctes:
            if self._governance() is not None and ("main", name) in self.snapshot.objects:
                # CTE scopes are not tracked here: a reference outside the CTE's scope
                # would read the table unfiltered.
                raise PermissionDenied(
                    f"a CTE may not be named like table {name!r} for this token; rename the CTE"
                )
            return node
        system = self._system_view(catalog, schema, name)
        if system is not None:
            if system in catalog_filter.SOURCES:
                return self._catalog(node, system)
            raise PermissionDenied(f"catalog view {system} is not available to this token")
        if catalog not in ("", self.snapshot.catalog):
            raise PermissionDenied(f"database {catalog!r} is not available to this token")
        self._require_readable(schema or "main", name)
        return self._govern(node, schema or "main", name)

    # -- row filters and column masks (agentdata.governance) ---------------------------
    def _governance(self) -> governance.Governance | None:
        return None if self.principal.is_admin else self.principal.governance

    def _govern(self, node: Node, schema: str, name: str) -> Node:
        """A governed table is read through its policy's subquery; a view reading one is
        inlined (its body walked like the statement), so the same happens inside it."""
        gov = self._governance()
        if gov is None:
            return node
        policy = gov.policy(schema, name)
        if policy is not None:
            self.rewritten = self.governed = True
            return governance.wrap(self.cur, node, schema, name, policy, self.guard.mask_salt)
        body = governance.view_body(self.cur, schema, name)
        if body is None:
            return node
        if self.depth >= 8:
            raise PermissionDenied(f"view {name} nests too deeply to be checked")
        inner = _Inspector(self.guard, self.cur, self.principal, self.snapshot, self.depth + 1)
        try:
            walked = inner.transform(body[0])
        except PermissionDenied:
            # A view this walk refuses (it calls what agents may not) is left to the
            # binder check, as for any token, unless it may reach a governed table.
            if not governance.may_reach(self.cur, gov, schema, name):
                return node
            raise PermissionDenied(  # never name what lies beneath
                f"view {name} reads a table this token sees filtered or masked, and cannot "
                "be checked for this token; query the table directly"
            ) from None
        self.volatile = self.volatile or inner.volatile
        if not inner.governed:
            return node
        self.rewritten = self.governed = True
        return governance.subquery(self.cur, walked, name, body[1], node)

    def _system_view(self, catalog: str, schema: str, name: str) -> str | None:
        """The name of the DuckDB catalog view this reference resolves to, if any."""
        if catalog == "system" or schema in sql_functions.SYSTEM_SCHEMAS:
            key_schema = schema or "main"
            if (key_schema, name) in self.snapshot.system_views:
                return name if key_schema == "main" else f"{key_schema}.{name}"
            return f"{key_schema}.{name}"
        if catalog or schema not in ("", "main"):
            return None
        if (schema or "main", name) in self.snapshot.objects:
            return None  # a user table of that name wins the lookup
        for sys_schema in ("main", "pg_catalog"):
            if (sys_schema, name) in self.snapshot.system_views:
                return name if sys_schema == "main" else f"{sys_schema}.{name}"
        return None

    def _show(self, node: Node) -> Node:
        show_type = node.get("show_type")
        if show_type in ("DESCRIBE", "SUMMARY", "SHOW"):
            return {k: self._walk(v) for k, v in node.items()}
        if show_type == "SHOW_SPECIAL":
            special = sql_tree.ident(str(node.get("table_name", ""))).lower()
            source = {"tables": "show tables", "__show_tables_expanded": "show all tables"}.get(
                special
            )
            if source is not None:
                return self._catalog(node, source)
            if special == "databases" and not self.limited:
                return node
        if show_type == "SHOW_FROM" and not self.limited:
            return node
        raise PermissionDenied("this SHOW form is not available to this token")

    def _catalog(self, node: Node, source: str) -> Node:
        if not self.limited:
            return node
        self.rewritten = True
        return catalog_filter.wrap(self.cur, node, source, self.visible())

    def _require_readable(self, schema: str, table: str) -> None:
        self.named.add((schema.lower(), table.lower()))
        if not self.principal.can_read(schema, table):
            raise PermissionDenied(
                f"token may not access table(s): {schema.lower()}.{table.lower()}"
            )


def classify(sql: str) -> Classified:
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
    if st is ST.EXPLAIN:
        prefix, analyze, inner = _split_explain(sql)
        wrapped = classify(inner)
        if wrapped.explain is not None:
            raise PermissionDenied("EXPLAIN of an EXPLAIN is not allowed")
        return Classified(
            kind=wrapped.kind,
            statement_type=wrapped.statement_type,
            explain=prefix,
            analyze=analyze,
            inner=inner,
            has_params=wrapped.has_params,
        )
    has_params = bool(statements[0].named_parameters)
    if st in READ_TYPES:
        return Classified(Kind.READ, st.name, inner=sql, has_params=has_params)
    if st in WRITE_TYPES:
        return Classified(Kind.WRITE, st.name, inner=sql, has_params=has_params)
    raise PermissionDenied(f"{st.name} statements are not allowed")


def statement_kind(sql: str) -> tuple[Kind, str]:
    """(kind, statement type) of exactly one statement (EXPLAIN judged by what it wraps)."""
    c = classify(sql)
    return c.kind, c.statement_type


def _split_explain(sql: str) -> tuple[str, bool, str]:
    """`EXPLAIN [ANALYZE | (options)] stmt` -> (prefix text, analyze?, stmt text),
    from DuckDB's own tokenizer."""
    tokens = [t for t in duckdb.tokenize(sql) if t[1] != duckdb.token_type.comment]

    def word(i: int) -> str:
        # The token's own text: a word, or one punctuation character.
        m = re.match(r"\w+|\S", sql[tokens[i][0] :])
        return m.group(0).upper() if m else ""

    if not tokens or word(0) != "EXPLAIN":
        raise InvalidArgument("cannot parse this EXPLAIN statement")
    i, analyze = 1, False
    if i < len(tokens) and word(i) == "ANALYZE":
        analyze, i = True, i + 1
    elif i < len(tokens) and word(i).startswith("("):
        depth = 0
        while i < len(tokens):
            w = word(i)
            depth += {"(": 1, ")": -1}.get(w, 0)
            if w == "ANALYZE":
                analyze = True
            i += 1
            if depth <= 0:
                break
    if i >= len(tokens):
        raise InvalidArgument("EXPLAIN needs a statement")
    return sql[: tokens[i][0]], analyze, sql[tokens[i][0] :]


def _string_constants(expr: Node) -> list[str]:
    """String literals of a constant or a list of constants (query_table's names)."""
    found = [sql_tree.string_constant(n) for n in sql_tree.nodes(expr)]
    return [s for s in found if s is not None]


def _parameters_to_null(cur: duckdb.DuckDBPyConnection, tree: Node) -> Node:
    null = sql_tree.parse_expression(cur, "NULL")

    def swap(node: Node) -> Node | None:
        if node.get("class") == "PARAMETER":
            return {**null, "alias": node.get("alias", "")}
        return None

    swapped: Node = sql_tree.replace_nodes(tree, swap)
    for statement in swapped.get("statements", []):
        statement["named_param_map"] = []
    return swapped


_WRITE_CALL_DENY = frozenset(sql_functions.NOT_FOR_AGENTS)


def _refuse_system_calls_in_text(sql: str) -> None:
    """Second line for writes (whose trees DuckDB cannot serialize): a name followed by
    `(` that is a function agents may not call, or a table function outside the
    allow-lists, refuses the statement."""
    tokens = duckdb.tokenize(sql)
    table_functions = _all_table_functions()
    allowed = (
        sql_functions.TABLE_FUNCTIONS
        | sql_functions.CATALOG_FUNCTIONS
        | sql_functions.TABLE_ARGUMENT_FUNCTIONS
    )
    for (start, kind), (nxt, _) in zip(tokens, tokens[1:], strict=False):
        if kind not in (duckdb.token_type.identifier, duckdb.token_type.keyword):
            continue
        if sql[nxt : nxt + 1] != "(":
            continue
        name = sql_tree.ident(sql[start:nxt].strip()).lower().rsplit(".", 1)[-1]
        if name in _WRITE_CALL_DENY or (name in table_functions and name not in allowed):
            raise PermissionDenied(f"function {name}() is not allowed for this token")


_TABLE_FUNCTIONS: frozenset[str] | None = None


def _all_table_functions() -> frozenset[str]:
    global _TABLE_FUNCTIONS
    if _TABLE_FUNCTIONS is None:
        con = duckdb.connect()
        try:
            rows = con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions()"
                " WHERE function_type IN ('table', 'table_macro', 'pragma')"
            ).fetchall()
        finally:
            con.close()
        _TABLE_FUNCTIONS = frozenset(r[0].lower() for r in rows)
    return _TABLE_FUNCTIONS


def _denied(denied: list[tuple[str, str]], named: set[tuple[str, str]]) -> PermissionDenied:
    """Name refused tables only if the client's own text named them: a view or macro
    must not reveal what lies beneath it."""
    if all(d in named for d in denied):
        names = ", ".join(f"{s}.{t}" for s, t in denied)
        return PermissionDenied(f"token may not access table(s): {names}")
    return PermissionDenied(
        "this statement reads tables outside this token's allow-list (through a view, macro or function)"
    )


@contextmanager
def scrubbed(principal: Principal) -> Iterator[None]:
    """Strip DuckDB's "Did you mean" / candidate hints from errors for table-limited
    tokens (they may name objects outside the allow-list)."""
    try:
        yield
    except (InvalidArgument, PermissionDenied) as e:
        # The binder quotes the SQL it bound: a masked table's subquery holds the salt.
        message = governance.hide_salts(e.message)
        if principal.governance is not None:
            message = governance.redact_values(message)
        if principal.tables is not None and _HINT_LINE.search(message):
            message = _HINT_LINE.sub("", message).strip()
        if message != e.message:
            e.message = message
            e.args = (message,)
        raise


def scrub_message(principal: Principal, message: str) -> str:
    """The same scrubbing for an error text raised later (at execution)."""
    if principal.tables is not None:
        return _HINT_LINE.sub("", message).strip()
    return message


_USING_JOIN_BUG = "does not exist on left side of join"


def _has_using_join(sql: str) -> bool:
    """True if DuckDB's tokens of `sql` hold the keyword USING (a join's USING list)."""
    try:
        tokens = duckdb.tokenize(sql)
    except (duckdb.Error, ValueError, RuntimeError):
        return False
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        if str(kind).endswith("keyword") and sql[start:end].strip().upper() == "USING":
            return True
    return False


def normalise_table_name(name: str) -> str:
    """`s."Secret" AS x` -> `s.secret`: a binder-reported name as "schema.table"."""
    schema, table = binder_table_parts(name)
    return f"{schema}.{table}".lower()
