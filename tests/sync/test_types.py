"""The Snowflake → DuckDB type mapping, the per-batch conversion, and how the mapped
types evolve (`agentdata.schema_evolution.type_change`).

The arrays fed to `conform_batch` here are in the shapes the real connector produces
(see the comments on each case); the emulator-backed end-to-end check of every type is
in `test_extract.py`.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest
from snowflake.connector.cursor import ResultMetadata

from agentdata.errors import InvalidArgument
from agentdata.schema_evolution import TypeChange, normalize_duckdb_type, type_change
from workers.sync.types import (
    JSON_ARROW_TYPE,
    ConversionError,
    SourceColumn,
    UnmappedTypeError,
    conform_batch,
    map_column,
    map_columns,
    target_schema,
)

UTC = dt.UTC

# (Snowflake type as written in DDL, DuckDB type, Arrow type of loaded batches)
MAPPING = [
    ("NUMBER(2,0)", "TINYINT", pa.int8()),
    ("NUMBER(3,0)", "SMALLINT", pa.int16()),
    ("NUMBER(4,0)", "SMALLINT", pa.int16()),
    ("NUMBER(5,0)", "INTEGER", pa.int32()),
    ("NUMBER(9,0)", "INTEGER", pa.int32()),
    ("NUMBER(10,0)", "BIGINT", pa.int64()),
    ("NUMBER(18,0)", "BIGINT", pa.int64()),
    ("NUMBER(19,0)", "DECIMAL(19,0)", pa.decimal128(19, 0)),
    ("NUMBER(38,0)", "DECIMAL(38,0)", pa.decimal128(38, 0)),
    ("NUMBER", "DECIMAL(38,0)", pa.decimal128(38, 0)),
    ("INT", "DECIMAL(38,0)", pa.decimal128(38, 0)),
    ("BIGINT", "DECIMAL(38,0)", pa.decimal128(38, 0)),
    ("DECIMAL(5)", "INTEGER", pa.int32()),
    ("NUMBER(10,2)", "DECIMAL(10,2)", pa.decimal128(10, 2)),
    ("NUMERIC(38,37)", "DECIMAL(38,37)", pa.decimal128(38, 37)),
    ("FLOAT", "DOUBLE", pa.float64()),
    ("DOUBLE", "DOUBLE", pa.float64()),
    ("DOUBLE PRECISION", "DOUBLE", pa.float64()),
    ("REAL", "DOUBLE", pa.float64()),
    ("VARCHAR", "VARCHAR", pa.string()),
    ("VARCHAR(10)", "VARCHAR", pa.string()),
    ("TEXT", "VARCHAR", pa.string()),
    ("STRING", "VARCHAR", pa.string()),
    ("CHAR(3)", "VARCHAR", pa.string()),
    ("BINARY", "BLOB", pa.binary()),
    ("VARBINARY(16)", "BLOB", pa.binary()),
    ("BOOLEAN", "BOOLEAN", pa.bool_()),
    ("DATE", "DATE", pa.date32()),
    ("TIME", "TIME", pa.time64("us")),
    ("TIME(3)", "TIME", pa.time64("us")),
    ("TIMESTAMP_NTZ(9)", "TIMESTAMP", pa.timestamp("us")),
    ("DATETIME", "TIMESTAMP", pa.timestamp("us")),
    ("TIMESTAMP", "TIMESTAMP", pa.timestamp("us")),
    ("TIMESTAMP_LTZ", "TIMESTAMPTZ", pa.timestamp("us", tz="UTC")),
    ("TIMESTAMP_TZ(3)", "TIMESTAMPTZ", pa.timestamp("us", tz="UTC")),
    ("VARIANT", "JSON", JSON_ARROW_TYPE),
    ("OBJECT", "JSON", JSON_ARROW_TYPE),
    ("ARRAY", "JSON", JSON_ARROW_TYPE),
]


@pytest.mark.parametrize(("snowflake_type", "duckdb_type", "arrow_type"), MAPPING)
def test_documented_mapping(snowflake_type: str, duckdb_type: str, arrow_type: pa.DataType) -> None:
    target = map_column(SourceColumn.parse("C", snowflake_type))
    assert (target.name, target.duckdb_type, target.arrow_type) == ("C", duckdb_type, arrow_type)


def test_arrow_types_land_as_the_documented_duckdb_types() -> None:
    """What the loader relies on: DuckDB creates exactly the mapped type from the batch."""
    targets = map_columns([SourceColumn.parse(f"C{i}", sf) for i, (sf, _, _) in enumerate(MAPPING)])
    empty = pa.Table.from_batches([], schema=target_schema(targets))
    con = duckdb.connect()
    con.register("batch", empty)
    con.execute("CREATE TABLE landed AS SELECT * FROM batch")
    landed = {name: kind for name, kind, *_ in con.execute("DESCRIBE landed").fetchall()}
    for target in targets:
        assert normalize_duckdb_type(landed[target.name]) == normalize_duckdb_type(
            target.duckdb_type
        ), target.source.snowflake_type


@pytest.mark.parametrize("precision", range(1, 39))
def test_every_integer_precision_fits_its_target(precision: int) -> None:
    """NUMBER(p,0)'s extreme values survive conversion to the chosen type, for every p."""
    target = map_column(SourceColumn(name="N", type_name="NUMBER", precision=precision, scale=0))
    extremes = [Decimal(10**precision - 1), Decimal(-(10**precision - 1)), None]
    batch = pa.record_batch({"N": pa.array(extremes, pa.decimal128(38, 0))})
    converted = conform_batch(batch, [target]).column(0).to_pylist()
    assert [None if v is None else Decimal(v) for v in converted] == extremes


