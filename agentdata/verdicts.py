"""The guard's verdicts, remembered: a statement is checked once per token scope.

Checking a new read costs DuckDB a parse-tree serialization, a bind and a walk (about
0.7 ms, more than an indexed lookup takes to run). Two lookups answer most requests
without it:

1. **The same text**, for the same scope (role, table allow-list, row filters and
   masks) since the last committed write: GetFlightInfo and the DoGet after it, a
   prepared statement re-executed, an agent repeating itself.
2. **The same text but for its numbers**: `... WHERE id = 42` after `... WHERE id = 7`.
   Every decision the guard makes reads the statement's structure, its identifiers
   and its string constants, never the value of a numeric literal: functions are
   allowed by name, tables by name, value-amplifying calls are bounded at run time
   whatever their arguments (agentdata.value_bounds), and the cost guard, which does
   read literals, runs for every query anyway. So a verdict reached for one text holds
   for a text that differs only inside its numbers, provided that
   - the verdict let the text run unchanged (no rewrite: a rewritten statement
     carries the first text's numbers), is a plain read (not EXPLAIN, no
     placeholders), and
   - the numbers are unambiguous: each is a plain decimal literal (`42`, `1.5`,
     `.5`, `1e-3`) as DuckDB's tokenizer reports it, not next to a character that
     could join it into something else (`$1` is a parameter, `#2` a column position,
     `t.1` or `1x` other tokens). A text with any other kind of number is only ever
     matched exactly.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import replace

import duckdb

from agentdata.sqlguard import CheckedStatement, Kind

#: Cached verdicts: how many, and the longest SQL text kept.
MAX_VERDICTS = 4096
MAX_SQL_BYTES = 16 * 1024

#: What a number stands as in a shape: a byte no SQL text given a shape contains.
_HOLE = "\x00"
_PLAIN_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
#: Characters that, next to a number, could make it part of another token.
_JOINS = frozenset("$#.:?_'\"`") | frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NUMERIC = duckdb.token_type.numeric_const


def numeric_shape(sql: str) -> str | None:
    """`sql` with each numeric literal replaced by one placeholder byte; None when the
    text has no number, or one that is not unambiguously a plain decimal literal."""
    if _HOLE in sql:
        return None
    try:
        tokens = duckdb.tokenize(sql)
    except (duckdb.Error, ValueError):
        return None
    pieces: list[str] = []
    done = 0
    for start, kind in tokens:
        if kind != _NUMERIC:
            continue
        match = _PLAIN_NUMBER.match(sql, start)
        if match is None:
            return None
        end = match.end()
        before = sql[start - 1] if start > 0 else " "
        after = sql[end] if end < len(sql) else " "
        if before in _JOINS or before.isdigit() or after in _JOINS or after.isdigit():
            return None
        pieces.append(sql[done:start])
        pieces.append(_HOLE)
        done = end
    if not pieces:
        return None
    pieces.append(sql[done:])
    return "".join(pieces)


def _shareable(stmt: CheckedStatement, sql: str) -> bool:
    """Whether `stmt`, the verdict on `sql`, holds for texts of the same numeric shape."""
    return (
        stmt.kind is Kind.READ and stmt.sql == sql and not stmt.explain and stmt.probe_sql is None
    )


class Verdicts:
    """Verdicts by (scope, text) and by (scope, numeric shape), least recently used out."""

    def __init__(self, max_entries: int = MAX_VERDICTS, max_sql_bytes: int = MAX_SQL_BYTES) -> None:
        self.max_entries = max_entries
        self.max_sql_bytes = max_sql_bytes
        self._entries: OrderedDict[tuple[Hashable, ...], CheckedStatement] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scope: Hashable, sql: str) -> CheckedStatement | None:
        """The verdict on `sql` for `scope` (which includes the catalog generation), if known."""
        if len(sql) > self.max_sql_bytes:
            return None
        with self._lock:
            stmt = self._entries.get((scope, sql))
            if stmt is not None:
                self._entries.move_to_end((scope, sql))
        if stmt is not None:
            return stmt
        shape = numeric_shape(sql)
        if shape is None:
            return None
        with self._lock:
            shaped = self._entries.get((scope, _HOLE, shape))
            if shaped is None:
                return None
            self._entries.move_to_end((scope, _HOLE, shape))
            # Kept under its own text too: the call that runs it (DoGet after
            # GetFlightInfo) finds it without tokenizing the text again.
            stmt = replace(shaped, sql=sql)
            self._entries[(scope, sql)] = stmt
            self._trim()
        return stmt

    def put(self, scope: Hashable, sql: str, stmt: CheckedStatement) -> None:
        """Remember the guard's verdict `stmt` on `sql` for `scope`."""
        if len(sql) > self.max_sql_bytes:
            return
        shape = numeric_shape(sql) if _shareable(stmt, sql) else None
        with self._lock:
            self._entries[(scope, sql)] = stmt
            if shape is not None:
                self._entries[(scope, _HOLE, shape)] = stmt
            self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
