"""Snowflake → Arrow record batches: the extract stage of a sync.

    with SnowflakeExtractor(SnowflakeSettings()) as extractor:
        columns = extractor.describe_source("SALES.PUBLIC.ORDERS")     # names + Snowflake types
        with extractor.extract("SALES.PUBLIC.ORDERS",
                               since=Since("UPDATED_AT", watermark),  # WHERE "UPDATED_AT" >= ?
                               progress=job.report) as batches:
            put(batches.schema, batches)       # conformed pa.RecordBatch stream, never a table

A source is `DB.SCHEMA.TABLE` (one to three parts, quoted parts allowed) or a SELECT (or
WITH ...) statement; a SELECT is wrapped as a subquery when columns or a filter are added.
Batches are streamed from `cursor.fetch_arrow_batches()` chunk by chunk, sliced to at
most `max_batch_rows`, and converted to the target Arrow types of `workers.sync.types`, so
memory holds the connector's prefetched chunks and one batch, whatever the table size.

Errors cross this boundary once: every Snowflake connector exception (and socket-level
`OSError`) raised inside the extractor leaves it as one of

    agentdata.errors.Unavailable ── TransientSourceError   retry with backoff
    agentdata.errors.InvalidArgument ── TerminalSourceError   fail the run at once
                                     ── types.UnmappedTypeError, types.ConversionError

each carrying `step`, `source`, and the Snowflake `errno` / `sqlstate` (also in `detail`,
which the job record shows). `classify()` is the sorting rule
(`agentdata.snowflake_errors`, shared with federated queries); it is by error code
first, then by exception class, and is documented next to the codes it names.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agentdata.errors import AgentdataError, InvalidArgument, Unavailable
from agentdata.snowflake_errors import classify, snowflake_codes
from workers.sync.credentials import SnowflakeSettings
from workers.sync.types import (
    SourceColumn,
    TargetColumn,
    conform_batch,
    map_columns,
    target_schema,
)

log = logging.getLogger(__name__)

STEP = "extract"

# Called after each batch with the running totals (rows, Arrow bytes) of the extraction.
ProgressCallback = Callable[[int, int], None]


# -- errors ------------------------------------------------------------------------------


class _SourceFailure(AgentdataError):
    """What both source errors carry: the failing step, the source, Snowflake's codes."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        step: str = STEP,
        source: str | None = None,
        errno: int | None = None,
        sqlstate: str | None = None,
    ) -> None:
        detail = {"step": step, "source": source, "errno": errno, "sqlstate": sqlstate}
        super().__init__(message, detail={k: v for k, v in detail.items() if v is not None})
        self.step = step
        self.source = source
        self.errno = errno
        self.sqlstate = sqlstate


class TransientSourceError(_SourceFailure, Unavailable):
    """Snowflake could not be reached or gave up for now (network, timeout, 5xx): retry."""

    transient = True


class TerminalSourceError(_SourceFailure, InvalidArgument):
    """Snowflake refused for good (credentials, SQL, missing object, permission): don't retry."""


def to_source_error(
    exc: BaseException, *, source: str | None, step: str = STEP
) -> TransientSourceError | TerminalSourceError:
    """The project error for a Snowflake (or socket) exception; see `classify`."""
    errno, sqlstate = snowflake_codes(exc)
    # The connector's message already starts with "errno (sqlstate): ".
    reason = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    where = f"source {source!r}" if source else "Snowflake"
    if classify(exc):
        return TransientSourceError(
            f"{step}: Snowflake unavailable for {where}: {reason}",
            step=step,
            source=source,
            errno=errno,
            sqlstate=sqlstate,
        )
    return TerminalSourceError(
        f"{step}: Snowflake rejected {where}: {reason}",
        step=step,
        source=source,
        errno=errno,
        sqlstate=sqlstate,
    )


