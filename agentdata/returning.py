"""DML with RETURNING: whether a write returns rows, and its result schema unrun.

    has_returning("INSERT INTO t VALUES (1) RETURNING id")      # True
    schema_probe("UPDATE s.t AS x SET v = 1 RETURNING x.id, v * 2 AS w", "UPDATE")
    # -> 'SELECT x.id, v * 2 AS w\nFROM s.t AS x LIMIT 0'

A write with RETURNING answers with the rows it returned, on every channel, instead of
the `{rows}` count (see `agentdata.engine.Engine.execute_write`). Channels that state a
result schema before anything runs (Flight GetFlightInfo / GetSchema, Flight SQL's
prepared statements) need that schema without running the write, and DuckDB 2.0
cannot describe a DML statement unrun: `DESCRIBE` takes queries only, a prepared
UPDATE/DELETE ... RETURNING reports no result types (`duckdb_prepared_statements()`),
and a data-modifying CTE is executed as soon as it is bound, even to read its columns.

What makes a non-executing answer possible: DuckDB binds a RETURNING list against the
target table alone (never the FROM/USING tables, nor an INSERT's alias; checked on
2.0.1), so `SELECT <list> FROM <target> [AS <alias>] LIMIT 0` has exactly the write's
result columns, and it is bound like any other schema probe, inside a READ ONLY
transaction. The target and the list are located with DuckDB's own tokenizer, at
parenthesis depth 0 (DuckDB allows no DML below that but a CTE body, which is in
parentheses). MERGE's `merge_action` has no SELECT equivalent: `schema_probe` returns
None for MERGE, and the engine falls back to running the write in a transaction it
rolls back (writers only; see `Engine._write_schema`).

Types always agree. Names agree for columns and aliased expressions; an unaliased
expression that needs an implicit cast is named after its text by the SELECT
(`(d * 2)`) but after its bound form by the write (`(d * CAST(2 AS DECIMAL(18,0)))`):
alias such expressions (`RETURNING d * 2 AS twice`) for one name everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from agentdata import sql_tree
from agentdata.names import split_identifier

#: Statement types that may carry RETURNING.
DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE_INTO"})

_KW = duckdb.token_type.keyword
_ID = duckdb.token_type.identifier
_OP = duckdb.token_type.operator
_COMMENT = duckdb.token_type.comment


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    kind: duckdb.token_type
    text: str
    depth: int  # parenthesis depth

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind is _KW else ""


def _tokens(sql: str) -> list[_Token]:
    raw = duckdb.tokenize(sql)
    out: list[_Token] = []
    depth = 0
    for i, (start, kind) in enumerate(raw):
        if kind == _COMMENT:
            continue
        # A token runs to the next one (comments included in that count), less spaces.
        end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
        text = sql[start:end].rstrip()
        end = start + len(text)
        if kind is _OP:
            text = text[:1] if text[:1] in "(),.;" else text
            end = start + len(text)
            if text == ")":
                depth -= 1
        out.append(_Token(start, end, kind, text, depth))
        if kind is _OP and text == "(":
            depth += 1
    return out


def _returning_at(tokens: list[_Token]) -> int | None:
    for i, t in enumerate(tokens):
        if t.depth == 0 and t.word == "RETURNING":
            return i
    return None


def has_returning(sql: str, statement_type: str | None = None) -> bool:
    """Whether a DML statement has a (top-level) RETURNING clause."""
    if statement_type is not None and statement_type not in DML:
        return False
    try:
        return _returning_at(_tokens(sql)) is not None
    except (duckdb.Error, RuntimeError):
        return False


def schema_probe(sql: str, statement_type: str) -> str | None:
    """A SELECT with the same result columns as the write's RETURNING list, which runs
    nothing (`LIMIT 0`); None when there is no such SELECT (MERGE, or a shape this
    reading does not know): then the caller learns the schema another way."""
    if statement_type not in ("INSERT", "UPDATE", "DELETE"):
        return None
    tokens = _tokens(sql)
    at = _returning_at(tokens)
    if at is None or at + 1 >= len(tokens):
        return None
    end = len(tokens)
    while end > at + 1 and tokens[end - 1].kind is _OP and tokens[end - 1].text == ";":
        end -= 1
    listed = sql[tokens[at].end : tokens[end - 1].end].strip()
    target = _target(tokens, statement_type)
    if target is None or not listed:
        return None
    return f"SELECT {listed}\nFROM {target} LIMIT 0"


def write_target(sql: str, statement_type: str) -> str | None:
    """`schema.table` (lower case; a bare name is in main) that an INSERT, UPDATE or
    DELETE writes, read with DuckDB's tokenizer; None if it cannot tell. DuckDB's binder
    names no table for these, and the table's freshness must still move."""
    if statement_type not in ("INSERT", "UPDATE", "DELETE"):
        return None
    try:
        target = _target(_tokens(sql), statement_type)
    except (duckdb.Error, RuntimeError):
        return None
    if target is None:
        return None
    name = target.split(" AS ", 1)[0]
    parts = [sql_tree.ident(p) for p in split_identifier(name)]
    if len(parts) == 1:
        parts = ["main", *parts]
    return ".".join(parts[-2:]).lower()


def _target(tokens: list[_Token], statement_type: str) -> str | None:
    """`name [AS alias]` of the table the statement writes (the alias only where
    RETURNING may use it: UPDATE and DELETE)."""
    verb, after = {
        "INSERT": ("INSERT", "INTO"),
        "UPDATE": ("UPDATE", None),
        "DELETE": ("DELETE", "FROM"),
    }[statement_type]
    top = [t for t in tokens if t.depth == 0]
    try:
        i = next(n for n, t in enumerate(top) if t.word == verb)
    except StopIteration:
        return None
    i += 1
    if after is not None:
        while i < len(top) and top[i].word != after:
            if top[i].kind is not _KW:  # INSERT OR REPLACE INTO: only keywords between
                return None
            i += 1
        i += 1
    parts: list[str] = []
    while i < len(top) and top[i].kind in (_ID, _KW):
        parts.append(top[i].text)
        if i + 1 < len(top) and top[i + 1].kind is _OP and top[i + 1].text == ".":
            i += 2
            continue
        i += 1
        break
    if not parts:
        return None
    name = ".".join(parts)
    if statement_type == "INSERT" or i >= len(top):
        return name
    if top[i].word == "AS" and i + 1 < len(top):
        return f"{name} AS {top[i + 1].text}"
    if top[i].kind is _ID:
        return f"{name} AS {top[i].text}"
    return name
