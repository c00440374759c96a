"""Snowflake → DuckDB types: the documented mapping, and the per-batch Arrow conversion.

    Snowflake                          DuckDB              Arrow (what the loader receives)
    ---------------------------------  ------------------  --------------------------------
    NUMBER(p,0), p <= 2                TINYINT             int8
    NUMBER(p,0), p <= 4                SMALLINT            int16
    NUMBER(p,0), p <= 9                INTEGER             int32
    NUMBER(p,0), p <= 18               BIGINT              int64
    NUMBER(p,0), 19 <= p <= 38         DECIMAL(p,0)        decimal128(p, 0)
    NUMBER(p,s), s > 0                 DECIMAL(p,s)        decimal128(p, s)
    FLOAT / DOUBLE / REAL              DOUBLE              float64
    VARCHAR / TEXT / STRING / CHAR     VARCHAR             string
    BINARY / VARBINARY                 BLOB                binary
    BOOLEAN                            BOOLEAN             bool
    DATE                               DATE                date32
    TIME(s)                            TIME                time64[us]
    TIMESTAMP_NTZ(s) (and DATETIME)    TIMESTAMP           timestamp[us]
    TIMESTAMP_LTZ(s), TIMESTAMP_TZ(s)  TIMESTAMPTZ         timestamp[us, tz=UTC]
    VARIANT / OBJECT / ARRAY           JSON                arrow.json extension on string
    anything else                      UnmappedTypeError naming the column (terminal)

Why these choices:
- Integers go to the smallest DuckDB integer that holds every value the declared precision
  allows, so nothing can overflow. Above 18 digits no 64-bit integer suffices; we use
  DECIMAL(p,0) rather than HUGEINT: both are 128-bit integers inside DuckDB, but Arrow has no
  128-bit integer type, so a HUGEINT travels as decimal128(38,0) anyway and would need a
  cast on every load, while DECIMAL(p,0) round-trips through Arrow as is and keeps the
  declared precision, which schema evolution compares (NUMBER(20,0) → NUMBER(25,0) is a
  widening). Note that Snowflake's INT/INTEGER/BIGINT are all NUMBER(38,0), so they land as
  DECIMAL(38,0): exact, at the cost of a wider type than the values may need.
- DuckDB's TIME and TIMESTAMP have microsecond resolution; Snowflake's default scale is 9,
  so sub-microsecond digits are truncated (never rounded into the next second).
- TIMESTAMPTZ stores an instant: TIMESTAMP_LTZ and TIMESTAMP_TZ values keep their instant
  (shown in UTC); the per-value UTC offset of a TIMESTAMP_TZ is not kept.
- VARIANT/OBJECT/ARRAY arrive from the connector as JSON text; the `arrow.json` extension
  type makes DuckDB create a JSON column when it ingests the batch, without a cast.
- Unmapped on purpose: GEOGRAPHY, GEOMETRY, VECTOR, MAP, FILE, INTERVAL_*, DECFLOAT and the
  structured (typed) OBJECT/ARRAY of Iceberg tables. A sync fails at once, naming the
  column, rather than loading something lossy; cast it in a SELECT source instead.

What the connector yields (snowflake-connector-python 4.8, `fetch_arrow_batches` with
`arrow_number_to_decimal=True`) varies with the data, not only with the declared type:
NUMBER(p,0) comes as int8/16/32/64 or decimal128 depending on the values in each result
chunk; TIME as time32/time64 in the unit of its scale; TIMESTAMP_* in s/ms/us/ns by scale
(the extractor forces microseconds), LTZ/TZ tagged with the session time zone. The
connector reading the `fakesnow` emulator (0.12) yields: int64 for a column declared
NUMBER(38,0)/INT (stored as BIGINT, so the emulator cannot hold 20+ digit values in it),
decimal128(p,s) for other NUMBERs and for computed ones such as seq8(); float64; string (VARIANT/OBJECT/ARRAY as compact JSON text); binary; bool;
date32; time64[us]; timestamp[ns] (timestamp[us] when forced), with tz Etc/UTC for LTZ and
TZ, which the emulator reports both as TIMESTAMP_TZ. `conform_batch` accepts all of these
and always produces the target schema above, so a stream has one schema however
Snowflake chunks it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from agentdata.errors import InvalidArgument
from agentdata.schema_evolution import normalize_duckdb_type


class UnmappedTypeError(InvalidArgument):
    """A source column whose Snowflake type has no DuckDB mapping (terminal: fails the run)."""

    def __init__(self, column: str, snowflake_type: str, *, reason: str | None = None) -> None:
        message = (
            f"column {column!r} has Snowflake type {snowflake_type}, which agentdata does not map"
        )
        if reason:
            message += f" ({reason})"
        message += "; cast it in a SELECT source or leave it out"
        super().__init__(message, detail={"column": column, "snowflake_type": snowflake_type})
        self.column = column
        self.snowflake_type = snowflake_type


class ConversionError(InvalidArgument):
    """A batch column the connector delivered in a form that cannot become its target type."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"column {column!r}: {message}", detail={"column": column})
        self.column = column


