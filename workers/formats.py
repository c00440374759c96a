"""Streaming file writers for exports: one Arrow record batch in, bytes on disk out.

Every writer takes batches one at a time and holds at most one batch (plus the
format's own buffers), so an export's memory does not grow with its size:

- CSV: `pyarrow.csv.CSVWriter`: RFC 4180 quoting, a header row; strings are always
  quoted, so an empty string is `""` and NULL is an empty field.
- JSON Lines: one object per row, built with Arrow compute kernels per batch (no
  Python loop over rows for flat columns). Decimals are exact strings, timestamps
  ISO-8601 strings (UTC with `Z` for zoned columns, no zone for naive ones), NaN and
  infinities `null`. `schema_document` describes the encoding, field by field.
- Parquet: `pyarrow.parquet.ParquetWriter` with the chosen codec; the Arrow schema is
  stored in the file, so zones, decimals and dictionaries come back as they were.
- Arrow IPC: the file format (`pyarrow.ipc.new_file`), LZ4 or ZSTD buffer compression.

CSV and JSON compress the whole stream (`pyarrow.CompressedOutputStream`); see
`agentdata.exports` for which combinations exist.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from agentdata.exports import ExportSpec


class ExportWriter:
    """Writes batches of one schema to `path` in the spec's format; `close()` finishes the file."""

    def __init__(self, spec: ExportSpec, path: Path, schema: pa.Schema) -> None:
        self.spec = spec
        self.path = path
        self.schema = schema
        self._raw = pa.OSFile(str(path), "wb")
        self._sink: Any = self._raw
        if spec.wraps_stream and spec.compression == "gzip":
            # Arrow's gzip stream always uses level 9 (several times slower than 6 for a
            # few percent); Python's zlib at the usual level 6 releases the GIL as it works.
            self._sink = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=GZIP_LEVEL)
        elif spec.wraps_stream:
            self._sink = pa.CompressedOutputStream(self._raw, spec.compression)
        self._writer: Any
        self._prepare = _identity
        if spec.format == "csv":
            csv_schema, self._prepare = _csv_plan(schema)
            self._writer = pacsv.CSVWriter(
                self._sink, csv_schema, write_options=pacsv.WriteOptions(include_header=True)
            )
        elif spec.format == "json":
            self._writer = JsonLinesWriter(self._sink, schema)
        elif spec.format == "parquet":
            self._writer = pq.ParquetWriter(
                self._sink,
                schema,
                # Dictionaries pay off for strings; for numbers and times they mostly
                # overflow and fall back (at twice the writing cost, for larger files).
                use_dictionary=_dictionary_columns(schema),
                compression=spec.compression,
                compression_level=GZIP_LEVEL if spec.compression == "gzip" else None,
                store_schema=True,
            )
        else:
            options = ipc.IpcWriteOptions(
                compression=spec.compression if spec.compression in ("lz4", "zstd") else None
            )
            self._writer = ipc.new_file(self._sink, schema, options=options)
        self._closed = False

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(self._prepare(batch))

    @property
    def bytes_written(self) -> int:
        """Bytes on disk so far (after compression)."""
        return int(self._raw.tell())

    def close(self) -> int:
        """Finish the file (footers, compression trailer); returns its size in bytes."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            if self._sink is not self._raw:
                self._sink.close()  # writes the compression trailer
            if not self._raw.closed:
                self._raw.close()
        return self.path.stat().st_size

    def abort(self) -> None:
        """Stop writing and close the file without caring about its state (it is deleted)."""
        if self._closed:
            return
        self._closed = True
        for closer in (self._writer.close, self._sink.close, self._raw.close):
            try:
                closer()
            except Exception:  # the file is garbage anyway
                pass


GZIP_LEVEL = 6


def _identity(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding in Parquet: text, binary, and dictionaries."""
    return [
        f.name
        for f in schema
        if pa.types.is_dictionary(f.type)
        or pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_string_view(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_large_binary(f.type)
    ]


def _csv_plan(schema: pa.Schema) -> tuple[pa.Schema, Any]:
    """The CSV writer's schema, and how to convert batches to it.

    Zoned timestamps are written as ISO-8601 text in UTC (`2024-01-31T12:00:00.123456Z`):
    the same instants, and pyarrow's CSV writer formats zoned columns through a slow
    per-value time-zone path (about 20 times slower than this). JSON columns are their
    text.
    """
    zoned = [i for i, f in enumerate(schema) if pa.types.is_timestamp(f.type) and f.type.tz]
    # Extension columns (arrow.json, arrow.uuid) are written as their storage: the CSV
    # writer knows no extension types, and JSON's storage is its text.
    tagged = [i for i, f in enumerate(schema) if isinstance(f.type, pa.BaseExtensionType)]
    if not zoned and not tagged:
        return schema, _identity
    out = schema
    for i in zoned:
        out = out.set(i, pa.field(schema[i].name, pa.string(), schema[i].nullable))
    for i in tagged:
        storage = schema[i].type.storage_type
        out = out.set(i, pa.field(schema[i].name, storage, schema[i].nullable))

    def prepare(batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = list(batch.columns)
        for i in zoned:
            columns[i] = _iso_timestamps(columns[i])
        for i in tagged:
            columns[i] = columns[i].storage
        return pa.RecordBatch.from_arrays(columns, schema=out)

    return out, prepare


# -- JSON Lines ------------------------------------------------------------------------


class JsonLinesWriter:
    """JSON Lines, one object per row, keys in schema order."""

    def __init__(self, sink: pa.NativeFile, schema: pa.Schema) -> None:
        self._sink = sink
        self._schema = schema
        self._keys = [json.dumps(f.name, ensure_ascii=False) for f in schema]

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if not self._keys:
            self._sink.write(b"{}\n" * batch.num_rows)
            return
        parts: list[Any] = []
        for i, key in enumerate(self._keys):
            parts.append(("{" if i == 0 else ",") + key + ":")
            parts.append(json_values(batch.column(i)))
        parts.append("}\n")
        lines = pc.binary_join_element_wise(*parts, "")
        # The joined rows are one contiguous buffer: write it without copying.
        _, offsets_buf, data = lines.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int32)
        start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
        self._sink.write(data[start:end])

    def close(self) -> None:
        pass


def json_values(arr: pa.Array) -> pa.Array:
    """Each value of `arr` as JSON text (a string array without nulls)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return json_values(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.array(["null"] * len(arr), pa.string())
    if pa.types.is_boolean(t):
        out = pc.if_else(arr, "true", "false")
    elif pa.types.is_integer(t):
        out = pc.cast(arr, pa.string())
    elif pa.types.is_floating(t):
        text = pc.cast(arr, pa.string())
        # "3" would read back as an integer: keep floats recognisable as floats ("3.0").
        integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
        out = pc.if_else(pc.is_finite(arr), text, _NULL_STRING)
    elif pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_time(t):
        out = _quoted(pc.cast(arr, pa.string()))
    elif pa.types.is_timestamp(t):
        out = _quoted(_iso_timestamps(arr))
    elif pa.types.is_duration(t):
        out = pc.cast(pc.cast(arr, pa.int64()), pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        out = _quoted(_escaped(pc.cast(arr, pa.string())))
    else:
        # Nested, binary, interval, extension: rare in exports, encoded value by value.
        out = pa.array(
            [None if v is None else _dumps(v) for v in arr.to_pylist()], type=pa.string()
        )
    # (pc.coalesce, not pc.fill_null: the latter imports pandas on first use.)
    return pc.coalesce(out, _NULL_TEXT)


_NULL_TEXT = pa.scalar("null", pa.string())
_NULL_STRING = pa.scalar(None, pa.string())


def _quoted(arr: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', arr, '"', "")


# JSON needs \" \\ and every control character escaped; the common ones get short forms.
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _escaped(arr: pa.Array) -> pa.Array:
    arr = pc.replace_substring(arr, "\\", "\\\\")
    arr = pc.replace_substring(arr, '"', '\\"')
    if pc.any(pc.match_substring_regex(arr, "[\\x00-\\x1f]")).as_py():
        for code in range(0x20):
            char = chr(code)
            if pc.any(pc.match_substring(arr, char)).as_py():
                arr = pc.replace_substring(arr, char, _SHORT_ESCAPES.get(char, f"\\u{code:04x}"))
    return arr


def _iso_timestamps(arr: pa.Array) -> pa.Array:
    """ISO-8601 text: `2024-01-31T12:00:00.123456Z` for zoned columns (in UTC), no zone otherwise."""
    t = arr.type
    zoned = t.tz is not None
    if zoned:
        # A zoned timestamp stores UTC instants; dropping the zone keeps them as UTC.
        arr = arr.cast(pa.timestamp(t.unit))
    text = pc.replace_substring(pc.cast(arr, pa.string()), " ", "T", max_replacements=1)
    if zoned:
        text = pc.binary_join_element_wise(text, "Z", "")
    return text


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, float):
        return None
    return str(value)


# -- the schema document ------------------------------------------------------------------


def schema_document(schema: pa.Schema, spec: ExportSpec) -> dict[str, Any]:
    """How an export's columns are typed and (for JSON) encoded; uploaded beside JSON exports."""
    fields = []
    for f in schema:
        entry: dict[str, Any] = {"name": f.name, "type": str(f.type), "nullable": f.nullable}
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if pa.types.is_timestamp(t):
            entry["unit"] = t.unit
            entry["timezone"] = t.tz
        if pa.types.is_decimal(t):
            entry["precision"], entry["scale"] = t.precision, t.scale
        if spec.format == "json":
            entry["json"] = _json_encoding(t)
        fields.append(entry)
    doc: dict[str, Any] = {"format": spec.format, "compression": spec.compression, "fields": fields}
    if spec.format == "json":
        doc["encoding"] = (
            "JSON Lines: one object per row, keys in column order; NULL is null. Decimals are "
            "strings holding the exact value; timestamps are ISO-8601 strings, in UTC with a Z "
            "suffix for columns with a time zone; NaN and infinities are null; binary is base64."
        )
    return doc


def _json_encoding(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_decimal(t):
        return "string (exact decimal)"
    if pa.types.is_timestamp(t):
        return "string (ISO-8601, UTC, Z)" if t.tz else "string (ISO-8601, no zone)"
    if pa.types.is_date(t):
        return "string (ISO-8601 date)"
    if pa.types.is_time(t):
        return "string (ISO-8601 time)"
    if pa.types.is_duration(t):
        return f"number ({t.unit})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "string (base64)"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    return "value"
