"""CommandGetXdbcTypeInfo: DuckDB's types described in JDBC/ODBC terms."""

from __future__ import annotations

from dataclasses import astuple, dataclass

import pyarrow as pa

from flight_server.flightsql import schemas
from flight_server.flightsql.proto import FlightSql_pb2 as pb


@dataclass(frozen=True)
class XdbcType:
    """One row of the result, in the order of `schemas.XDBC_TYPE_INFO`."""

    type_name: str
    data_type: int
    column_size: int | None = None
    literal_prefix: str | None = None
    literal_suffix: str | None = None
    create_params: list[str] | None = None
    nullable: int = pb.NULLABILITY_NULLABLE
    case_sensitive: bool = False
    searchable: int = pb.SEARCHABLE_BASIC
    unsigned_attribute: bool | None = None
    fixed_prec_scale: bool = False
    auto_increment: bool | None = None
    local_type_name: str | None = None
    minimum_scale: int | None = None
    maximum_scale: int | None = None
    sql_data_type: int = 0
    datetime_subcode: int | None = None
    num_prec_radix: int | None = None
    interval_precision: int | None = None


def _integer(name: str, data_type: int, digits: int) -> XdbcType:
    return XdbcType(
        name,
        data_type,
        digits,
        unsigned_attribute=False,
        auto_increment=False,
        local_type_name=name,
        minimum_scale=0,
        maximum_scale=0,
        sql_data_type=data_type,
        num_prec_radix=10,
    )


def _datetime(name: str, data_type: int, size: int, subcode: int) -> XdbcType:
    return XdbcType(
        name,
        data_type,
        size,
        f"{name} '",
        "'",
        local_type_name=name,
        sql_data_type=pb.XDBC_DATETIME,
        datetime_subcode=subcode,
    )


TYPES: list[XdbcType] = [
    _integer("TINYINT", pb.XDBC_TINYINT, 3),
    _integer("SMALLINT", pb.XDBC_SMALLINT, 5),
    _integer("INTEGER", pb.XDBC_INTEGER, 10),
    _integer("BIGINT", pb.XDBC_BIGINT, 19),
    # HUGEINT travels as decimal128(38, 0).
    _integer("HUGEINT", pb.XDBC_NUMERIC, 38),
    XdbcType(
        "DECIMAL",
        pb.XDBC_DECIMAL,
        38,
        create_params=["precision", "scale"],
        unsigned_attribute=False,
        auto_increment=False,
        local_type_name="DECIMAL",
        minimum_scale=0,
        maximum_scale=38,
        sql_data_type=pb.XDBC_DECIMAL,
        num_prec_radix=10,
    ),
    XdbcType(
        "FLOAT",
        pb.XDBC_REAL,
        24,
        unsigned_attribute=False,
        local_type_name="FLOAT",
        sql_data_type=pb.XDBC_REAL,
        num_prec_radix=2,
    ),
    XdbcType(
        "DOUBLE",
        pb.XDBC_DOUBLE,
        53,
        unsigned_attribute=False,
        local_type_name="DOUBLE",
        sql_data_type=pb.XDBC_DOUBLE,
        num_prec_radix=2,
    ),
    XdbcType("BOOLEAN", pb.XDBC_BIT, 1, local_type_name="BOOLEAN", sql_data_type=pb.XDBC_BIT),
    XdbcType(
        "VARCHAR",
        pb.XDBC_VARCHAR,
        None,
        "'",
        "'",
        case_sensitive=True,
        searchable=pb.SEARCHABLE_FULL,
        local_type_name="VARCHAR",
        sql_data_type=pb.XDBC_VARCHAR,
    ),
    XdbcType(
        "UUID",
        pb.XDBC_CHAR,
        36,
        "'",
        "'::UUID",
        local_type_name="UUID",
        sql_data_type=pb.XDBC_CHAR,
    ),
    XdbcType(
        "BLOB",
        pb.XDBC_VARBINARY,
        None,
        "'",
        "'::BLOB",
        searchable=pb.SEARCHABLE_NONE,
        local_type_name="BLOB",
        sql_data_type=pb.XDBC_VARBINARY,
    ),
    _datetime("DATE", pb.XDBC_DATE, 10, pb.XDBC_SUBCODE_DATE),
    _datetime("TIME", pb.XDBC_TIME, 15, pb.XDBC_SUBCODE_TIME),
    _datetime("TIMESTAMP", pb.XDBC_TIMESTAMP, 26, pb.XDBC_SUBCODE_TIMESTAMP),
    _datetime(
        "TIMESTAMP WITH TIME ZONE",
        pb.XDBC_TIMESTAMP,
        32,
        pb.XDBC_SUBCODE_TIMESTAMP_WITH_TIMEZONE,
    ),
    XdbcType(
        "INTERVAL",
        pb.XDBC_INTERVAL,
        None,
        "INTERVAL '",
        "'",
        local_type_name="INTERVAL",
        sql_data_type=pb.XDBC_INTERVAL,
        datetime_subcode=pb.XDBC_SUBCODE_INTERVAL_DAY_TO_SECOND,
    ),
]


def type_info(data_type: int | None) -> pa.Table:
    """The rows for one XDBC data type (all when None), ordered by data_type, type_name."""
    rows = sorted(
        (t for t in TYPES if data_type is None or t.data_type == data_type),
        key=lambda t: (t.data_type, t.type_name),
    )
    columns = list(zip(*(astuple(t) for t in rows), strict=True)) if rows else None
    arrays = [
        pa.array(list(columns[i]) if columns else [], type=field.type)
        for i, field in enumerate(schemas.XDBC_TYPE_INFO)
    ]
    return pa.Table.from_arrays(arrays, schema=schemas.XDBC_TYPE_INFO)
