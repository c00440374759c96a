"""A batch of parameter sets as one set-based statement.

Flight SQL clients run `executemany` by binding a record batch of parameter rows to a
prepared statement (ADBC: `cur.executemany("INSERT INTO t VALUES (?, ?)", rows)`).
Executing the statement once per row costs a bind and an execution each (DuckDB:
about 2,000 rows/s); the same rows as one `INSERT ... SELECT` over the bound Arrow
table are one execution:

    INSERT INTO crm.notes (id, body) VALUES (?, upper(?)) RETURNING id
    ->  INSERT INTO crm.notes (id, body) SELECT __p."0", upper(__p."1")
        FROM <the bound batch> AS __p RETURNING id

`set_based` makes that rewrite for the shapes where it means exactly what running the
statement row by row means: an INSERT with a single VALUES row whose placeholders all
sit in that row, a DELETE whose placeholders all sit in its WHERE clause
(`DELETE FROM t WHERE id = ?` -> `... WHERE EXISTS (SELECT 1 FROM <batch> AS __p WHERE
id = __p."...")`), and an UPDATE whose WHERE clause reads no column it sets
(`UPDATE t SET v = ? WHERE id = ?` -> `UPDATE t SET v = __p."..." FROM <batch> AS __p
WHERE (id = __p."...")`), each optionally followed by RETURNING. An UPDATE is the same
as its row-by-row run only when no row matches two sets (row by row the later set
wins; set-based, DuckDB picks one): its plan carries a `conflicts` query the caller
runs first, in the same transaction, falling back to row by row when it finds one.
Everything else (several VALUES rows; `ON CONFLICT` or `INSERT OR ...`, whose
row-by-row runs see each other's rows; `DEFAULT`; subqueries; an UPDATE whose sets
change what its WHERE matches) answers None and runs row by row. The statement is
tokenized by DuckDB itself, so strings, quoted names and comments are never mistaken
for placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

#: The alias the rewritten statement gives the bound batch.
ALIAS = "__p"

#: Most parameter sets run row by row in one call (a set-based batch may be larger):
#: each is an execution under the writer lock.
MAX_ROW_BY_ROW = 100_000

#: One set of values for a statement's placeholders: positional, or by `$name`.
ParamSet = Sequence[Any] | Mapping[str, Any]


@dataclass(frozen=True)
class ParameterBatch:
    """Parameter sets as a client bound them: one row per execution, one column per
    placeholder (by position for `?`/`$n`, whatever the columns are called; by name for
    `$name`)."""

    table: pa.Table
    #: The statement's placeholders in binding order (`Engine.parameter_names`).
    names: list[str]

    @property
    def positional(self) -> bool:
        return all(n.isdigit() for n in self.names)

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def columns(self) -> dict[str, str]:
        """Placeholder -> the column of `as_view()` holding its values. The columns get
        names no table has, so a statement's own column names keep their meaning."""
        return {name: f"__agentdata_p{i}" for i, name in enumerate(self.names)}

    def as_view(self) -> pa.Table:
        """The batch with the column names `columns()` promises, in placeholder order."""
        table = self.table if self.positional else self.table.select(self.names)
        return table.rename_columns(list(self.columns().values()))

    def sets(self) -> list[ParamSet]:
        """One value set per row, for running the statement row by row."""
        columns = [c.to_pylist() for c in self.table.columns]
        if self.positional:
            return [list(values) for values in zip(*columns, strict=True)]
        by_name = dict(zip(self.table.column_names, columns, strict=True))
        return [{n: by_name[n][i] for n in self.names} for i in range(self.table.num_rows)]


@dataclass(frozen=True)
class SetBased:
    """A statement's set-based form over the batch."""

    sql: str
    #: A query returning a row when the set-based form would differ from the row-by-row
    #: run (an UPDATE whose sets meet on one row); run it first, then `sql` if it is
    #: empty. None: `sql` always means the same.
    conflicts: str | None = None


@dataclass(frozen=True)
class _Tokens:
    sql: str
    items: list[tuple[int, int, str]]  # (start, end, type) of each non-comment token

    @classmethod
    def of(cls, sql: str) -> _Tokens:
        raw = duckdb.tokenize(sql)
        items = []
        for i, (start, kind) in enumerate(raw):
            end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
            name = str(kind).rsplit(".", 1)[-1]
            if name != "comment":
                items.append((start, start + len(sql[start:end].rstrip()), name))
        return cls(sql, items)

    def text(self, i: int) -> str:
        start, end, _ = self.items[i]
        return self.sql[start:end]

    def kind(self, i: int) -> str:
        return self.items[i][2]

    def word(self, i: int) -> str:
        return self.text(i).upper() if self.kind(i) == "keyword" else ""


