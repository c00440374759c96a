"""What an export may be: formats, compressions, and what each combination produces.

Shared by the REST route (which refuses a bad request at once, with a 400 naming the
choices) and the task that writes the file (workers.formats), so the two cannot
disagree.

    format    compressions                 file                 how it is compressed
    csv       none, gzip, zstd             .csv[.gz|.zst]       the whole stream
    json      none, gzip, zstd             .jsonl[.gz|.zst]     the whole stream
    parquet   none, snappy, gzip, zstd     .parquet             Parquet's own page codec
    arrow     none, lz4, zstd, gzip        .arrow[.gz]          IPC buffer codec (lz4,
                                                                zstd); gzip wraps the stream

Parquet and Arrow IPC compress inside the format where the format has the codec, so
the file stays readable by any Parquet/Arrow reader; IPC has no gzip codec, so that
one choice wraps the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from agentdata.errors import InvalidArgument

FORMATS = ("csv", "json", "parquet", "arrow")
COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "csv": ("none", "gzip", "zstd"),
    "json": ("none", "gzip", "zstd"),
    "parquet": ("none", "snappy", "gzip", "zstd"),
    "arrow": ("none", "lz4", "zstd", "gzip"),
}
_EXTENSIONS = {"csv": ".csv", "json": ".jsonl", "parquet": ".parquet", "arrow": ".arrow"}
_CONTENT_TYPES = {
    "csv": "text/csv",
    "json": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.file",
}
_STREAM_SUFFIX = {"gzip": ".gz", "zstd": ".zst"}
_STREAM_TYPE = {"gzip": "application/gzip", "zstd": "application/zstd"}


@dataclass(frozen=True)
class ExportSpec:
    """A validated (format, compression) pair."""

    format: str
    compression: str

    @classmethod
    def parse(cls, fmt: str, compression: str | None) -> ExportSpec:
        """Validate user input; InvalidArgument names the allowed choices."""
        fmt = (fmt or "").lower()
        compression = (compression or "none").lower()
        if fmt not in FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
        allowed = COMPRESSIONS[fmt]
        if compression not in allowed:
            hint = ""
            if compression == "snappy":
                hint = " (snappy is for parquet only)"
            elif compression == "lz4":
                hint = " (lz4 is for arrow only)"
            raise InvalidArgument(
                f"compression {compression!r} does not go with format {fmt!r}{hint}; "
                f"{fmt} takes {', '.join(allowed)}"
            )
        return cls(fmt, compression)

    @property
    def wraps_stream(self) -> bool:
        """True when the whole file is compressed (rather than inside the format)."""
        if self.compression == "none":
            return False
        if self.format in ("csv", "json"):
            return True
        return self.format == "arrow" and self.compression == "gzip"

    @property
    def extension(self) -> str:
        ext = _EXTENSIONS[self.format]
        if self.wraps_stream:
            ext += _STREAM_SUFFIX[self.compression]
        return ext

    @property
    def content_type(self) -> str:
        if self.wraps_stream:
            return _STREAM_TYPE[self.compression]
        return _CONTENT_TYPES[self.format]

    def check_schema(self, schema: pa.Schema) -> None:
        """Refuse columns the format cannot hold (CSV has no nested values)."""
        if self.format != "csv":
            return
        bad = [f"{f.name} ({f.type})" for f in schema if not csv_can_hold(f.type)]
        if bad:
            raise InvalidArgument(
                "CSV cannot hold nested, binary or interval columns: "
                + ", ".join(bad)
                + "; export as json, parquet or arrow, or cast them to text in the query"
            )


def csv_can_hold(t: pa.DataType) -> bool:
    """Whether pyarrow's CSV writer can write a column of type `t`."""
    if pa.types.is_dictionary(t):
        return csv_can_hold(t.value_type)
    if isinstance(t, pa.BaseExtensionType):  # arrow.json, arrow.uuid: written as storage
        return csv_can_hold(t.storage_type)
    return not (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_nested(t)
        or pa.types.is_interval(t)
        or pa.types.is_union(t)
        or pa.types.is_map(t)
    )