# -- Snowflake side ---------------------------------------------------------------------

# Every spelling Snowflake accepts (in DDL, DESCRIBE output or the connector's type codes),
# folded to the family the mapping is keyed on.
_SNOWFLAKE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        ["FIXED", "NUMBER", "DECIMAL", "DEC", "NUMERIC", "INT", "INTEGER", "BIGINT"]
        + ["SMALLINT", "TINYINT", "BYTEINT"],
        "NUMBER",
    ),
    **dict.fromkeys(["REAL", "FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "DOUBLE PRECISION"], "FLOAT"),
    **dict.fromkeys(
        ["TEXT", "VARCHAR", "STRING", "CHAR", "CHARACTER", "NCHAR", "NVARCHAR", "NVARCHAR2"]
        + ["CHAR VARYING", "NCHAR VARYING"],
        "VARCHAR",
    ),
    **dict.fromkeys(["BINARY", "VARBINARY"], "BINARY"),
    "BOOLEAN": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    # TIMESTAMP means TIMESTAMP_NTZ under Snowflake's default TIMESTAMP_TYPE_MAPPING; the
    # connector reports the resolved type for query results, so this only matters for DDL.
    **dict.fromkeys(
        ["TIMESTAMP", "DATETIME", "TIMESTAMP_NTZ", "TIMESTAMPNTZ", "TIMESTAMP WITHOUT TIME ZONE"],
        "TIMESTAMP_NTZ",
    ),
    **dict.fromkeys(
        ["TIMESTAMP_LTZ", "TIMESTAMPLTZ", "TIMESTAMP WITH LOCAL TIME ZONE"], "TIMESTAMP_LTZ"
    ),
    **dict.fromkeys(["TIMESTAMP_TZ", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"], "TIMESTAMP_TZ"),
    "VARIANT": "VARIANT",
    "OBJECT": "OBJECT",
    "ARRAY": "ARRAY",
}

_TYPE_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\((.*)\))?\s*$", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class SourceColumn:
    """One column of a Snowflake source, as the connector describes it.

    `type_name` is the type family in upper case (NUMBER, FLOAT, VARCHAR, TIMESTAMP_TZ, ...;
    anything unrecognised is kept as written, e.g. GEOGRAPHY or `OBJECT(a NUMBER)`).
    """

    name: str
    type_name: str
    precision: int | None = None
    scale: int | None = None
    length: int | None = None
    nullable: bool = True

    @classmethod
    def from_metadata(cls, meta: Any) -> SourceColumn:
        """From a connector `ResultMetadata` (an item of `cursor.description`)."""
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        type_code = FIELD_ID_TO_NAME.get(meta.type_code) or f"TYPE_CODE_{meta.type_code}"
        family = _SNOWFLAKE_FAMILIES.get(type_code, type_code)
        return cls(
            name=meta.name,
            type_name=family,
            precision=meta.precision if family == "NUMBER" else None,
            # TIME and TIMESTAMP_* carry their fractional digits in `scale` too.
            scale=meta.scale,
            length=meta.internal_size if family in ("VARCHAR", "BINARY") else None,
            nullable=bool(meta.is_nullable),
        )

    @classmethod
    def parse(cls, name: str, type_text: str, *, nullable: bool = True) -> SourceColumn:
        """From a type as written in DDL or shown by DESCRIBE TABLE, e.g. `NUMBER(10,2)`."""
        match = _TYPE_TEXT.match(type_text)
        if not match:
            return cls(name=name, type_name=type_text.strip(), nullable=nullable)
        base = " ".join(match.group(1).upper().split())
        args = match.group(2)
        family = _SNOWFLAKE_FAMILIES.get(base)
        numbers: list[int] = []
        if args is not None:
            try:
                numbers = [int(part) for part in args.split(",")]
            except ValueError:
                # Typed parameters (structured OBJECT/ARRAY/MAP, VECTOR) are not a size:
                # keep the whole text so the error names it exactly.
                family = None
        if family is None:
            return cls(name=name, type_name=type_text.strip().upper(), nullable=nullable)
        if family == "NUMBER":
            if base in ("INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT"):
                numbers = [38, 0]  # Snowflake's integer names are all NUMBER(38,0)
            precision = numbers[0] if numbers else 38
            scale = numbers[1] if len(numbers) > 1 else 0
            return cls(
                name=name, type_name=family, precision=precision, scale=scale, nullable=nullable
            )
        if family in ("VARCHAR", "BINARY"):
            length = numbers[0] if numbers else None
            if base in ("CHAR", "CHARACTER", "NCHAR") and not numbers:
                length = 1
            return cls(name=name, type_name=family, length=length, nullable=nullable)
        if family in ("TIME", "TIMESTAMP_NTZ", "TIMESTAMP_LTZ", "TIMESTAMP_TZ"):
            return cls(
                name=name, type_name=family, scale=numbers[0] if numbers else 9, nullable=nullable
            )
        return cls(name=name, type_name=family, nullable=nullable)

    @property
    def snowflake_type(self) -> str:
        """The type as Snowflake would print it, for messages (e.g. `NUMBER(10,2)`)."""
        if self.type_name == "NUMBER" and self.precision is not None:
            return f"NUMBER({self.precision},{self.scale or 0})"
        if self.type_name in ("VARCHAR", "BINARY") and self.length:
            return f"{self.type_name}({self.length})"
        return self.type_name


# -- DuckDB side -------------------------------------------------------------------------

UTC = "UTC"
JSON_ARROW_TYPE = pa.json_(pa.string())

# NUMBER(p,0) → the smallest integer holding every p-digit value: (max p, DuckDB, Arrow).
_INTEGER_LADDER: tuple[tuple[int, str, pa.DataType], ...] = (
    (2, "TINYINT", pa.int8()),
    (4, "SMALLINT", pa.int16()),
    (9, "INTEGER", pa.int32()),
    (18, "BIGINT", pa.int64()),
)

_FIXED_TARGETS: dict[str, tuple[str, pa.DataType]] = {
    "FLOAT": ("DOUBLE", pa.float64()),
    "VARCHAR": ("VARCHAR", pa.string()),
    "BINARY": ("BLOB", pa.binary()),
    "BOOLEAN": ("BOOLEAN", pa.bool_()),
    "DATE": ("DATE", pa.date32()),
    "TIME": ("TIME", pa.time64("us")),
    "TIMESTAMP_NTZ": ("TIMESTAMP", pa.timestamp("us")),
    "TIMESTAMP_LTZ": ("TIMESTAMPTZ", pa.timestamp("us", tz=UTC)),
    "TIMESTAMP_TZ": ("TIMESTAMPTZ", pa.timestamp("us", tz=UTC)),
    "VARIANT": ("JSON", JSON_ARROW_TYPE),
    "OBJECT": ("JSON", JSON_ARROW_TYPE),
    "ARRAY": ("JSON", JSON_ARROW_TYPE),
}


@dataclass(frozen=True)
class TargetColumn:
    """Where a source column lands: its DuckDB type and the Arrow type of loaded batches."""

    name: str
    duckdb_type: str
    arrow_type: pa.DataType
    source: SourceColumn


def map_column(column: SourceColumn) -> TargetColumn:
    """The DuckDB and Arrow types for one Snowflake column; `UnmappedTypeError` if none."""
    family = column.type_name
    if family == "NUMBER":
        precision = column.precision if column.precision is not None else 38
        scale = column.scale or 0
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise UnmappedTypeError(
                column.name, column.snowflake_type, reason="precision/scale out of range"
            )
        if scale == 0:
            for max_digits, duckdb_type, arrow_type in _INTEGER_LADDER:
                if precision <= max_digits:
                    return TargetColumn(column.name, duckdb_type, arrow_type, column)
        return TargetColumn(
            column.name,
            f"DECIMAL({precision},{scale})",
            pa.decimal128(precision, scale),
            column,
        )
    if family in _FIXED_TARGETS:
        duckdb_type, arrow_type = _FIXED_TARGETS[family]
        return TargetColumn(column.name, duckdb_type, arrow_type, column)
    raise UnmappedTypeError(column.name, column.snowflake_type)


def map_columns(
    columns: Sequence[SourceColumn], overrides: Mapping[str, str] | None = None
) -> list[TargetColumn]:
    """Map every column, failing on the first unmapped one (its name is in the error).

    `overrides` (a spec's `column_types`: exact source column name -> DuckDB numeric
    type, see `agentdata.syncs.override_type`) replaces the mapped type of NUMBER
    columns; the per-batch conversion then checks every value (`conform_array`: a
    value that does not fit, or would lose digits, fails the run naming the column).
    """
    targets = [map_column(column) for column in columns]
    if not overrides:
        return targets
    by_name = {t.name: i for i, t in enumerate(targets)}
    for name, duckdb_type in overrides.items():
        if name not in by_name:
            raise InvalidArgument(
                f"column_types names column {name!r}, which the source does not have "
                f"(columns: {', '.join(by_name)})",
                detail={"column": name},
            )
        i = by_name[name]
        targets[i] = override_column(targets[i], duckdb_type)
    return targets


def override_column(target: TargetColumn, duckdb_type: str) -> TargetColumn:
    """`target` loaded as `duckdb_type` instead (NUMBER columns, numeric types only)."""
    arrow = arrow_type_of(duckdb_type)
    numeric = arrow is not None and (
        pa.types.is_integer(arrow) or pa.types.is_decimal(arrow) or pa.types.is_floating(arrow)
    )
    if target.source.type_name != "NUMBER" or not numeric or arrow is None:
        raise InvalidArgument(
            f"column_types: {target.name} is {target.source.snowflake_type}; only NUMBER "
            f"columns can be loaded as another numeric type (asked: {duckdb_type})",
            detail={"column": target.name},
        )
    return TargetColumn(target.name, normalize_duckdb_type(duckdb_type), arrow, target.source)


# -- DuckDB types as Arrow types -----------------------------------------------------------

_SIMPLE_ARROW: dict[str, pa.DataType] = {
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "HUGEINT": pa.decimal128(38, 0),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "BLOB": pa.binary(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "JSON": JSON_ARROW_TYPE,
}
_DECIMAL_TYPE = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")


def arrow_type_of(duckdb_type: str, streamed: pa.DataType | None = None) -> pa.DataType | None:
    """The Arrow type that loads into a column of `duckdb_type` unchanged.

    Known for every type the sync mapping produces; for others, the type the server
    streams the column as (`streamed`), which DuckDB maps back to the same type.
    """
    normal = normalize_duckdb_type(duckdb_type)
    if normal in _SIMPLE_ARROW:
        return _SIMPLE_ARROW[normal]
    m = _DECIMAL_TYPE.match(normal)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return streamed


def target_schema(targets: Sequence[TargetColumn]) -> pa.Schema:
    """The Arrow schema of conformed batches: one field per target column, in order."""
    return pa.schema([pa.field(t.name, t.arrow_type, nullable=True) for t in targets])


# -- per-batch conversion ----------------------------------------------------------------


def conform_batch(
    batch: pa.RecordBatch | pa.Table,
    targets: Sequence[TargetColumn],
    schema: pa.Schema | None = None,
) -> pa.RecordBatch:
    """Convert a batch as the connector yields it into the target schema.

    Columns are matched by name and emitted in `targets` order. Values are never changed
    except as documented (sub-microsecond truncation); anything that would lose more, such
    as a NUMBER arriving as float64 or an integer overflowing its target, raises
    `ConversionError` naming the column. Pass `schema` (from `target_schema`) to save
    rebuilding it for every batch.
    """
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else _empty(batch)
    schema = schema if schema is not None else target_schema(targets)
    arrays = []
    for target in targets:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            raise ConversionError(target.name, "missing from the extracted batch")
        arrays.append(conform_array(batch.column(index), target))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _empty(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([], type=field.type) for field in table.schema], schema=table.schema
    )


def conform_array(array: pa.Array, target: TargetColumn) -> pa.Array:
    """Convert one column's values to `target.arrow_type` (see `conform_batch`)."""
    source_type, goal = array.type, target.arrow_type
    if source_type == goal:
        return array
    if target.duckdb_type == "JSON":
        if pa.types.is_nested(source_type):
            raise UnmappedTypeError(
                target.name,
                target.source.snowflake_type,
                reason=f"a structured value ({source_type}); only semi-structured JSON is mapped",
            )
        if isinstance(source_type, pa.ExtensionType):
            array = array.storage
        _require(
            target, array, pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        )
        return pa.ExtensionArray.from_storage(goal, _cast(array, pa.string(), target))
    if pa.types.is_integer(goal) or pa.types.is_decimal(goal):
        # Floats are refused: they mean the connector rounded a NUMBER to float64, which
        # happens when `arrow_number_to_decimal` is off, and the digits are already lost.
        _require(
            target, array, pa.types.is_integer(source_type) or pa.types.is_decimal(source_type)
        )
        if pa.types.is_decimal(goal) and pa.types.is_integer(source_type):
            # Integers for a scaled NUMBER would be Snowflake's unscaled wire values,
            # which the connector is meant to have rescaled: refuse rather than misread.
            _require(target, array, goal.scale == 0)
            # pyarrow checks int → decimal by the int type's width (int64 needs 19
            # digits), not by value; decimal128(38,0) always fits, and its cast to the
            # goal then checks each value.
            array = _cast(array, pa.decimal128(38, 0), target)
    elif pa.types.is_floating(goal):
        _require(
            target,
            array,
            pa.types.is_floating(source_type)
            or pa.types.is_integer(source_type)
            or pa.types.is_decimal(source_type),
        )
    elif pa.types.is_timestamp(goal):
        _require(target, array, pa.types.is_timestamp(source_type))
    elif pa.types.is_time(goal):
        _require(target, array, pa.types.is_time(source_type))
    elif pa.types.is_date(goal):
        _require(target, array, pa.types.is_date(source_type))
    elif pa.types.is_string(goal):
        _require(
            target, array, pa.types.is_string(source_type) or pa.types.is_large_string(source_type)
        )
    elif pa.types.is_binary(goal):
        _require(
            target,
            array,
            pa.types.is_binary(source_type)
            or pa.types.is_large_binary(source_type)
            or pa.types.is_fixed_size_binary(source_type),
        )
    elif pa.types.is_boolean(goal):
        _require(target, array, pa.types.is_boolean(source_type))
    return _cast(array, goal, target)


def _require(target: TargetColumn, array: pa.Array, ok: bool) -> None:
    if not ok:
        raise ConversionError(
            target.name,
            f"the connector delivered {array.type} for Snowflake {target.source.snowflake_type}, "
            f"which cannot be loaded as {target.duckdb_type} without losing data",
        )


def _cast(array: pa.Array, goal: pa.DataType, target: TargetColumn) -> pa.Array:
    # Safe casts (overflow and lost digits raise) except that a finer time unit may be
    # truncated: DuckDB keeps microseconds.
    options = pc.CastOptions(goal, allow_time_truncate=True)
    try:
        return pc.cast(array, options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConversionError(
            target.name, f"cannot convert {array.type} to {target.duckdb_type}: {exc}"
        ) from exc