@contextlib.contextmanager
def translate_errors(source: str | None, *, step: str = STEP) -> Iterator[None]:
    """Re-raise Snowflake and socket exceptions as `Transient/TerminalSourceError`.

    The project's own errors and anything else (bugs) pass through unchanged.
    """
    try:
        yield
    except Exception as exc:
        if classify(exc) is None:
            raise
        raise to_source_error(exc, source=source, step=step) from exc


# -- sources and queries -----------------------------------------------------------------

_IDENTIFIER = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_TABLE_NAME = re.compile(rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER}){{0,2}}$")
_QUERY = re.compile(r"^\(*\s*(?:select|with)\b", re.IGNORECASE)


def quote_identifier(name: str) -> str:
    """`name` as an exact (case-sensitive) Snowflake identifier: `a"b` → `"a""b"`."""
    return '"' + name.replace('"', '""') + '"'


def is_query(source: str) -> bool:
    """Whether a source is a SELECT/WITH statement rather than a table name."""
    return bool(_QUERY.match(source.strip()))


def validate_source(source: str) -> str:
    """The source, trimmed; `TerminalSourceError` unless it is a table name or a SELECT."""
    text = source.strip().rstrip(";").strip()
    if is_query(text) or _TABLE_NAME.match(text):
        return text
    raise TerminalSourceError(
        f"{STEP}: source {source!r} is neither DB.SCHEMA.TABLE nor a SELECT statement",
        source=source,
    )


@dataclass(frozen=True)
class Since:
    """An incremental lower bound: rows whose `column` is at or after `value`, and with
    `nulls` also the rows whose `column` is NULL (a sync's `null_cursor: include`).

    `column` is the exact column name (as `describe_source` reports it; see
    `resolve_column` for user spellings); `value` is bound as a query parameter, never
    spliced into the SQL.
    """

    column: str
    value: Any
    nulls: bool = False


@dataclass(frozen=True)
class SourceConstraints:
    """What Snowflake declares about a source's columns (exact names)."""

    primary_key: tuple[str, ...] = ()
    not_null: frozenset[str] = frozenset()
    #: The table's and its columns' comments (COMMENT = / COMMENT ON COLUMN).
    comment: str | None = None
    column_comments: tuple[tuple[str, str], ...] = ()


def build_query(
    source: str,
    *,
    columns: Sequence[str] | None = None,
    since: Since | None = None,
    not_null: str | None = None,
) -> tuple[str, list[Any]]:
    """The SELECT (and its qmark parameters) that reads `columns` of `source` since
    `since`, leaving out rows whose `not_null` column is NULL."""
    text = validate_source(source)
    if is_query(text) and columns is None and since is None and not_null is None:
        return text, []
    relation = f'({text}) AS "_agentdata_src"' if is_query(text) else text
    projection = ", ".join(quote_identifier(c) for c in columns) if columns else "*"
    query = f"SELECT {projection} FROM {relation}"
    conditions: list[str] = []
    params: list[Any] = []
    if since is not None:
        column = quote_identifier(since.column)
        bound = f"{column} >= ?"
        conditions.append(f"({bound} OR {column} IS NULL)" if since.nulls else bound)
        params.append(since.value)
    if not_null is not None:
        conditions.append(f"{quote_identifier(not_null)} IS NOT NULL")
    if not conditions:
        return query, []
    return f"{query} WHERE {' AND '.join(conditions)}", params


def resolve_column(name: str, columns: Sequence[SourceColumn], *, source: str) -> str:
    """The exact column name a user's spelling refers to, by Snowflake's identifier rules.

    `"MixedCase"` (quoted) matches exactly; an unquoted name matches exactly or, failing
    that, case-insensitively (Snowflake folds unquoted identifiers to upper case). Raises
    `TerminalSourceError` naming the column when there is no single match.
    """
    names = [c.name for c in columns]
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        wanted = name[1:-1].replace('""', '"')
        if wanted in names:
            return wanted
    elif name in names:
        return name
    else:
        matches = [n for n in names if n.upper() == name.upper()]
        if len(matches) == 1:
            return matches[0]
    raise TerminalSourceError(
        f"{STEP}: column {name!r} not found in source {source!r} (columns: {', '.join(names)})",
        source=source,
    )


