"""The Arrow schema of a query's result, learned by binding it, never by running it.

A GetFlightInfo must answer with the result's schema before any row is asked for.
Running the query for it (even as `SELECT * FROM (...) LIMIT 0`) is not free: DuckDB
does not plan a LIMIT 0 away above a sort or a window, so an `ORDER BY` over 20M rows
costs its whole sort twice, once for the schema and once for the DoGet. Binding is
enough: DuckDB's relation API binds a statement (names and types of the result)
without executing it. The Arrow form of those types comes from DuckDB's own Arrow
conversion of a constant row of the same types, so it is exactly what the DoGet will
stream (DuckDB decides, e.g., `VARCHAR` -> `string` or `string_view`):

    SELECT CAST(NULL AS BIGINT) AS "id", CAST(NULL AS DECIMAL(18,3)) AS "amount" LIMIT 0

That constant query reads no table; its schema is cached per list of types and names.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from agentdata.json_columns import json_schema
from agentdata.names import quote_ident

try:  # DuckDB's own binder call (duckdb 2.0), as in agentdata.duck_stream.
    from duckdb import _seam
except ImportError:  # pragma: no cover - another duckdb build
    _seam = None  # type: ignore[assignment]

#: Distinct result shapes remembered (a shape is a few hundred bytes).
MAX_SHAPES = 4096

_Shape = tuple[tuple[str, ...], tuple[str, ...]]


class BoundSchemas:
    """Result schemas by binding, with the type -> Arrow step cached per shape."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self._shapes: OrderedDict[_Shape, pa.Schema] = OrderedDict()
        self._max = max_shapes
        self._lock = threading.Lock()

    def of(
        self,
        cur: duckdb.DuckDBPyConnection,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
    ) -> pa.Schema:
        """The Arrow schema `sql` would stream (JSON columns as `arrow.json`), from
        binding it on `cur`. Raises what DuckDB raises for a statement that does not
        bind (the caller translates)."""
        names, types = bind(cur, sql, params)
        return self.arrow(cur, names, types)

    def arrow(
        self, cur: duckdb.DuckDBPyConnection, names: list[str], types: list[Any]
    ) -> pa.Schema:
        """The Arrow schema of columns `names` of DuckDB `types`."""
        shape = (tuple(names), tuple(str(t) for t in types))
        with self._lock:
            known = self._shapes.get(shape)
            if known is not None:
                self._shapes.move_to_end(shape)
                return known
        schema = _converted(cur, shape)
        schema = json_schema(schema, types) or schema
        with self._lock:
            self._shapes[shape] = schema
            while len(self._shapes) > self._max:
                self._shapes.popitem(last=False)
        return schema


def bind(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
) -> tuple[list[str], list[Any]]:
    """The result's column names and DuckDB types, from binding `sql` once (the
    relation API parses it, then binds it; the binder alone does both)."""
    if _seam is None:
        rel = cur.sql(sql, params=params)
        return list(rel.columns), list(rel.types)
    values = dict(params) if isinstance(params, Mapping) else list(params) if params else None
    signature = _seam.bind(cur, sql, values=values)
    return list(signature.names), list(signature.types)


def _converted(cur: duckdb.DuckDBPyConnection, shape: _Shape) -> pa.Schema:
    names, types = shape
    if not names:
        return pa.schema([])
    columns = ", ".join(
        f"CAST(NULL AS {duck}) AS {quote_ident(name)}"
        for name, duck in zip(names, types, strict=True)
    )
    return cur.sql(f"SELECT {columns} LIMIT 0").to_arrow_table().schema
