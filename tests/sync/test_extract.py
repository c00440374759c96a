"""The extractor against the `fakesnow` emulator, driven by the real snowflake connector.

One emulator process serves the module (started on a free port, data in a temp dir);
the outage test stops and restarts it. Also here: credentials and error classification,
which the extractor owns.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from snowflake.connector import errors as sf

from agentdata.errors import InvalidArgument, Unavailable
from agentdata.snowflake_errors import classify
from tests.support.fakesnow_server import FakesnowServer
from workers.sync.credentials import SnowflakeSettings
from workers.sync.extract import (
    Since,
    SnowflakeExtractor,
    TerminalSourceError,
    TransientSourceError,
    build_query,
    resolve_column,
    to_source_error,
)
from workers.sync.types import JSON_ARROW_TYPE, SourceColumn, map_column, map_columns

UTC = dt.UTC
BIG_ROWS = 200_000

ALL_TYPES_DDL = """
create table ALL_TYPES (
    ID NUMBER(38,0), N2 NUMBER(2,0), N4 NUMBER(4,0), N9 NUMBER(9,0), N18 NUMBER(18,0),
    N37 NUMBER(37,0), I INT, D102 NUMBER(10,2), D3810 NUMBER(38,10), F FLOAT, DBL DOUBLE,
    V VARCHAR, V10 VARCHAR(10), T TEXT, S STRING, CH CHAR(3), B BINARY, BO BOOLEAN,
    DT DATE, TM TIME, TS TIMESTAMP_NTZ, DTM DATETIME, TSLTZ TIMESTAMP_LTZ,
    TSTZ TIMESTAMP_TZ, VAR VARIANT, OBJ OBJECT, ARR ARRAY
)"""

ALL_TYPES_ROWS = [
    """insert into ALL_TYPES select
    1, 99, 9999, 999999999, 999999999999999999, 1000000000000000000000000000000000007, 42,
    12345678.91, 1234567890123456789012345678.0123456789, 1.5, 2.25,
    'héllo ✓', 'abc', 'text', 'string', 'xyz', to_binary('DEADBEEF', 'HEX'), true,
    '2024-02-29', '13:14:15.123456', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05',
    '2024-01-02 03:04:05.123456 +02:00'::timestamp_ltz,
    '2024-06-30 23:30:00.5 -05:00'::timestamp_tz,
    parse_json('{"a": 1, "b": [true, null]}'), object_construct('k', 'v'),
    array_construct(1, 'two')""",
    # Extremes: negatives, empty string, dates beyond what nanoseconds can hold.
    """insert into ALL_TYPES select
    2, -99, -9999, -999999999, -999999999999999999, -1000000000000000000000000000000000007,
    -42, -0.01, -0.0000000001, -2.5e10, 1e-300,
    '', '', ' ', 'a"b''c', 'ab', to_binary('00', 'HEX'), false,
    '9999-12-31', '23:59:59.999999', '2500-01-01 00:00:00.000001', '1900-01-01 00:00:00',
    '1969-12-31 23:59:59.999999 +00:00'::timestamp_ltz,
    '2262-04-12 00:00:00 +14:00'::timestamp_tz,
    parse_json('[]'), object_construct(), array_construct()""",
    "insert into ALL_TYPES (ID) values (3)",  # every other column NULL
]

# Column → (DuckDB type, Arrow type, values for ID 1, 2, 3). NUMBER(38,0) (and INT, its
# alias) is DECIMAL(38,0): exact for any 38-digit value. The emulator cannot store more
# than int64 in a NUMBER(38,0), so N37 carries the 37-digit values.
EXPECTED: dict[str, tuple[str, pa.DataType, list[object]]] = {
    "ID": ("DECIMAL(38,0)", pa.decimal128(38, 0), [Decimal(1), Decimal(2), Decimal(3)]),
    "N2": ("TINYINT", pa.int8(), [99, -99, None]),
    "N4": ("SMALLINT", pa.int16(), [9999, -9999, None]),
    "N9": ("INTEGER", pa.int32(), [999999999, -999999999, None]),
    "N18": ("BIGINT", pa.int64(), [999999999999999999, -999999999999999999, None]),
    "N37": (
        "DECIMAL(37,0)",
        pa.decimal128(37, 0),
        [Decimal(10**36 + 7), Decimal(-(10**36 + 7)), None],
    ),
    "I": ("DECIMAL(38,0)", pa.decimal128(38, 0), [Decimal(42), Decimal(-42), None]),
    "D102": (
        "DECIMAL(10,2)",
        pa.decimal128(10, 2),
        [Decimal("12345678.91"), Decimal("-0.01"), None],
    ),
    "D3810": (
        "DECIMAL(38,10)",
        pa.decimal128(38, 10),
        [Decimal("1234567890123456789012345678.0123456789"), Decimal("-0.0000000001"), None],
    ),
    "F": ("DOUBLE", pa.float64(), [1.5, -2.5e10, None]),
    "DBL": ("DOUBLE", pa.float64(), [2.25, 1e-300, None]),
    "V": ("VARCHAR", pa.string(), ["héllo ✓", "", None]),
    "V10": ("VARCHAR", pa.string(), ["abc", "", None]),
    "T": ("VARCHAR", pa.string(), ["text", " ", None]),
    "S": ("VARCHAR", pa.string(), ["string", "a\"b'c", None]),
    "CH": ("VARCHAR", pa.string(), ["xyz", "ab", None]),
    "B": ("BLOB", pa.binary(), [b"\xde\xad\xbe\xef", b"\x00", None]),
    "BO": ("BOOLEAN", pa.bool_(), [True, False, None]),
    "DT": ("DATE", pa.date32(), [dt.date(2024, 2, 29), dt.date(9999, 12, 31), None]),
    "TM": (
        "TIME",
        pa.time64("us"),
        [dt.time(13, 14, 15, 123456), dt.time(23, 59, 59, 999999), None],
    ),
    "TS": (
        "TIMESTAMP",
        pa.timestamp("us"),
        [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2500, 1, 1, 0, 0, 0, 1), None],
    ),
    "DTM": (
        "TIMESTAMP",
        pa.timestamp("us"),
        [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(1900, 1, 1), None],
    ),
    # Instants, compared in UTC: +02:00 03:04 is 01:04Z; -05:00 23:30 is 04:30Z next day.
    "TSLTZ": (
        "TIMESTAMPTZ",
        pa.timestamp("us", tz="UTC"),
        [
            dt.datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            None,
        ],
    ),
    "TSTZ": (
        "TIMESTAMPTZ",
        pa.timestamp("us", tz="UTC"),
        [
            dt.datetime(2024, 7, 1, 4, 30, 0, 500000, tzinfo=UTC),
            dt.datetime(2262, 4, 11, 10, 0, tzinfo=UTC),
            None,
        ],
    ),
    "VAR": ("JSON", JSON_ARROW_TYPE, [{"a": 1, "b": [True, None]}, [], None]),
    "OBJ": ("JSON", JSON_ARROW_TYPE, [{"k": "v"}, {}, None]),
    "ARR": ("JSON", JSON_ARROW_TYPE, [[1, "two"], [], None]),
}


@pytest.fixture(scope="module")
def snow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakesnowServer]:
    with FakesnowServer(data_dir=tmp_path_factory.mktemp("fakesnow")) as server:
        server.execute(
            ALL_TYPES_DDL,
            *ALL_TYPES_ROWS,
            f"""create table BIG as select seq8() as ID, uniform(1, 1000, random()) as V,
                'row ' || seq8() as S from table(generator(rowcount => {BIG_ROWS}))""",
        )
        yield server


@pytest.fixture(scope="module")
def settings(snow: FakesnowServer) -> SnowflakeSettings:
    # Through the environment names, as a worker process would see them.
    fields: dict[str, Any] = {
        key.removeprefix("SNOWFLAKE_").lower(): value for key, value in snow.env().items()
    }
    return SnowflakeSettings(**fields)


@pytest.fixture
def extractor(settings: SnowflakeSettings) -> Iterator[SnowflakeExtractor]:
    with SnowflakeExtractor(settings, max_batch_rows=50_000) as ex:
        yield ex


def read_all(extraction: Iterator[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(list(extraction), schema=schema)


# -- every mapped type, value by value ---------------------------------------------------


def test_every_mapped_type_arrives_equal_to_the_source(
    extractor: SnowflakeExtractor,
) -> None:
    with extractor.extract("select * from ALL_TYPES order by ID") as extraction:
        table = read_all(extraction, extraction.schema)
    assert table.column_names == list(EXPECTED)
    assert {t.name: t.duckdb_type for t in extraction.targets} == {
        name: duckdb_type for name, (duckdb_type, _, _) in EXPECTED.items()
    }
    for name, (_, arrow_type, values) in EXPECTED.items():
        column = table.column(name)
        assert column.type == arrow_type, name
        if arrow_type == JSON_ARROW_TYPE:
            got = [
                None if v is None else json.loads(v)
                for v in column.combine_chunks().storage.to_pylist()
            ]
        elif pa.types.is_timestamp(arrow_type) and arrow_type.tz:
            got = [None if v is None else v.astimezone(UTC) for v in column.to_pylist()]
        else:
            got = column.to_pylist()
        assert got == values, name
    assert extraction.rows == 3 and extraction.query_id


def test_describe_source_reports_names_and_snowflake_types(
    extractor: SnowflakeExtractor, snow: FakesnowServer
) -> None:
    qualified = f"{snow.database}.{snow.schema}.ALL_TYPES"
    columns = extractor.describe_source(qualified)
    assert [c.name for c in columns] == list(EXPECTED)
    by_name = {c.name: c for c in columns}
    assert by_name["D102"].snowflake_type == "NUMBER(10,2)"
    assert by_name["N37"].snowflake_type == "NUMBER(37,0)"
    assert by_name["TS"].type_name == "TIMESTAMP_NTZ"
    assert by_name["B"].type_name == "BINARY"
    assert [t.duckdb_type for t in map_columns(columns)] == [d for d, _, _ in EXPECTED.values()]

    # The DESCRIBE TABLE text (what an admin sees in Snowflake) maps the same way.
    with snow.connect() as conn, conn.cursor() as cur:
        cur.execute(f"describe table {qualified}")
        described = [SourceColumn.parse(row[0], row[1]) for row in cur.fetchall()]
    assert [map_column(c).duckdb_type for c in described] == [
        t.duckdb_type for t in map_columns(columns)
    ]

    projected = extractor.describe_source("select ID, V as NAME from ALL_TYPES")
    assert [(c.name, c.type_name) for c in projected] == [("ID", "NUMBER"), ("NAME", "VARCHAR")]


# -- streaming ---------------------------------------------------------------------------


def test_large_table_streams_in_bounded_batches(
    extractor: SnowflakeExtractor, snow: FakesnowServer
) -> None:
    """200k rows arrive as several batches of at most max_batch_rows, lazily.

    fakesnow 0.12 answers a query with the whole result inline (one IPC stream), so the
    connector's `fetch_arrow_batches` yields a single chunk for it; against Snowflake a
    large result comes as many chunks, each fetched when iterated. Either way the
    extractor slices (zero-copy) to `max_batch_rows`, so the loader never sees more.
    """
    progress: list[tuple[int, int]] = []
    extraction = extractor.extract(
        "BIG", progress=lambda rows, nbytes: progress.append((rows, nbytes))
    )
    # The source says how many rows are coming (the job's progress percentage).
    assert extraction.estimated_rows == BIG_ROWS
    first = next(extraction)
    assert extraction.rows == first.num_rows < BIG_ROWS  # nothing read ahead
    batches = [first, *extraction]
    assert len(batches) >= BIG_ROWS // 50_000
    assert all(0 < b.num_rows <= 50_000 for b in batches)
    assert sum(b.num_rows for b in batches) == extraction.rows == BIG_ROWS
    ids = pa.chunked_array([b.column("ID") for b in batches])
    assert sorted(int(v) for v in ids.to_pylist()) == list(range(BIG_ROWS))
    # Progress: once per batch, running totals, ending at the extraction's totals.
    assert len(progress) == len(batches)
    assert [rows for rows, _ in progress] == sorted({rows for rows, _ in progress})
    assert progress[-1] == (BIG_ROWS, extraction.bytes)
    assert extraction.bytes >= sum(b.nbytes for b in batches) > 0
    # The connector itself, for the record of what the emulator sends.
    with snow.connect() as conn, conn.cursor() as cur:
        cur.execute("select * from BIG")
        assert sum(t.num_rows for t in cur.fetch_arrow_batches()) == BIG_ROWS


def test_reader_hands_the_stream_to_a_record_batch_reader(extractor: SnowflakeExtractor) -> None:
    with extractor.extract("select ID, S from BIG where ID < 1000") as extraction:
        reader = extraction.reader()
        assert reader.schema == extraction.schema
        table = reader.read_all()
    assert table.num_rows == 1000
    assert table.schema.field("S").type == pa.string()


def test_incremental_reads_rows_at_or_after_the_bound(extractor: SnowflakeExtractor) -> None:
    columns = extractor.describe_source("BIG")
    cursor_column = resolve_column("id", columns, source="BIG")  # unquoted: case-insensitive
    assert cursor_column == "ID"
    with extractor.extract("BIG", since=Since(cursor_column, BIG_ROWS - 10)) as extraction:
        ids = [int(v) for b in extraction for v in b.column("ID").to_pylist()]
    assert sorted(ids) == list(range(BIG_ROWS - 10, BIG_ROWS))  # >=, inclusive

    # Timestamps bind as parameters, naive and aware alike.
    naive = dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    with extractor.extract("ALL_TYPES", since=Since("TS", naive)) as extraction:
        assert sorted(int(v) for b in extraction for v in b.column("ID").to_pylist()) == [1, 2]
    aware = dt.datetime(2024, 7, 1, 4, 30, 0, 500001, tzinfo=UTC)  # 1µs after row 1's TSTZ
    with extractor.extract("select * from ALL_TYPES", since=Since("TSTZ", aware)) as extraction:
        assert [int(v) for b in extraction for v in b.column("ID").to_pylist()] == [2]


def test_key_listing_streams_only_the_key_columns(extractor: SnowflakeExtractor) -> None:
    with extractor.extract_keys("BIG", ["ID"]) as extraction:
        assert extraction.schema.names == ["ID"]
        count = sum(b.num_rows for b in extraction)
    assert count == BIG_ROWS


def test_build_query_quotes_identifiers_and_binds_values() -> None:
    assert build_query("DB.S.T") == ("SELECT * FROM DB.S.T", [])
    assert build_query('"my db".S."t"', columns=['a"b']) == (
        'SELECT "a""b" FROM "my db".S."t"',
        [],
    )
    query, params = build_query("select 1 as X;", since=Since("X", "'; drop table T"))
    assert query == 'SELECT * FROM (select 1 as X) AS "_agentdata_src" WHERE "X" >= ?'
    assert params == ["'; drop table T"]


# -- errors ------------------------------------------------------------------------------


def test_missing_table_is_terminal_and_names_it(
    extractor: SnowflakeExtractor, snow: FakesnowServer
) -> None:
    source = f"{snow.database}.{snow.schema}.NO_SUCH_TABLE"
    for attempt in (extractor.describe_source, extractor.extract):
        with pytest.raises(TerminalSourceError) as info:
            attempt(source)
        error = info.value
        assert isinstance(error, InvalidArgument) and not isinstance(error, Unavailable)
        assert "NO_SUCH_TABLE" in error.message
        assert (error.step, error.source, error.errno) == ("extract", source, 2003)
        assert error.detail["sqlstate"] == "42S02"


def test_bad_sql_and_bad_sources_are_terminal(extractor: SnowflakeExtractor) -> None:
    with pytest.raises(TerminalSourceError) as info:
        extractor.extract("select nope_column from BIG")
    assert "NOPE_COLUMN" in info.value.message.upper()
    with pytest.raises(TerminalSourceError, match="neither DB.SCHEMA.TABLE nor a SELECT"):
        extractor.extract("drop table BIG")
    with pytest.raises(TerminalSourceError, match="'missing' not found"):
        resolve_column("missing", extractor.describe_source("BIG"), source="BIG")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_emulator_outage_is_transient_then_recovers(
    settings: SnowflakeSettings, snow: FakesnowServer
) -> None:
    """Stop the emulator, then start it again: transient failures, then the same data.

    (The filter: when a query times out, the connector tries to cancel it from a
    background thread, which fails too while the emulator is down, and says so.)
    """
    quick = settings.model_copy(update={"login_timeout": 1, "network_timeout": 1})
    with SnowflakeExtractor(quick) as active, SnowflakeExtractor(quick) as idle:
        assert len(active.describe_source("BIG")) == 3  # both logged in
        assert len(idle.describe_source("BIG")) == 3

        snow.stop()
        try:
            # The open session's requests are refused...
            with pytest.raises(TransientSourceError) as info:
                active.extract("BIG")
            error = info.value
            assert isinstance(error, Unavailable) and error.code == "unavailable"
            assert error.errno in (250001, 250003) and error.source == "BIG"
            assert error.step == "extract"
            # ...and so is a fresh login.
            with pytest.raises(TransientSourceError) as info:
                active.describe_source("BIG")
            assert info.value.errno == 250001
        finally:
            snow.start()

        # A session opened before the restart is gone (HTTP 401): transient too, and
        # the next call logs in again.
        with pytest.raises(TransientSourceError) as info:
            idle.describe_source("BIG")
        assert info.value.errno == 290401
        assert len(idle.describe_source("BIG")) == 3

        # Same port, same data.
        with active.extract("BIG") as extraction:
            assert sum(b.num_rows for b in extraction) == BIG_ROWS


def _sf(cls: type[sf.Error], errno: int | None = None, sqlstate: str | None = None) -> sf.Error:
    return cls(msg="boom", errno=errno, sqlstate=sqlstate)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_sf(sf.OperationalError, 250001), True),  # could not reach the service
        (_sf(sf.OperationalError, 250003), True),  # request failed after retries
        (_sf(sf.DatabaseError, 252010), True),  # chunk download failed
        (_sf(sf.ProgrammingError, 630, "57014"), True),  # statement timeout
        (_sf(sf.ProgrammingError, 603, "XX000"), True),  # internal error, retry
        (sf.ServiceUnavailableError(), True),
        (sf.GatewayTimeoutError(), True),
        (_sf(sf.HttpError, 290401, "08001"), True),  # session lost (server restarted)
        (_sf(sf.HttpError, 290429), True),
        (_sf(sf.DatabaseError, 390114, "08001"), True),  # token expired: log in again
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError("read timed out"), True),
        (_sf(sf.DatabaseError, 390100, "28000"), False),  # wrong user or password
        (_sf(sf.DatabaseError, 390144, "08001"), False),  # invalid key-pair JWT
        (_sf(sf.ProgrammingError, 2003, "42S02"), False),  # object does not exist
        (_sf(sf.ProgrammingError, 1003, "42000"), False),  # syntax error
        (_sf(sf.ProgrammingError, 3001, "42501"), False),  # insufficient privileges
        (_sf(sf.ForbiddenError, 250001, "08001"), False),  # HTTP 403 at login
        (_sf(sf.HttpError, 290404), False),
        (_sf(sf.InterfaceError, 252006), False),  # cursor closed: a bug, not an outage
        (FileNotFoundError(2, "no such file", "key.p8"), False),
    ],
)
def test_classification(exc: BaseException, transient: bool) -> None:
    assert classify(exc) is transient
    error = to_source_error(exc, source="DB.S.T", step="extract")
    assert isinstance(error, TransientSourceError if transient else TerminalSourceError)
    assert isinstance(error, Unavailable if transient else InvalidArgument)
    assert error.detail["step"] == "extract" and error.detail["source"] == "DB.S.T"


def test_non_source_errors_are_not_translated() -> None:
    assert classify(ValueError("a bug")) is None
    assert classify(InvalidArgument("already ours")) is None


# -- credentials -------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith("SNOWFLAKE_"):
            monkeypatch.delenv(key)
    return monkeypatch


def test_settings_from_environment(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in {
        "SNOWFLAKE_ACCOUNT": "xy12345",
        "SNOWFLAKE_USER": "SYNC",
        "SNOWFLAKE_PASSWORD": "hunter2-secret",
        "SNOWFLAKE_WAREHOUSE": "WH",
        "SNOWFLAKE_DATABASE": "DB",
        "SNOWFLAKE_SCHEMA": "S",
        "SNOWFLAKE_ROLE": "R",
        "SNOWFLAKE_HOST": "localhost",
        "SNOWFLAKE_PORT": "8080",
        "SNOWFLAKE_PROTOCOL": "http",
    }.items():
        clean_env.setenv(key, value)
    settings = SnowflakeSettings()
    assert settings.connect_kwargs() == {
        "account": "xy12345",
        "user": "SYNC",
        "password": "hunter2-secret",
        "warehouse": "WH",
        "database": "DB",
        "schema": "S",
        "role": "R",
        "host": "localhost",
        "port": 8080,
        "protocol": "http",
    }
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "hunter2" not in repr(SnowflakeExtractor(settings))


def test_settings_from_a_secrets_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    yaml_file = tmp_path / "secrets.yaml"
    yaml_file.write_text(
        "snowflake:\n"
        "  account: xy12345\n"
        "  SNOWFLAKE_USER: FROM_FILE\n"
        "  private_key_file: /run/secrets/key.p8\n"
        "  private_key_file_pwd: pass-secret\n"
        "  schema: FILE_SCHEMA\n"
    )
    clean_env.setenv("SNOWFLAKE_SECRETS_FILE", str(yaml_file))
    clean_env.setenv("SNOWFLAKE_SCHEMA", "ENV_SCHEMA")  # a variable beats the file
    kwargs = SnowflakeSettings().connect_kwargs()
    assert kwargs == {
        "account": "xy12345",
        "user": "FROM_FILE",
        "private_key_file": "/run/secrets/key.p8",
        "private_key_file_pwd": "pass-secret",
        "schema": "ENV_SCHEMA",
    }
    assert "pass-secret" not in repr(SnowflakeSettings())

    json_file = tmp_path / "secrets.json"
    json_file.write_text(json.dumps({"account": "a", "user": "u", "password": "json-secret"}))
    assert SnowflakeSettings(secrets_file=json_file).connect_kwargs()["password"] == "json-secret"

    bad = tmp_path / "bad.yaml"
    bad.write_text("password: [never-closed-secret\n")
    with pytest.raises(InvalidArgument, match="not valid YAML") as info:
        SnowflakeSettings(secrets_file=bad)
    assert "never-closed-secret" not in str(info.value)


def test_incomplete_credentials_fail_terminally(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument, match="SNOWFLAKE_ACCOUNT"):
        SnowflakeSettings(user="u", password="p").connect_kwargs()
    with pytest.raises(InvalidArgument, match="SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY_FILE"):
        SnowflakeSettings(account="a", user="u").connect_kwargs()
    with (
        SnowflakeExtractor(SnowflakeSettings(account="a", user="u")) as extractor,
        pytest.raises(TerminalSourceError, match="credentials incomplete"),
    ):
        extractor.describe_source("DB.S.T")
