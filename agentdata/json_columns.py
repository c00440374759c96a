"""JSON columns travel as Arrow's canonical `arrow.json` extension type.

    reader = rel.to_arrow_reader(batch_rows)
    reader = as_json_extension(reader, rel.types)   # unchanged when no column is JSON

DuckDB hands a JSON value to Arrow as a plain string (its `arrow_lossless_conversion`
setting would tag JSON, but it also turns HUGEINT, TIME WITH TIME ZONE and BIT into
opaque binary extensions no client can read, so it stays off). The extension type
(`pa.json_()`, storage: the same string) tells clients the text is JSON; readers that
do not know it fall back to the storage string. The conversion is a cast in Arrow's
C++ reader, sharing the string buffers: no copy and no Python per batch, and nothing at
all for results without a JSON column. JSON nested in lists, structs, maps and
fixed-size lists is tagged too.

Loads go the other way by themselves: DuckDB creates a JSON column from an
`arrow.json` column (syncs send VARIANT/OBJECT/ARRAY that way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa


def json_schema(schema: pa.Schema, types: Sequence[Any]) -> pa.Schema | None:
    """`schema` with every JSON position (by the DuckDB `types` of its columns) typed
    `arrow.json`; None when there is none."""
    if not any("JSON" in str(t) for t in types):
        return None
    fields = [f.with_type(_tag(f.type, t)) for f, t in zip(schema, types, strict=True)]
    out = pa.schema(fields, metadata=schema.metadata)
    return None if out.equals(schema) else out


def as_json_extension(reader: pa.RecordBatchReader, types: Sequence[Any]) -> pa.RecordBatchReader:
    """`reader`, its JSON columns typed `arrow.json` (the same reader when it has none)."""
    target = json_schema(reader.schema, types)
    return reader if target is None else reader.cast(target)


def with_json_extension(table: pa.Table, types: Sequence[Any]) -> pa.Table:
    """The same for a collected table (a write's RETURNING rows)."""
    target = json_schema(table.schema, types)
    return table if target is None else table.cast(target)


def _tag(arrow: pa.DataType, duck: Any) -> pa.DataType:
    """`arrow` (DuckDB's Arrow type for a column of DuckDB type `duck`), JSON tagged."""
    if str(duck) == "JSON" and (pa.types.is_string(arrow) or pa.types.is_large_string(arrow)):
        return pa.json_(arrow)
    kind = getattr(duck, "id", "")
    children = dict(duck.children) if kind in ("list", "struct", "map", "array") else {}
    if kind == "list" and (pa.types.is_list(arrow) or pa.types.is_large_list(arrow)):
        field = arrow.value_field.with_type(_tag(arrow.value_type, children["child"]))
        return pa.large_list(field) if pa.types.is_large_list(arrow) else pa.list_(field)
    if kind == "array" and pa.types.is_fixed_size_list(arrow):
        field = arrow.value_field.with_type(_tag(arrow.value_type, children["child"]))
        return pa.list_(field, arrow.list_size)
    if kind == "struct" and pa.types.is_struct(arrow):
        return pa.struct(
            [
                arrow.field(i).with_type(_tag(arrow.field(i).type, t))
                for i, t in enumerate(children.values())
            ]
        )
    if kind == "map" and pa.types.is_map(arrow):
        return pa.map_(
            arrow.key_field.with_type(_tag(arrow.key_type, children["key"])),
            arrow.item_field.with_type(_tag(arrow.item_type, children["value"])),
            arrow.keys_sorted,
        )
    return arrow
