"""Writes over Flight SQL: bulk ingest (adbc_ingest), updates, prepared updates."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pytest

from tests.flightsql.conftest import Connect
from tests.support.server import ServerProcess


def _rows(connect: Connect, token: str, sql: str) -> list[tuple]:
    cur = connect(token).cursor()
    cur.execute(sql)
    return list(cur.fetchall())


def _exists(connect: Connect, token: str, schema: str, table: str) -> bool:
    sql = (
        "SELECT count(*) FROM duckdb_tables() "
        f"WHERE schema_name = '{schema}' AND table_name = '{table}'"
    )
    return _rows(connect, token, sql) == [(1,)]


def test_ingest_modes(connect: Connect, writer_token: str, reader_token: str) -> None:
    cur = connect(writer_token).cursor()
    first = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    assert cur.adbc_ingest("people", first, mode="create", db_schema_name="main") == 3
    # Columns are matched by name, so order does not matter on append.
    more = pa.table({"name": ["d"], "id": [4]})
    assert cur.adbc_ingest("people", more, mode="append", db_schema_name="main") == 1
    assert _rows(connect, reader_token, "SELECT id, name FROM main.people ORDER BY id") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
    ]
    assert cur.adbc_ingest("people", pa.table({"id": [9], "name": ["z"]}), mode="replace") == 1
    assert _rows(connect, reader_token, "SELECT id, name FROM main.people") == [(9, "z")]
    assert cur.adbc_ingest("people", pa.table({"id": [10], "name": ["y"]}), mode="create_append")
    assert _rows(connect, reader_token, "SELECT count(*) FROM main.people") == [(2,)]


def test_ingest_into_new_schema_streams_batches(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    cur = connect(writer_token).cursor()
    batches = [
        pa.record_batch({"n": pa.array(range(i * 50_000, (i + 1) * 50_000), pa.int64())})
        for i in range(4)
    ]
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    assert cur.adbc_ingest("numbers", reader, mode="create", db_schema_name="loaded") == 200_000
    assert _rows(connect, reader_token, "SELECT count(*), sum(n) FROM loaded.numbers") == [
        (200_000, sum(range(200_000)))
    ]


def test_ingest_create_fails_on_existing_and_append_on_missing(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    cur = connect(writer_token).cursor()
    cur.adbc_ingest("once", pa.table({"x": [1]}), mode="create")
    with pytest.raises(adbc_driver_manager.Error, match="already exists"):
        cur.adbc_ingest("once", pa.table({"x": [2]}), mode="create")
    with pytest.raises(adbc_driver_manager.Error, match="does not exist"):
        cur.adbc_ingest("never_created", pa.table({"x": [1]}), mode="append")
    assert _rows(connect, reader_token, "SELECT x FROM main.once") == [(1,)]
    assert not _exists(connect, reader_token, "main", "never_created")


def test_ingest_refused_for_reader(connect: Connect, reader_token: str) -> None:
    cur = connect(reader_token).cursor()
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may not write"):
        cur.adbc_ingest("sneaky", pa.table({"x": [1, 2]}), mode="create")
    assert not _exists(connect, reader_token, "main", "sneaky")


def test_ingest_respects_allow_list(
    connect: Connect, server: ServerProcess, reader_token: str
) -> None:
    token = str(server.create_token("writer", name="loader", tables=["staging.*"])["token"])
    cur = connect(token).cursor()
    assert cur.adbc_ingest("events", pa.table({"e": [1]}), db_schema_name="staging") == 1
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may not access"):
        cur.adbc_ingest("events", pa.table({"e": [1]}), db_schema_name="main")
    assert not _exists(connect, reader_token, "main", "events")


def test_updates_and_parameters(connect: Connect, writer_token: str, reader_token: str) -> None:
    cur = connect(writer_token).cursor()
    cur.execute("CREATE TABLE main.notes (id INTEGER, body VARCHAR)")
    cur.execute("INSERT INTO main.notes VALUES (?, ?)", (1, "first"))
    assert cur.fetchall() == [(1,)]  # rows changed
    cur.executemany("INSERT INTO main.notes VALUES (?, ?)", [(2, "second"), (3, None)])
    assert cur.rowcount == 2
    cur.execute("UPDATE main.notes SET body = upper(body) WHERE id < ?", (3,))
    assert cur.fetchall() == [(2,)]
    assert _rows(connect, reader_token, "SELECT id, body FROM main.notes ORDER BY id") == [
        (1, "FIRST"),
        (2, "SECOND"),
        (3, None),
    ]


def test_prepared_update_is_atomic(connect: Connect, writer_token: str, reader_token: str) -> None:
    cur = connect(writer_token).cursor()
    cur.execute("CREATE TABLE main.strict (id INTEGER PRIMARY KEY)")
    # The second set violates the key: none of the three may land.
    with pytest.raises(adbc_driver_manager.Error, match="(?i)constraint|duplicate"):
        cur.executemany("INSERT INTO main.strict VALUES (?)", [(1,), (1,), (2,)])
    assert _rows(connect, reader_token, "SELECT count(*) FROM main.strict") == [(0,)]


def test_statement_update_without_prepare(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    # ADBC's low-level execute_update on an unprepared statement: CommandStatementUpdate.
    stmt = adbc_driver_manager.AdbcStatement(connect(writer_token).adbc_connection)
    stmt.set_sql_query("CREATE TABLE main.direct AS SELECT 1 AS x")
    stmt.execute_update()
    stmt.set_sql_query("INSERT INTO main.direct VALUES (2), (3)")
    assert stmt.execute_update() == 2
    stmt.set_sql_query("SELECT * FROM main.direct")
    with pytest.raises(adbc_driver_manager.Error, match="CommandStatementQuery"):
        stmt.execute_update()
    stmt.close()

    as_reader = adbc_driver_manager.AdbcStatement(connect(reader_token).adbc_connection)
    as_reader.set_sql_query("DELETE FROM main.direct")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="may only read"):
        as_reader.execute_update()
    as_reader.close()
    assert _rows(connect, reader_token, "SELECT sum(x) FROM main.direct") == [(6,)]