def resolve_overrides(
    column_types: Mapping[str, str] | None, columns: Sequence[SourceColumn], *, source: str
) -> dict[str, str]:
    """A spec's `column_types` keyed by exact column names (`resolve_column`'s rules)."""
    out: dict[str, str] = {}
    for name, duckdb_type in (column_types or {}).items():
        try:
            out[resolve_column(name, columns, source=source)] = duckdb_type
        except TerminalSourceError as e:
            raise TerminalSourceError(
                f"{STEP}: column_types: {e.message.removeprefix(f'{STEP}: ')}", source=source
            ) from None
    return out


# -- the extractor -----------------------------------------------------------------------


class Extraction:
    """One running extraction: iterate it for conformed `pa.RecordBatch`es.

    `schema` and `columns` are known before the first batch (an empty source still has
    them). `rows`, `bytes` and `batches` grow as the stream is consumed; `query_id` is
    Snowflake's id for the query, a reference to the snapshot that was read. Close it (or
    use `with`) to release the cursor if the stream is abandoned early.
    """

    def __init__(
        self,
        *,
        cursor: Any,
        source: str,
        query: str,
        columns: list[SourceColumn],
        targets: list[TargetColumn],
        max_batch_rows: int,
        progress: ProgressCallback | None,
        on_transient: Callable[[], None],
    ) -> None:
        self.source = source
        self.query = query
        self.query_id: str | None = getattr(cursor, "sfqid", None)
        #: Rows the source says the query returns (Snowflake counts its result before the
        #: first chunk is fetched); None when it does not say. For progress percentages.
        total = getattr(cursor, "rowcount", None)
        self.estimated_rows: int | None = total if isinstance(total, int) and total >= 0 else None
        self.columns = columns
        self.targets = targets
        self.schema = target_schema(targets)
        self.rows = 0
        self.bytes = 0
        self.batches = 0
        self._cursor = cursor
        self._max_batch_rows = max_batch_rows
        self._progress = progress
        self._on_transient = on_transient
        self._stream = self._generate()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            return next(self._stream)
        except TransientSourceError:
            self._on_transient()
            self.close()
            raise
        except Exception:
            self.close()
            raise

    def __enter__(self) -> Extraction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reader(self) -> pa.RecordBatchReader:
        """The stream as a `RecordBatchReader` (what Flight's DoPut writer consumes)."""
        return pa.RecordBatchReader.from_batches(self.schema, self)

    def close(self) -> None:
        """Stop the stream and release the cursor; safe to call more than once."""
        self._stream.close()
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()

    def _generate(self) -> Generator[pa.RecordBatch, None, None]:
        # Microseconds throughout: DuckDB's resolution, one schema for every chunk (the
        # connector otherwise picks the unit per chunk), and no overflow for dates
        # outside 1677-2262 that nanoseconds cannot hold.
        with translate_errors(self.source):
            chunks = self._cursor.fetch_arrow_batches(force_microsecond_precision=True)
        while True:
            with translate_errors(self.source):
                chunk = next(chunks, None)
            if chunk is None:
                return
            # A chunk is a whole Snowflake result chunk (the emulator sends the entire
            # result as one); slicing is zero-copy and bounds what the loader holds.
            for raw in chunk.to_batches(max_chunksize=self._max_batch_rows):
                if raw.num_rows == 0:
                    continue
                batch = conform_batch(raw, self.targets, self.schema)
                self.rows += batch.num_rows
                self.bytes += batch.nbytes
                self.batches += 1
                if self._progress is not None:
                    self._progress(self.rows, self.bytes)
                yield batch