def test_numbers_in_every_shape_the_connector_delivers() -> None:
    # Snowflake sends NUMBER(p,0) as the narrowest int that holds each chunk's values
    # (int8 ... int64) or as decimal128; the emulator as int64 or decimal128.
    cases: list[tuple[str, pa.Array, list[object] | None]] = [
        ("NUMBER(38,0)", pa.array([1, -2, None], pa.int8()), [Decimal(1), Decimal(-2), None]),
        ("NUMBER(38,0)", pa.array([300, None], pa.int16()), [Decimal(300), None]),
        ("NUMBER(38,0)", pa.array([2**62], pa.int64()), [Decimal(2**62)]),
        ("NUMBER(9,0)", pa.array([Decimal(7)], pa.decimal128(9, 0)), [7]),
        ("NUMBER(18,0)", pa.array([5], pa.int8()), [5]),
        # int → decimal goes by value, not by the int type's width (int64 has 19 digits).
        (
            "NUMBER(19,0)",
            pa.array([-(2**63), 2**63 - 1], pa.int64()),
            [Decimal(-(2**63)), Decimal(2**63 - 1)],
        ),
        ("NUMBER(19,0)", pa.array([2**64 - 1], pa.uint64()), None),  # 20 digits: refused
        # With arrow_number_to_decimal, scaled numbers arrive as decimal128 of any width.
        (
            "NUMBER(12,2)",
            pa.array([Decimal("-0.01")], pa.decimal128(10, 2)),
            [Decimal("-0.01")],
        ),
        ("FLOAT", pa.array([1.5, None], pa.float64()), [1.5, None]),
    ]
    for snowflake_type, array, expected in cases:
        target = map_column(SourceColumn.parse("N", snowflake_type))
        batch = pa.record_batch({"N": array})
        if expected is None:
            with pytest.raises(ConversionError, match="'N'"):
                conform_batch(batch, [target])
            continue
        out = conform_batch(batch, [target]).column(0)
        assert out.type == target.arrow_type, snowflake_type
        assert out.to_pylist() == expected, snowflake_type


