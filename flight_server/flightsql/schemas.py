"""The fixed result schemas of Flight SQL metadata commands.

Field names, types and nullability follow FlightSql.proto and the reference
implementations (Arrow C++/Go `schema_ref`), which clients such as the ADBC driver
compare against: change nothing here without checking the spec.
"""

from __future__ import annotations

import pyarrow as pa

_utf8 = pa.utf8()
_int32 = pa.int32()

CATALOGS = pa.schema([pa.field("catalog_name", _utf8, nullable=False)])

DB_SCHEMAS = pa.schema(
    [
        pa.field("catalog_name", _utf8),
        pa.field("db_schema_name", _utf8, nullable=False),
    ]
)

TABLES = pa.schema(
    [
        pa.field("catalog_name", _utf8),
        pa.field("db_schema_name", _utf8),
        pa.field("table_name", _utf8, nullable=False),
        pa.field("table_type", _utf8, nullable=False),
    ]
)

TABLES_WITH_SCHEMA = TABLES.append(pa.field("table_schema", pa.binary(), nullable=False))

TABLE_TYPES = pa.schema([pa.field("table_type", _utf8, nullable=False)])

PRIMARY_KEYS = pa.schema(
    [
        pa.field("catalog_name", _utf8),
        pa.field("db_schema_name", _utf8),
        pa.field("table_name", _utf8, nullable=False),
        pa.field("column_name", _utf8, nullable=False),
        pa.field("key_name", _utf8),
        pa.field("key_sequence", _int32, nullable=False),
    ]
)

#: CommandGetImportedKeys, CommandGetExportedKeys and CommandGetCrossReference (one
#: schema for the three); update_rule / delete_rule are UpdateDeleteRules values.
FOREIGN_KEYS = pa.schema(
    [
        pa.field("pk_catalog_name", _utf8),
        pa.field("pk_db_schema_name", _utf8),
        pa.field("pk_table_name", _utf8, nullable=False),
        pa.field("pk_column_name", _utf8, nullable=False),
        pa.field("fk_catalog_name", _utf8),
        pa.field("fk_db_schema_name", _utf8),
        pa.field("fk_table_name", _utf8, nullable=False),
        pa.field("fk_column_name", _utf8, nullable=False),
        pa.field("key_sequence", _int32, nullable=False),
        pa.field("fk_key_name", _utf8),
        pa.field("pk_key_name", _utf8),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)

#: The value column of CommandGetSqlInfo: one member per kind of value, type codes 0-5.
SQL_INFO_VALUE = pa.dense_union(
    [
        pa.field("string_value", _utf8),
        pa.field("bool_value", pa.bool_()),
        pa.field("bigint_value", pa.int64()),
        pa.field("int32_bitmask", _int32),
        pa.field("string_list", pa.list_(_utf8)),
        pa.field("int32_to_int32_list_map", pa.map_(_int32, pa.list_(_int32))),
    ],
    type_codes=[0, 1, 2, 3, 4, 5],
)

SQL_INFO = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", SQL_INFO_VALUE, nullable=False),
    ]
)

XDBC_TYPE_INFO = pa.schema(
    [
        pa.field("type_name", _utf8, nullable=False),
        pa.field("data_type", _int32, nullable=False),
        pa.field("column_size", _int32),
        pa.field("literal_prefix", _utf8),
        pa.field("literal_suffix", _utf8),
        pa.field("create_params", pa.list_(pa.field("item", _utf8, nullable=False))),
        pa.field("nullable", _int32, nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", _int32, nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", _utf8),
        pa.field("minimum_scale", _int32),
        pa.field("maximum_scale", _int32),
        pa.field("sql_data_type", _int32, nullable=False),
        pa.field("datetime_subcode", _int32),
        pa.field("num_prec_radix", _int32),
        pa.field("interval_precision", _int32),
    ]
)