class SnowflakeExtractor:
    """Reads Snowflake sources as Arrow batches over one lazily opened connection.

    Not thread-safe: use one extractor per task. A transient failure drops the
    connection, so a retry through the same extractor logs in afresh.
    """

    # Options the extractor relies on, whatever the credentials say.
    _REQUIRED_OPTIONS: Mapping[str, Any] = {
        # NUMBER(p,s) with s > 0 as decimal128, not float64 (which loses digits).
        "arrow_number_to_decimal": True,
        # Server-side binding for the incremental bound: values are never spliced into SQL.
        "paramstyle": "qmark",
    }

    def __init__(
        self,
        settings: SnowflakeSettings | None = None,
        *,
        max_batch_rows: int = 65_536,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`connect_options` are extra `snowflake.connector.connect` arguments (tests,
        tuning such as `client_prefetch_threads`); the credentials come from `settings`."""
        if max_batch_rows < 1:
            raise ValueError("max_batch_rows must be positive")
        self.settings = settings if settings is not None else SnowflakeSettings()
        self.max_batch_rows = max_batch_rows
        self._connect_options = dict(connect_options or {})
        self._conn: Any = None

    def __enter__(self) -> SnowflakeExtractor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never the credentials: the account is enough to tell extractors apart.
        return f"SnowflakeExtractor(account={self.settings.account!r})"

    def close(self) -> None:
        """Close the connection, if one is open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- operations ----------------------------------------------------------------------
    def describe_source(self, source: str) -> list[SourceColumn]:
        """The source's columns with their Snowflake types, without reading any rows."""
        query, _ = build_query(source)
        with self._cursor(source) as cursor, self._translated(source):
            metadata = cursor.describe(query)
        if not metadata:
            raise TerminalSourceError(f"{STEP}: source {source!r} has no columns", source=source)
        return [SourceColumn.from_metadata(meta) for meta in metadata]

    def extract(
        self,
        source: str,
        *,
        columns: Sequence[str] | None = None,
        since: Since | None = None,
        not_null: str | None = None,
        column_types: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Extraction:
        """Start reading `source` (optionally only `columns`, only rows since `since`,
        only rows whose `not_null` column has a value), with `column_types` (exact
        column name -> DuckDB type) overriding the type mapping.

        The query runs now, so a missing table or bad SQL fails here; the rows are
        fetched as the returned `Extraction` is iterated. An unmapped column type raises
        `UnmappedTypeError` here too, before any row is read.
        """
        query, params = build_query(source, columns=columns, since=since, not_null=not_null)
        conn = self._connection(source)
        with self._translated(source):
            cursor = conn.cursor()
        try:
            with self._translated(source):
                cursor.execute(query, params or None)
                metadata = cursor.description
            source_columns = [SourceColumn.from_metadata(meta) for meta in metadata]
            # A key-only read (reconciliation) compares keys: DuckDB casts them as needed.
            overrides = (
                resolve_overrides(column_types, source_columns, source=source)
                if columns is None
                else {}
            )
            targets = map_columns(source_columns, overrides)
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.close()
            raise
        return Extraction(
            cursor=cursor,
            source=source,
            query=query,
            columns=source_columns,
            targets=targets,
            max_batch_rows=self.max_batch_rows,
            progress=progress,
            on_transient=self.close,
        )

    def constraints(self, source: str) -> SourceConstraints:
        """The PRIMARY KEY and NOT NULL columns Snowflake declares for a table source
        (`SHOW PRIMARY KEYS IN TABLE`, `DESCRIBE TABLE`); nothing for a SELECT source,
        whose result metadata says which columns are NOT NULL (`SourceColumn.nullable`).

        Snowflake does not enforce a primary key, so a source may still repeat one: the
        load folds such rows (`agentdata.duplicates`). NOT NULL it does enforce.
        """
        text = validate_source(source)
        if is_query(text):
            return SourceConstraints()
        with self._cursor(source) as cursor, self._translated(source):
            cursor.execute(f"SHOW PRIMARY KEYS IN TABLE {text}")
            names = [d.name for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            cursor.execute(f"DESCRIBE TABLE {text}")
            names = [d.name for d in cursor.description]
            described = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        # Listed per column with its position in the key (`key_sequence`).
        ordered = sorted(
            enumerate(rows), key=lambda ir: (int(ir[1].get("key_sequence") or 0), ir[0])
        )
        key: list[str] = []
        for _, row in ordered:
            if row.get("column_name") and row["column_name"] not in key:
                key.append(str(row["column_name"]))
        not_null = frozenset(
            str(r["name"]) for r in described if str(r.get("null?", "Y")).upper() == "N"
        )
        comment, column_comments = self._comments(source, text)
        return SourceConstraints(tuple(key), not_null, comment, column_comments)

    def _comments(self, source: str, text: str) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """Comments from the source database's information_schema (DESCRIBE TABLE's
        `comment` column is not filled by every Snowflake front end)."""
        parts = [
            p[1:-1].replace('""', '"') if p.startswith('"') else p.upper() for p in text.split(".")
        ]
        if len(parts) != 3:
            return None, ()  # only fully qualified DB.SCHEMA.TABLE sources are looked up
        db, schema, table = parts
        where = "table_schema = ? AND table_name = ?"  # qmark: the connection's paramstyle
        try:
            return self._read_comments(source, db, where, (schema, table))
        except AgentdataError as e:  # words for agents: never worth failing a sync over
            log.warning("could not read the comments of %s: %s", source, e.message)
            return None, ()

    def _read_comments(
        self, source: str, db: str, where: str, args: tuple[str, str]
    ) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        schema, table = args
        with self._cursor(source) as cursor, self._translated(source):
            cursor.execute(
                f"SELECT comment FROM {quote_identifier(db)}.information_schema.tables WHERE {where}",
                (schema, table),
            )
            rows = cursor.fetchall()
            cursor.execute(
                f"SELECT column_name, comment FROM {quote_identifier(db)}.information_schema.columns"
                f" WHERE {where}",
                (schema, table),
            )
            columns = tuple(sorted((str(c), str(w)) for c, w in cursor.fetchall() if w))
        comment = str(rows[0][0]) if rows and rows[0][0] else None
        return comment, columns

    def count_nulls(self, source: str, column: str) -> int:
        """Rows of `source` whose `column` is NULL (a sync's `null_cursor: skip`/`error`)."""
        text = validate_source(source)
        relation = f'({text}) AS "_agentdata_src"' if is_query(text) else text
        query = f"SELECT count(*) FROM {relation} WHERE {quote_identifier(column)} IS NULL"
        with self._cursor(source) as cursor, self._translated(source):
            cursor.execute(query)
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def extract_keys(
        self,
        source: str,
        key_columns: Sequence[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> Extraction:
        """Stream only the primary-key columns of `source` (for delete reconciliation)."""
        if not key_columns:
            raise TerminalSourceError(
                f"{STEP}: no key columns given for source {source!r}", source=source
            )
        return self.extract(source, columns=key_columns, progress=progress)

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(self, source: str | None) -> Iterator[None]:
        """`translate_errors`, also dropping the connection after a transient failure."""
        try:
            with translate_errors(source):
                yield
        except TransientSourceError:
            self.close()
            raise

    @contextlib.contextmanager
    def _cursor(self, source: str) -> Iterator[Any]:
        conn = self._connection(source)
        with self._translated(source):
            cursor = conn.cursor()
        try:
            yield cursor
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def _connection(self, source: str | None) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        import snowflake.connector

        try:
            kwargs = self.settings.connect_kwargs()
        except InvalidArgument as exc:
            raise TerminalSourceError(f"{STEP}: {exc.message}", source=source) from exc
        session_parameters = {
            # Out-of-band telemetry posts to Snowflake's own endpoints from the worker; a
            # sync needs none of it, and it stalls where the internet is not reachable.
            "CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False,
            **self._connect_options.get("session_parameters", {}),
        }
        kwargs.update(self._connect_options)
        kwargs.update(self._REQUIRED_OPTIONS)
        kwargs["session_parameters"] = session_parameters
        with self._translated(source):
            self._conn = snowflake.connector.connect(**kwargs)
        return self._conn