def test_times_and_timestamps_in_every_unit() -> None:
    # TIME(s) arrives as time32[s|ms] or time64[us|ns]; TIMESTAMP_* in the unit of its
    # scale; LTZ and TZ tagged with the session time zone. Instants must not move.
    instant = dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)
    cases = [
        ("TIME(0)", pa.array([3600], pa.time32("s")), [dt.time(1, 0)]),
        ("TIME(3)", pa.array([1500], pa.time32("ms")), [dt.time(0, 0, 1, 500000)]),
        ("TIME(9)", pa.array([1_000_001_999], pa.time64("ns")), [dt.time(0, 0, 1, 1)]),
        (
            "TIMESTAMP_NTZ(0)",
            pa.array([dt.datetime(2500, 1, 1)], pa.timestamp("s")),
            [dt.datetime(2500, 1, 1)],
        ),
        (
            "TIMESTAMP_NTZ(9)",
            pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")),
            [dt.datetime(2023, 11, 14, 22, 13, 20, 123456)],
        ),
        (
            "TIMESTAMP_LTZ(9)",
            pa.array([instant], pa.timestamp("ns", tz="America/Los_Angeles")),
            [instant],
        ),
        (
            "TIMESTAMP_TZ(6)",
            pa.array([instant, None], pa.timestamp("us", tz="+02:00")),
            [instant, None],
        ),
    ]
    for snowflake_type, array, expected in cases:
        target = map_column(SourceColumn.parse("T", snowflake_type))
        out = conform_batch(pa.record_batch({"T": array}), [target]).column(0)
        assert out.type == target.arrow_type, snowflake_type
        values = out.to_pylist()
        if pa.types.is_timestamp(out.type) and out.type.tz:
            values = [None if v is None else v.astimezone(UTC) for v in values]
        assert values == expected, snowflake_type


def test_semi_structured_values_become_json() -> None:
    target = map_column(SourceColumn.parse("V", "VARIANT"))
    texts = ['{"a":1,"b":[true,null]}', "[1,2]", '"s"', None]
    out = conform_batch(pa.record_batch({"V": pa.array(texts)}), [target]).column(0)
    assert out.type == JSON_ARROW_TYPE
    assert out.storage.to_pylist() == texts
    assert json.loads(out.storage[0].as_py()) == {"a": 1, "b": [True, None]}


def test_batches_come_out_in_target_order_and_schema() -> None:
    targets = map_columns([SourceColumn.parse("B", "BOOLEAN"), SourceColumn.parse("A", "DATE")])
    batch = pa.record_batch(
        {
            "A": pa.array([dt.date(2024, 2, 29)], pa.date32()),
            "B": pa.array([True]),
            "EXTRA": pa.array([1]),
        }
    )
    out = conform_batch(batch, targets)
    assert out.schema == target_schema(targets)
    assert out.to_pylist() == [{"B": True, "A": dt.date(2024, 2, 29)}]


def test_lossy_conversions_are_refused_naming_the_column() -> None:
    decimal_target = map_column(SourceColumn.parse("PRICE", "NUMBER(10,2)"))
    # float64 means arrow_number_to_decimal was off: the digits are already gone.
    with pytest.raises(ConversionError, match="'PRICE'.*double"):
        conform_batch(pa.record_batch({"PRICE": pa.array([0.1])}), [decimal_target])

    # Integers for a scaled NUMBER would be unscaled wire values: refused, not misread.
    for ints in (pa.array([1999]), pa.array([5], pa.int8())):
        with pytest.raises(ConversionError, match="'PRICE'"):
            conform_batch(pa.record_batch({"PRICE": ints}), [decimal_target])

    tiny_target = map_column(SourceColumn.parse("SMALL", "NUMBER(2,0)"))
    with pytest.raises(ConversionError, match="'SMALL'"):
        conform_batch(pa.record_batch({"SMALL": pa.array([300], pa.int64())}), [tiny_target])

    with pytest.raises(ConversionError, match="'GONE'.*missing"):
        conform_batch(
            pa.record_batch({"OTHER": pa.array([1])}),
            [map_column(SourceColumn.parse("GONE", "DATE"))],
        )

    text_target = map_column(SourceColumn.parse("NAME", "VARCHAR"))
    with pytest.raises(ConversionError, match="'NAME'"):
        conform_batch(pa.record_batch({"NAME": pa.array([1])}), [text_target])


