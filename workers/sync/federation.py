"""What federation (agentdata.federation) borrows from the sync stages, so a remote table
and a synced table agree: the same credentials (`credentials`), the same type mapping
(`types`) and source validation (`extract`).

The core may not import `workers` (tests/unit/test_layering.py); the `serve` launcher
hands `SyncSnowflakeSide()` to `Core.open`, which hands it to the federation router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from agentdata.errors import InvalidArgument
from workers.sync.credentials import SnowflakeSettings
from workers.sync.extract import is_query, validate_source
from workers.sync.types import SourceColumn, arrow_type_of, map_columns


class SyncSnowflakeSide:
    """`agentdata.federation.snowflake.SnowflakeSide` over the sync stages."""

    def connect_kwargs(self) -> dict[str, Any]:
        """The connector's arguments from `SNOWFLAKE_*` / the secrets file, read now
        (InvalidArgument naming what is missing)."""
        return SnowflakeSettings().connect_kwargs()

    def columns(self, metadata: Sequence[Any]) -> list[tuple[str, str, str]]:
        """(exact name, DuckDB type, Snowflake type) of each described column, by the
        sync mapping (an unmapped type fails naming the column)."""
        targets = map_columns([SourceColumn.from_metadata(m) for m in metadata])
        return [(t.name, t.duckdb_type, t.source.snowflake_type) for t in targets]

    def arrow_type(self, duckdb_type: str) -> pa.DataType | None:
        return arrow_type_of(duckdb_type)

    def table_source(self, source: str) -> str:
        """`source` trimmed, if it is DB.SCHEMA.TABLE (a query is not a table)."""
        text = validate_source(source)
        if is_query(text):
            raise InvalidArgument("a remote table's source is DB.SCHEMA.TABLE, not a query")
        return text
