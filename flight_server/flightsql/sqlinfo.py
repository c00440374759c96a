"""CommandGetSqlInfo: what this server is and which SQL it speaks, per token.

Values are typed by the union member they travel in (see `schemas.SQL_INFO_VALUE`):
str -> string_value, bool -> bool_value, int -> bigint_value, `Int32` ->
int32_bitmask (also used for int32 ordinals, as the reference servers do),
list[str] -> string_list, dict[int, list[int]] -> int32_to_int32_list_map.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from agentdata.tokens import Principal
from flight_server.flightsql import schemas
from flight_server.flightsql.proto import FlightSql_pb2 as pb


class Int32(int):
    """An int32 bitmask or ordinal (as opposed to an int64 value)."""


#: The DuckDB SQL facts that do not depend on the caller.
_SQL_FACTS: dict[int, Any] = {
    pb.FLIGHT_SQL_SERVER_SQL: True,
    pb.FLIGHT_SQL_SERVER_SUBSTRAIT: False,
    pb.FLIGHT_SQL_SERVER_TRANSACTION: Int32(pb.SQL_SUPPORTED_TRANSACTION_NONE),
    pb.FLIGHT_SQL_SERVER_CANCEL: True,
    pb.FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED: False,
    pb.FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT: Int32(0),
    pb.SQL_DDL_CATALOG: False,
    pb.SQL_IDENTIFIER_CASE: Int32(pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
    pb.SQL_IDENTIFIER_QUOTE_CHAR: '"',
    pb.SQL_QUOTED_IDENTIFIER_CASE: Int32(pb.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
    # Listings only show what the token may read, so everything listed is selectable.
    pb.SQL_ALL_TABLES_ARE_SELECTABLE: True,
    pb.SQL_NULL_ORDERING: Int32(pb.SQL_NULLS_SORTED_AT_END),
    pb.SQL_SEARCH_STRING_ESCAPE: "\\",
    pb.SQL_EXTRA_NAME_CHARACTERS: "",
    pb.SQL_SUPPORTS_COLUMN_ALIASING: True,
    pb.SQL_NULL_PLUS_NULL_IS_NULL: True,
    pb.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: True,
    pb.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: False,
    pb.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: True,
    pb.SQL_SUPPORTS_ORDER_BY_UNRELATED: True,
    pb.SQL_SUPPORTED_GROUP_BY: Int32(
        1 << pb.SQL_GROUP_BY_UNRELATED | 1 << pb.SQL_GROUP_BY_BEYOND_SELECT
    ),
    pb.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: True,
    pb.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: True,
    pb.SQL_SUPPORTED_GRAMMAR: Int32(
        1 << pb.SQL_MINIMUM_GRAMMAR | 1 << pb.SQL_CORE_GRAMMAR | 1 << pb.SQL_EXTENDED_GRAMMAR
    ),
    pb.SQL_ANSI92_SUPPORTED_LEVEL: Int32(
        1 << pb.ANSI92_ENTRY_SQL | 1 << pb.ANSI92_INTERMEDIATE_SQL
    ),
    pb.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: False,
    pb.SQL_OUTER_JOINS_SUPPORT_LEVEL: Int32(pb.SQL_FULL_OUTER_JOINS),
    pb.SQL_SCHEMA_TERM: "schema",
    pb.SQL_PROCEDURE_TERM: "",
    pb.SQL_CATALOG_TERM: "database",
    pb.SQL_CATALOG_AT_START: True,
    pb.SQL_SCHEMAS_SUPPORTED_ACTIONS: Int32(0),
    pb.SQL_CATALOGS_SUPPORTED_ACTIONS: Int32(0),
    pb.SQL_SUPPORTED_POSITIONED_COMMANDS: Int32(0),
    pb.SQL_SELECT_FOR_UPDATE_SUPPORTED: False,
    pb.SQL_STORED_PROCEDURES_SUPPORTED: False,
    pb.SQL_SUPPORTED_SUBQUERIES: Int32(
        1 << pb.SQL_SUBQUERIES_IN_COMPARISONS
        | 1 << pb.SQL_SUBQUERIES_IN_EXISTS
        | 1 << pb.SQL_SUBQUERIES_IN_INS
        | 1 << pb.SQL_SUBQUERIES_IN_QUANTIFIEDS
    ),
    pb.SQL_CORRELATED_SUBQUERIES_SUPPORTED: True,
    pb.SQL_SUPPORTED_UNIONS: Int32(1 << pb.SQL_UNION | 1 << pb.SQL_UNION_ALL),
    # 0: no limit (or not known), per the ODBC convention.
    pb.SQL_MAX_STATEMENT_LENGTH: 0,
    pb.SQL_MAX_COLUMNS_IN_TABLE: 0,
    # Flight SQL transactions are not offered: every statement commits on its own.
    pb.SQL_DEFAULT_TRANSACTION_ISOLATION: Int32(pb.SQL_TRANSACTION_NONE),
    pb.SQL_TRANSACTIONS_SUPPORTED: False,
    pb.SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: Int32(0),
    pb.SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT: False,
    pb.SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED: False,
    pb.SQL_SUPPORTED_RESULT_SET_TYPES: Int32(1 << pb.SQL_RESULT_SET_TYPE_FORWARD_ONLY),
    pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_UNSPECIFIED: Int32(0),
    pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_FORWARD_ONLY: Int32(
        1 << pb.SQL_RESULT_SET_CONCURRENCY_READ_ONLY
    ),
    pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_SENSITIVE: Int32(0),
    pb.SQL_SUPPORTED_CONCURRENCIES_FOR_RESULT_SET_SCROLL_INSENSITIVE: Int32(0),
    pb.SQL_BATCH_UPDATES_SUPPORTED: True,
    pb.SQL_SAVEPOINTS_SUPPORTED: False,
    pb.SQL_NAMED_PARAMETERS_SUPPORTED: False,
    pb.SQL_LOCATORS_UPDATE_COPY: False,
    pb.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED: False,
}


def sql_info(
    principal: Principal,
    *,
    server_version: str,
    arrow_version: str,
    statement_timeout_ms: int,
    keywords: list[str],
    functions: dict[int, list[str]],
) -> dict[int, Any]:
    """Every SqlInfo value this server reports to `principal`."""
    # A token limited to some tables writes only by ingest (see sqlguard), never DDL.
    free_ddl = principal.can_write and principal.tables is None
    info: dict[int, Any] = {
        pb.FLIGHT_SQL_SERVER_NAME: "agentdata",
        pb.FLIGHT_SQL_SERVER_VERSION: server_version,
        pb.FLIGHT_SQL_SERVER_ARROW_VERSION: arrow_version,
        pb.FLIGHT_SQL_SERVER_READ_ONLY: not principal.can_write,
        pb.FLIGHT_SQL_SERVER_BULK_INGESTION: principal.can_write,
        pb.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: Int32(statement_timeout_ms),
        pb.SQL_DDL_SCHEMA: free_ddl,
        pb.SQL_DDL_TABLE: free_ddl,
        pb.SQL_KEYWORDS: keywords,
        **functions,
        **_SQL_FACTS,
    }
    return dict(sorted(info.items()))


def sql_info_batch(info: dict[int, Any], wanted: Iterable[int]) -> pa.RecordBatch:
    """The CommandGetSqlInfo result: the `wanted` ids (all when empty) that we know."""
    ids = [i for i in wanted if i in info] if wanted else list(info)
    members: list[list[Any]] = [[] for _ in range(6)]
    type_ids: list[int] = []
    offsets: list[int] = []
    for i in ids:
        code = _member(info[i])
        type_ids.append(code)
        offsets.append(len(members[code]))
        members[code].append(info[i] if code != 5 else list(info[i].items()))
    union_type = schemas.SQL_INFO_VALUE
    children = [pa.array(values, type=union_type.field(n).type) for n, values in enumerate(members)]
    value = pa.UnionArray.from_dense(
        pa.array(type_ids, pa.int8()),
        pa.array(offsets, pa.int32()),
        children,
        [union_type.field(n).name for n in range(6)],
        list(union_type.type_codes),
    )
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.uint32()), value], schema=schemas.SQL_INFO)


def _member(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return 0
    if isinstance(value, Int32):
        return 3
    if isinstance(value, int):
        return 2
    if isinstance(value, list):
        return 4
    if isinstance(value, dict):
        return 5
    raise TypeError(f"no SqlInfo union member for {type(value).__name__}")