def test_structured_object_values_are_unmapped() -> None:
    """A typed (Iceberg) OBJECT arrives as an Arrow struct; only JSON text is mapped."""
    target = map_column(SourceColumn.parse("ADDR", "OBJECT"))
    struct = pa.array([{"city": "Oslo"}], pa.struct([("city", pa.string())]))
    with pytest.raises(UnmappedTypeError, match="'ADDR'") as info:
        conform_batch(pa.record_batch({"ADDR": struct}), [target])
    assert info.value.column == "ADDR"


@pytest.mark.parametrize(
    ("type_text", "shown"),
    [
        ("GEOGRAPHY", "GEOGRAPHY"),
        ("GEOMETRY", "GEOMETRY"),
        ("VECTOR(FLOAT, 3)", "VECTOR(FLOAT, 3)"),
        ("MAP(VARCHAR, NUMBER)", "MAP(VARCHAR, NUMBER)"),
        ("OBJECT(city VARCHAR)", "OBJECT(CITY VARCHAR)"),
        ("ARRAY(NUMBER)", "ARRAY(NUMBER)"),
        ("DECFLOAT", "DECFLOAT"),
    ],
)
def test_unmapped_types_name_the_column(type_text: str, shown: str) -> None:
    with pytest.raises(UnmappedTypeError) as info:
        map_columns([SourceColumn.parse("ID", "NUMBER(9,0)"), SourceColumn.parse("LOC", type_text)])
    error = info.value
    assert isinstance(error, InvalidArgument)  # terminal: never retried
    assert error.code == "invalid_argument"
    assert "'LOC'" in error.message and shown in error.message
    assert error.detail == {"column": "LOC", "snowflake_type": shown}


@pytest.mark.parametrize(
    ("type_code", "name"), [(14, "GEOGRAPHY"), (15, "GEOMETRY"), (16, "VECTOR"), (17, "MAP")]
)
def test_unmapped_types_from_connector_metadata(type_code: int, name: str) -> None:
    """The same check on the connector's own description of a result column."""
    meta = ResultMetadata("SHAPE", type_code, None, None, None, None, True)
    column = SourceColumn.from_metadata(meta)
    assert column.type_name == name
    with pytest.raises(UnmappedTypeError, match=f"'SHAPE' has Snowflake type {name}"):
        map_column(column)


def test_source_columns_from_connector_metadata() -> None:
    number = SourceColumn.from_metadata(ResultMetadata("AMOUNT", 0, None, None, 12, 2, False))
    assert (number.type_name, number.precision, number.scale, number.nullable) == (
        "NUMBER",
        12,
        2,
        False,
    )
    assert number.snowflake_type == "NUMBER(12,2)"
    text = SourceColumn.from_metadata(ResultMetadata("NAME", 2, None, 40, None, None, True))
    assert (text.type_name, text.length, text.snowflake_type) == ("VARCHAR", 40, "VARCHAR(40)")
    ltz = SourceColumn.from_metadata(ResultMetadata("AT", 6, None, None, 0, 9, True))
    assert map_column(ltz).duckdb_type == "TIMESTAMPTZ"


def test_widen_agrees_with_the_mapping_when_snowflake_precision_grows() -> None:
    """NUMBER(p,s) growing in Snowflake is a widening of the mapped DuckDB type, always
    (the rule itself: tests/unit/test_schema_evolution.py)."""
    for scale in (0, 2):
        for p in range(max(scale, 1), 38):
            old = map_column(SourceColumn(name="N", type_name="NUMBER", precision=p, scale=scale))
            new = map_column(
                SourceColumn(name="N", type_name="NUMBER", precision=p + 1, scale=scale)
            )
            expected = (
                TypeChange.SAME if old.duckdb_type == new.duckdb_type else TypeChange.WIDENING
            )
            assert type_change(old.duckdb_type, new.duckdb_type) == expected, (p, scale)