def set_based(sql: str, view: str, columns: Mapping[str, str]) -> SetBased | None:
    """`sql` run once for every row of `view` (one row per parameter set), as one
    statement; None when the statement has no such form that means the same as running
    it row by row (see the module docstring).

    `columns` maps each placeholder (`"1"`, `"2"`, ... for `?` and `$n`; the name for
    `$name`) to the column of `view` holding its values.
    """
    try:
        t = _Tokens.of(sql)
    except (duckdb.Error, ValueError, RuntimeError):
        return None
    if not t.items:
        return None
    if t.word(0) == "INSERT":
        insert = _insert_select(t, view, columns)
        return SetBased(insert) if insert is not None else None
    if t.word(0) == "DELETE":
        delete = _delete_exists(t, view, columns)
        return SetBased(delete) if delete is not None else None
    if t.word(0) == "UPDATE":
        return _update_from(t, view, columns)
    return None


def _insert_select(t: _Tokens, view: str, columns: Mapping[str, str]) -> str | None:
    """INSERT ... VALUES (<one row>) [RETURNING ...] -> INSERT ... SELECT <row> FROM view."""
    n = len(t.items)
    values = next((i for i in range(n) if t.word(i) == "VALUES"), None)
    if values is None or values + 1 >= n or t.text(values + 1) != "(":
        return None
    if any(t.word(i) == "OR" for i in range(1, values)):
        return None  # INSERT OR REPLACE/IGNORE: rows of one batch would meet each other
    close = _matching(t, values + 1)
    if close is None:
        return None
    tail = _tail(t, close + 1)
    if tail is None:
        return None  # several VALUES rows, ON CONFLICT, ...
    inside = range(values + 2, close)
    if not _placeholders_only_in(t, inside) or any(
        t.word(i) in ("DEFAULT", "SELECT") for i in inside
    ):
        return None
    row = _replaced(t, inside, columns)
    if row is None:
        return None
    head = t.sql[: t.items[values][0]]
    return f"{head}SELECT {row} FROM {view} AS {ALIAS}{_suffix(t, tail)}"


def _delete_exists(t: _Tokens, view: str, columns: Mapping[str, str]) -> str | None:
    """DELETE FROM target WHERE <cond> [RETURNING ...] -> DELETE FROM target WHERE EXISTS
    (SELECT 1 FROM view WHERE <cond>): a row goes if any set matches it, as when the sets
    run one by one (a row deleted once is not deleted again, so the counts agree)."""
    n = len(t.items)
    where = next((i for i in range(n) if t.word(i) == "WHERE"), None)
    if where is None or any(t.word(i) == "USING" for i in range(where)):
        return None
    end = next((i for i in range(where, n) if t.word(i) == "RETURNING"), n)
    while end > where + 1 and t.text(end - 1) == ";":
        end -= 1
    inside = range(where + 1, end)
    if not _placeholders_only_in(t, inside) or any(t.word(i) == "SELECT" for i in inside):
        return None  # a subquery could see the rows earlier sets deleted
    condition = _replaced(t, inside, columns)
    if condition is None:
        return None
    head = t.sql[: t.items[where][0]]
    exists = f"WHERE EXISTS (SELECT 1 FROM {view} AS {ALIAS} WHERE ({condition}\n))"
    return f"{head}{exists}{_suffix(t, end if end < n else None)}"


def _update_from(t: _Tokens, view: str, columns: Mapping[str, str]) -> SetBased | None:
    """UPDATE target SET <assignments> WHERE <cond> [RETURNING ...] -> UPDATE target SET
    <assignments over the batch> FROM view WHERE (<cond over the batch>), with the query
    that finds a target row two sets would both update."""
    n = len(t.items)
    if any(t.word(i) in ("SELECT", "FROM", "USING", "DEFAULT") for i in range(n)):
        return None  # subqueries see earlier sets' rows; FROM/USING already join
    set_at = next((i for i in range(n) if t.word(i) == "SET"), None)
    where = next((i for i in range(n) if t.word(i) == "WHERE"), None)
    if set_at is None or where is None or not set_at < where:
        return None
    target = _target(t, range(1, set_at))
    if target is None:
        return None
    table_text, ref = target
    end = next((i for i in range(where, n) if t.word(i) == "RETURNING"), n)
    while end > where + 1 and t.text(end - 1) == ";":
        end -= 1
    assigned = _assigned(t, range(set_at + 1, where))
    if assigned is None or any(
        _name(t, i) in assigned
        for i in range(where + 1, end)
        if t.kind(i) != "operator" and not _is_placeholder(t, i - 1)
    ):
        return None  # a set could change which rows a later set's WHERE matches
    if not _placeholders_only_in(t, range(set_at + 1, end)):
        return None
    assignments = _replaced(t, range(set_at + 1, where), columns)
    before = sum(1 for i in range(set_at + 1, where) if t.text(i) == "?")
    condition = _replaced(t, range(where + 1, end), columns, skip=before)
    if assignments is None or condition is None:
        return None
    head = t.sql[: t.items[set_at + 1][0]]
    batch = f"{view} AS {ALIAS}"
    sql = f"{head}{assignments} FROM {batch} WHERE ({condition}\n){_suffix(t, end if end < n else None)}"
    conflicts = (
        f"SELECT 1 FROM {table_text} JOIN {batch} ON ({condition}\n) "
        f"GROUP BY {ref}.rowid HAVING count(*) > 1 LIMIT 1"
    )
    return SetBased(sql, conflicts)


