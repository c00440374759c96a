"""Atomic loads of Arrow streams into tables (DoPut, syncs, Flight SQL ingest).

Recipe, the same for every mode:
1. stage: the incoming stream is copied into a TEMP table on the call's own cursor,
   batch by batch, outside the writer lock (a slow client blocks nobody; a client
   that drops mid-upload fails this step, and only the temp table existed);
2. apply: under the serialised writer, in ONE transaction on that same cursor, the
   staged rows replace the table (`replace`), are appended (`append`), or are merged
   on a key (`upsert`: delete matching keys, insert all staged rows).
Readers that started before the commit finish on the old snapshot (DuckDB MVCC).
Columns are matched by name, so a stream may carry them in any order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import duckdb
import pyarrow as pa

from agentdata.engine import Engine, translate_errors
from agentdata.errors import Cancelled, InvalidArgument, PermissionDenied
from agentdata.sqlguard import parse_table_ref, quote_ident
from agentdata.tokens import Principal


class IngestMode(StrEnum):
    APPEND = "append"
    REPLACE = "replace"
    UPSERT = "upsert"


@dataclass(frozen=True)
class IngestRequest:
    """Where and how to load: `schema.table`, mode, and the merge key for upsert."""

    table: str
    mode: IngestMode = IngestMode.APPEND
    key: tuple[str, ...] = ()

    @classmethod
    def parse(cls, table: str, mode: str = "append", key: list[str] | None = None) -> IngestRequest:
        """Validate user input into a request (InvalidArgument on anything off)."""
        try:
            mode_v = IngestMode(mode)
        except ValueError:
            raise InvalidArgument(
                f"mode must be append, replace or upsert (got {mode!r})"
            ) from None
        if key is not None and (
            not isinstance(key, list) or not all(isinstance(k, str) and k for k in key)
        ):
            raise InvalidArgument("key must be a list of column names")
        if mode_v is IngestMode.UPSERT and not key:
            raise InvalidArgument("upsert needs a non-empty 'key' (list of column names)")
        parse_table_ref(table)
        return cls(table=table, mode=mode_v, key=tuple(key or ()))


@dataclass(frozen=True)
class IngestResult:
    table: str
    rows: int
    created: bool


def ingest(
    engine: Engine,
    principal: Principal,
    request: IngestRequest,
    reader: pa.RecordBatchReader,
    *,
    is_cancelled: Callable[[], bool] | None = None,
) -> IngestResult:
    """Load `reader` into `request.table` atomically; returns the rows written.

    `is_cancelled` (the RPC's "client went away") is checked once the stream ends:
    a client that dies mid-upload can look like a clean end of stream to the reader,
    and its partial rows must not be applied.
    """
    principal.require_writer()
    schema, table = parse_table_ref(request.table)
    qualified = f"{schema}.{table}".lower()
    if not principal.can_read_table(qualified):
        raise PermissionDenied(f"token may not access table(s): {qualified}")
    target = f"{quote_ident(schema)}.{quote_ident(table)}"
    stage = f"stage_{uuid.uuid4().hex}"
    cur = engine.cursor()
    try:
        with translate_errors():
            cur.register("incoming", reader)
            cur.execute(f"CREATE TEMP TABLE {stage} AS SELECT * FROM incoming")
            cur.unregister("incoming")
            staged = int(cur.execute(f"SELECT count(*) FROM temp.{stage}").fetchall()[0][0])  # type: ignore[index]
            columns = [r[0] for r in cur.execute(f"DESCRIBE temp.{stage}").fetchall()]
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("the client went away before finishing the upload; nothing was written")
        missing_key = [k for k in request.key if k not in columns]
        if missing_key:
            raise InvalidArgument(
                f"key column(s) not in the uploaded data: {', '.join(missing_key)}"
            )
        with engine.writer(cur) as w:
            exists = w.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $1 AND table_name = $2",
                [schema, table],
            ).fetchall()[0][0]  # type: ignore[index]
            if not exists or request.mode is IngestMode.REPLACE:
                w.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                w.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM temp.{stage}")
            elif request.mode is IngestMode.APPEND:
                w.execute(f"INSERT INTO {target} BY NAME SELECT * FROM temp.{stage}")
            else:
                match = " AND ".join(
                    f"{target}.{quote_ident(k)} = s.{quote_ident(k)}" for k in request.key
                )
                w.execute(f"DELETE FROM {target} USING temp.{stage} AS s WHERE {match}")
                w.execute(f"INSERT INTO {target} BY NAME SELECT * FROM temp.{stage}")
    finally:
        try:
            cur.execute(f"DROP TABLE IF EXISTS temp.{stage}")
        except duckdb.Error:
            pass
        cur.close()
    engine.touch_tables({qualified})
    return IngestResult(table=qualified, rows=staged, created=not exists)
