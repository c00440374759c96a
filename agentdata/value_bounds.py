"""Bounds on functions that build one huge value in a single call.

DuckDB checks for interrupts between vectors, and its buffer manager bounds what it
stores, but a single call such as `repeat('z', 4000000000)` allocates and fills gigabytes
outside both: it ignores `memory_limit` and cannot be interrupted (measured: 2.9 GB RSS
and 17 s for 1.5e9 bytes with a 1 GB limit). So, for tokens other than admins, the
guard rewrites every call of a value-amplifying function on DuckDB's parse tree so that
its size argument is checked *before* the call, at run time (arguments may be columns,
not just literals):

    repeat(s, n)  ->  repeat(s, CASE WHEN n > K OR n * length(s::VARCHAR) > K
                                     THEN error('[resource_exhausted] ...') ELSE n END)

K is `max_generated_bytes` (default 64 KiB; list-building functions get K / 8
elements). A vector holds 2048 values, so one un-interruptible vector of bounded
values stays near 2048 x K (128 MiB at the default); between vectors the engine's
memory watchdog and the query timeout take over. Residual risk (docs/security.md):
chains of concatenation (`s || s || ...`, nested CTEs) grow values without any single
amplifying call; the memory watchdog stops those between vectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import duckdb

from agentdata import sql_tree
from agentdata.errors import PermissionDenied
from agentdata.sql_tree import Node

#: Marker DuckDB's error() carries back, recognised by the engine's error translation.
EXHAUSTED_MARKER = "[resource_exhausted]"


def _message(func: str, limit: int, setting: str) -> str:
    text = (
        f"{EXHAUSTED_MARKER} {func}() would build a value larger than {limit} "
        f"(the server's {setting}); generate rows with a table function such as range() instead"
    )
    return "'" + text.replace("'", "''") + "'"


def _num(x: str) -> str:
    # Through VARCHAR so the cast always binds, whatever the argument's type.
    return f"try_cast(CAST({x} AS VARCHAR) AS DOUBLE)"


def _range_count(args: int) -> str:
    """An estimate of how many elements range()/generate_series() would produce."""
    if args == 1:
        return _num("__a")
    step_num = _num("__c") if args == 3 else "1"
    step_us = "epoch_us(try_cast(CAST(__c AS VARCHAR) AS INTERVAL))" if args == 3 else "86400000000"
    ts = "epoch_us(try_cast(CAST({} AS VARCHAR) AS TIMESTAMP))"
    return (
        f"abs(coalesce(({_num('__b')} - {_num('__a')}) / nullif({step_num}, 0),"
        f" ({ts.format('__b')} - {ts.format('__a')}) / nullif({step_us}, 0)))"
    )


class ValueBounds:
    """Rewrites amplifying calls in a parse tree; one instance per engine."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_elements = max(1, max_bytes // 8)
        self._templates: dict[tuple[str, int], Node] = {}

    def rewrite(self, cur: duckdb.DuckDBPyConnection, func: Node) -> Node | None:
        """A bounded replacement for FUNCTION node `func`, or None if it needs none.

        Raises PermissionDenied for calls that cannot be bounded (a non-constant
        format string, `*` widths).
        """
        name = str(func.get("function_name", "")).lower()
        args = sql_tree.function_arguments(func)
        if name in ("printf", "format"):
            self._check_format(name, args)
            return None
        build = _BUILDERS.get(name)
        if build is None:
            return None
        template_sql = build(self, len(args))
        if template_sql is None:
            return None
        key = (name, len(args))
        template = self._templates.get(key)
        if template is None:
            template = sql_tree.parse_expression(cur, template_sql)
            self._templates[key] = template
        holes = {f"__{chr(ord('a') + i)}": arg for i, arg in enumerate(args)}
        bounded = sql_tree.substitute(template, holes)
        # Keep the caller's alias and the original function's schema qualifier.
        bounded["alias"] = func.get("alias", "")
        return bounded

    def _check_format(self, name: str, args: list[Node]) -> None:
        if not args:
            return
        fmt = sql_tree.string_constant(args[0])
        if fmt is None:
            raise PermissionDenied(f"{name}() needs a constant format string")
        if "*" in fmt and name == "printf" or re.search(r"\{[^}]*\{", fmt):
            raise PermissionDenied(f"{name}() widths must be written into the format string")
        for digits in re.findall(r"\d+", fmt):
            if int(digits) > self.max_bytes:
                raise PermissionDenied(
                    f"{name}() width {digits} exceeds the server's max_generated_bytes ({self.max_bytes})"
                )

    # -- templates (holes: __a, __b, __c, __d are the call's arguments) ----------
    def _repeat(self, n: int) -> str | None:
        if n != 2:
            return None
        k = self.max_bytes
        return (
            f"repeat(__a, CASE WHEN __b > {k} OR __b * length(CAST(__a AS VARCHAR)) > {k}"
            f" THEN error({_message('repeat', k, 'max_generated_bytes')}) ELSE __b END)"
        )

    @staticmethod
    def _pad(func: str) -> Callable[[ValueBounds, int], str | None]:
        def build(self: ValueBounds, n: int) -> str | None:
            if n != 3:
                return None
            k = self.max_bytes
            return (
                f"{func}(__a, CASE WHEN __b > {k} THEN error({_message(func, k, 'max_generated_bytes')})"
                " ELSE __b END, __c)"
            )

        return build

    @staticmethod
    def _range(func: str) -> Callable[[ValueBounds, int], str | None]:
        def build(self: ValueBounds, n: int) -> str | None:
            if n not in (1, 2, 3):
                return None
            k = self.max_elements
            rest = ", ".join(f"__{c}" for c in "abc"[1:n])
            first = (
                f"CASE WHEN {_range_count(n)} > {k} THEN error({_message(func, k, 'max_generated_bytes / 8 elements')})"
                " ELSE __a END"
            )
            return f"{func}({first}{', ' + rest if rest else ''})"

        return build

    @staticmethod
    def _resize(func: str) -> Callable[[ValueBounds, int], str | None]:
        def build(self: ValueBounds, n: int) -> str | None:
            if n not in (2, 3):
                return None
            k = self.max_elements
            rest = ", __c" if n == 3 else ""
            return (
                f"{func}(__a, CASE WHEN __b > {k} THEN error({_message(func, k, 'max_generated_bytes / 8 elements')})"
                f" ELSE __b END{rest})"
            )

        return build

    def _to_base(self, n: int) -> str | None:
        if n != 3:
            return None
        k = self.max_bytes
        return (
            f"to_base(__a, __b, CASE WHEN __c > {k} THEN error({_message('to_base', k, 'max_generated_bytes')})"
            " ELSE __c END)"
        )

    def _bar(self, n: int) -> str | None:
        if n != 4:
            return None
        k = self.max_bytes
        return (
            f"bar(__a, __b, __c, CASE WHEN __d > {k} THEN error({_message('bar', k, 'max_generated_bytes')})"
            " ELSE __d END)"
        )

    def _replace(self, n: int) -> str | None:
        if n != 3:
            return None
        k = self.max_bytes
        growth = "(length(__a) + 1) * (length(__c) - length(__b))"
        return (
            f"replace(__a, __b, CASE WHEN length(__c) > length(__b) AND {growth} > {k}"
            f" THEN error({_message('replace', k, 'max_generated_bytes')}) ELSE __c END)"
        )

    def _regexp_replace(self, n: int) -> str | None:
        if n not in (3, 4):
            return None
        k = self.max_bytes
        # Each match (possibly empty, so up to length+1 of them) becomes the replacement,
        # whose back-references expand to at most the whole input.
        growth = "(length(__a) + 1) * length(__c)"
        opts = ", __d" if n == 4 else ""
        return (
            f"regexp_replace(__a, __b, CASE WHEN {growth} > {k} AND {growth} > length(__a)"
            f" THEN error({_message('regexp_replace', k, 'max_generated_bytes')}) ELSE __c END{opts})"
        )


_BUILDERS: dict[str, Callable[[ValueBounds, int], str | None]] = {
    "repeat": ValueBounds._repeat,
    "lpad": ValueBounds._pad("lpad"),
    "rpad": ValueBounds._pad("rpad"),
    "range": ValueBounds._range("range"),
    "generate_series": ValueBounds._range("generate_series"),
    "list_resize": ValueBounds._resize("list_resize"),
    "array_resize": ValueBounds._resize("array_resize"),
    "to_base": ValueBounds._to_base,
    "bar": ValueBounds._bar,
    "replace": ValueBounds._replace,
    "regexp_replace": ValueBounds._regexp_replace,
}