def _target(t: _Tokens, span: range) -> tuple[str, str] | None:
    """An UPDATE's `name[.name...] [[AS] alias]`: its text and how to refer to its rows."""
    i = span.start
    if i >= span.stop or t.kind(i) not in ("identifier", "keyword"):
        return None
    while i + 2 < span.stop and t.text(i + 1) == ".":
        i += 2
    table_text = t.sql[t.items[span.start][0] : t.items[i][1]]
    rest = list(range(i + 1, span.stop))
    if rest and t.word(rest[0]) == "AS":
        rest = rest[1:]
    if not rest:
        return table_text, table_text
    if len(rest) == 1 and t.kind(rest[0]) in ("identifier", "keyword"):
        alias = t.text(rest[0])
        return f"{table_text} AS {alias}", alias
    return None


def _assigned(t: _Tokens, span: range) -> set[str] | None:
    """The column names a SET clause assigns (`a = ..., b = ...`), or None for a shape
    this does not read (`(a, b) = ...`)."""
    names: set[str] = set()
    depth = 0
    expect_name = True
    for i in span:
        text = t.text(i)
        if t.kind(i) == "operator":
            depth += text.count("(") - text.count(")")
            if depth == 0 and text == ",":
                expect_name = True
                continue
        if expect_name:
            if t.kind(i) not in ("identifier", "keyword") or i + 1 >= span.stop:
                return None
            if t.text(i + 1) != "=":
                return None
            names.add(_name(t, i))
            expect_name = False
    return names or None


def _name(t: _Tokens, i: int) -> str:
    """A name token as the catalog compares it: unquoted and case-folded."""
    text = t.text(i)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.lower()


def _tail(t: _Tokens, i: int) -> int | None:
    """Past `i`: the index of RETURNING, len(items) when nothing (but `;`) follows, or
    None when anything else does."""
    n = len(t.items)
    while i < n and t.text(i) == ";":
        i += 1
    if i < n and t.word(i) != "RETURNING":
        return None
    return i


def _suffix(t: _Tokens, tail: int | None) -> str:
    if tail is None or tail >= len(t.items):
        return ""
    return " " + t.sql[t.items[tail][0] :].rstrip().rstrip(";")


def _placeholders_only_in(t: _Tokens, span: range) -> bool:
    found = [i for i in range(len(t.items)) if _is_placeholder(t, i)]
    return bool(found) and all(i in span for i in found)


def _replaced(t: _Tokens, span: range, columns: Mapping[str, str], skip: int = 0) -> str | None:
    """The text of tokens `span` with each placeholder replaced by its batch column
    (`skip`: how many `?` placeholders come before the span)."""
    pieces = []
    cursor = t.items[span.start][0]
    position = skip
    for i in span:
        if not _is_placeholder(t, i):
            continue
        position += 1
        key = str(position) if t.text(i) == "?" else t.text(i + 1)
        column = columns.get(key)
        if column is None:
            return None
        start = t.items[i][0]
        end = t.items[i + 1][1] if t.text(i) == "$" else t.items[i][1]
        pieces += [t.sql[cursor:start], f'{ALIAS}."{column.replace(chr(34), chr(34) * 2)}"']
        cursor = end
    pieces.append(t.sql[cursor : t.items[span.stop - 1][1]])
    return "".join(pieces)


def _is_placeholder(t: _Tokens, i: int) -> bool:
    if t.kind(i) != "operator":
        return False
    if t.text(i) == "?":
        return True
    # `$1` / `$name`: the `$` operator directly followed by a number or a name.
    return (
        t.text(i) == "$"
        and i + 1 < len(t.items)
        and t.items[i + 1][0] == t.items[i][1]
        and t.kind(i + 1) in ("numeric_const", "identifier")
    )


def _matching(t: _Tokens, open_index: int) -> int | None:
    depth = 0
    for i in range(open_index, len(t.items)):
        if t.kind(i) != "operator":
            continue
        depth += t.text(i).count("(") - t.text(i).count(")")
        if depth == 0:
            return i
    return None
