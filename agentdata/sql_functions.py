"""What untrusted SQL may call: allow-lists of DuckDB functions, by name.

Admins may call anything the locked engine allows. Everyone else may call only:

- scalar, aggregate, window functions and built-in macros listed in
  `sql_functions.txt` (next to this module). The list was generated from DuckDB's own
  `duckdb_functions()` by `generate_scalar_allowlist()`, minus `NOT_FOR_AGENTS`:
  functions that reveal server state (settings, paths, versions, the running query),
  change it (sequences, logs) or only stall a worker (sleep). Because the list is a
  file, a DuckDB upgrade that adds functions changes nothing until someone reviews
  them: `tests/unit/test_sql_functions.py` fails and shows the new names.
- the table functions in `TABLE_FUNCTIONS`, `CATALOG_FUNCTIONS` (whose rows are
  filtered to what the token may read, see `agentdata.catalog_filter`) and
  `TABLE_ARGUMENT_FUNCTIONS` (allowed only on a table the token may read);
- user macros, when their schema is readable (their bodies are checked as well).

Anything else is refused with `[permission_denied]` naming the function.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import duckdb

_LIST_FILE = Path(__file__).with_name("sql_functions.txt")

#: Built-in functions agents may not call, and why (see the module docstring).
NOT_FOR_AGENTS: dict[str, str] = {
    # Server state: settings, paths, versions, sessions, the text of running queries.
    "current_setting": "shows server settings",
    "getvariable": "reads session variables",
    "current_query": "shows the running query",
    "current_query_id": "shows engine state",
    "current_connection_id": "shows engine state",
    "current_transaction_id": "shows engine state",
    "txid_current": "shows engine state",
    "version": "shows the engine version",
    "get_block_size": "shows storage details",
    "pg_conf_load_time": "shows server state",
    "pg_postmaster_start_time": "shows server state",
    "pg_my_temp_schema": "shows engine state",
    "pg_is_other_temp_schema": "shows engine state",
    "inet_client_addr": "shows network details",
    "inet_client_port": "shows network details",
    "inet_server_addr": "shows network details",
    "inet_server_port": "shows network details",
    "duckdb_logs_parsed": "reads engine logs",
    "parse_duckdb_log_message": "reads engine logs",
    "duckdb_profiling_settings": "shows server settings",
    # Catalog by object id: would describe objects outside a token's allow-list.
    "pg_get_viewdef": "describes arbitrary catalog objects",
    "pg_get_constraintdef": "describes arbitrary catalog objects",
    "pg_get_expr": "describes arbitrary catalog objects",
    "col_description": "describes arbitrary catalog objects",
    "obj_description": "describes arbitrary catalog objects",
    "shobj_description": "describes arbitrary catalog objects",
    "pg_has_role": "describes arbitrary catalog objects",
    "has_any_column_privilege": "describes arbitrary catalog objects",
    "has_column_privilege": "describes arbitrary catalog objects",
    "has_database_privilege": "describes arbitrary catalog objects",
    "has_foreign_data_wrapper_privilege": "describes arbitrary catalog objects",
    "has_function_privilege": "describes arbitrary catalog objects",
    "has_language_privilege": "describes arbitrary catalog objects",
    "has_schema_privilege": "describes arbitrary catalog objects",
    "has_sequence_privilege": "describes arbitrary catalog objects",
    "has_server_privilege": "describes arbitrary catalog objects",
    "has_table_privilege": "describes arbitrary catalog objects",
    "has_tablespace_privilege": "describes arbitrary catalog objects",
    "pg_table_is_visible": "describes arbitrary catalog objects",
    "pg_function_is_visible": "describes arbitrary catalog objects",
    "pg_type_is_visible": "describes arbitrary catalog objects",
    "pg_collation_is_visible": "describes arbitrary catalog objects",
    "pg_conversion_is_visible": "describes arbitrary catalog objects",
    "pg_opclass_is_visible": "describes arbitrary catalog objects",
    "pg_operator_is_visible": "describes arbitrary catalog objects",
    "pg_opfamily_is_visible": "describes arbitrary catalog objects",
    "pg_ts_config_is_visible": "describes arbitrary catalog objects",
    "pg_ts_dict_is_visible": "describes arbitrary catalog objects",
    "pg_ts_parser_is_visible": "describes arbitrary catalog objects",
    "pg_ts_template_is_visible": "describes arbitrary catalog objects",
    "json_serialize_plan": "binds arbitrary SQL text outside the checks",
    "json_execute_serialized_sql": "runs SQL outside the checks",
    # Side effects.
    "nextval": "changes a sequence",
    "currval": "reads sequence state",
    "setval": "changes a sequence",
    "write_log": "writes the engine log",
    "setseed": "changes session state",
    # Stalls a worker thread without doing work.
    "sleep_ms": "stalls a worker",
    "pg_sleep": "stalls a worker",
}

#: Functions the parser knows that `duckdb_functions()` lists only as table functions.
PARSER_SCALARS = frozenset({"unnest", "unlist"})

#: Table functions any token may call: they read no stored data, or (query,
#: query_table) read only tables the binder reports, which are checked.
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "query",
        "query_table",
        "json_each",
        "json_tree",
        "pg_timezone_names",
        "icu_calendar_names",
        "duckdb_keywords",
    }
)

#: Catalog table functions: rows are filtered to what a table-limited token may read.
CATALOG_FUNCTIONS = frozenset(
    {
        "duckdb_tables",
        "duckdb_columns",
        "duckdb_views",
        "duckdb_schemas",
        "duckdb_constraints",
        "duckdb_indexes",
    }
)

#: Table functions whose first argument names a table: allowed on readable tables only.
TABLE_ARGUMENT_FUNCTIONS = frozenset({"pragma_table_info", "pragma_storage_info"})

#: Catalog views (schema, view) a table-limited token may query, filtered like
#: CATALOG_FUNCTIONS. Every other view in these schemas is refused.
CATALOG_VIEWS = frozenset(
    {
        ("information_schema", "tables"),
        ("information_schema", "columns"),
        ("information_schema", "schemata"),
        ("information_schema", "views"),
        ("information_schema", "table_constraints"),
        ("information_schema", "key_column_usage"),
    }
)

#: DuckDB's own schemas: their objects are the catalog, never data.
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog"})


#: Functions whose answer depends on when they run (beyond DuckDB's own VOLATILE list).
_TIME_FUNCTIONS = frozenset(
    {
        "now",
        "today",
        "current_date",
        "current_time",
        "current_timestamp",
        "current_localtime",
        "current_localtimestamp",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "age",
    }
)


@cache
def volatile_functions() -> frozenset[str]:
    """Functions whose result may differ between two runs over the same data: a
    query calling one is never served from the results cache."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE stability = 'VOLATILE'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(r[0] for r in rows) | _TIME_FUNCTIONS


@cache
def allowed_scalars() -> frozenset[str]:
    """Scalar/aggregate/window functions and built-in macros agents may call."""
    names = _LIST_FILE.read_text(encoding="utf-8").split("\n")
    return frozenset(n for n in names if n and not n.startswith("#"))


def generate_scalar_allowlist() -> list[str]:
    """The list `sql_functions.txt` holds, computed from this DuckDB (for review)."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions()"
            " WHERE internal AND function_type IN ('scalar', 'aggregate', 'window', 'macro')"
            " AND NOT starts_with(function_name, '__internal')"
            " ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    names = {r[0] for r in rows if r[0] not in NOT_FOR_AGENTS} | PARSER_SCALARS
    return sorted(names)


def write_scalar_allowlist() -> None:
    """Regenerate `sql_functions.txt` (run after reviewing a DuckDB upgrade)."""
    header = "# Generated by agentdata.sql_functions.generate_scalar_allowlist(); reviewed.\n"
    _LIST_FILE.write_text(header + "\n".join(generate_scalar_allowlist()) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_scalar_allowlist()
