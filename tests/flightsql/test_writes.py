"""Writes over Flight SQL: bulk ingest (adbc_ingest), updates, prepared updates, and DML
with RETURNING on every channel (plain Flight, the `execute` action, ADBC)."""

from __future__ import annotations

import json

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as fl
import pyarrow.ipc as ipc
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


def test_executemany_inserts_a_large_batch_as_one_statement(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    """50,000 parameter sets in one executemany: one set-based INSERT ... SELECT over the
    bound batch (row by row, this many would take minutes), with every value, NULL and
    expression intact and in order."""
    cur = connect(writer_token).cursor()
    cur.execute("CREATE TABLE main.events (id BIGINT, kind VARCHAR, score DOUBLE, seq INTEGER)")
    rows = [(i, None if i % 7 == 0 else f"k{i % 5}", i / 4) for i in range(50_000)]
    cur.executemany(
        "INSERT INTO main.events (id, kind, score, seq) VALUES (?, upper(?), ? * 2, 1 + $1::INT)",
        rows,
    )
    assert cur.rowcount == 50_000
    summary = _rows(
        connect,
        reader_token,
        "SELECT count(*), count(kind), sum(score), min(seq), max(seq), "
        "count(*) FILTER (WHERE kind = 'K3') FROM main.events",
    )
    assert summary == [
        (
            50_000,
            50_000 - len(range(0, 50_000, 7)),
            sum(r[2] * 2 for r in rows),
            1,
            50_000,
            sum(1 for r in rows if r[1] == "k3"),
        ),
    ]


def test_executemany_updates_a_batch_larger_than_row_by_row_allows(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    """An UPDATE batch runs as one set-based UPDATE ... FROM the batch: more sets than
    the row-by-row limit allows (which would be refused) land, each on its row."""
    from agentdata.param_batches import MAX_ROW_BY_ROW

    n = MAX_ROW_BY_ROW + 20_000
    cur = connect(writer_token).cursor()
    cur.execute("CREATE TABLE main.wide (id BIGINT PRIMARY KEY, name VARCHAR)")
    cur.executemany("INSERT INTO main.wide VALUES (?, ?)", [(i, None) for i in range(n)])
    cur.executemany("UPDATE main.wide SET name = ? WHERE id = ?", [(f"n{i}", i) for i in range(n)])
    assert cur.rowcount == n
    assert _rows(
        connect,
        reader_token,
        "SELECT count(*), count(*) FILTER (WHERE name = 'n' || id) FROM main.wide",
    ) == [(n, n)]


def test_executemany_with_returning_and_row_by_row_statements(
    connect: Connect, writer_token: str, reader_token: str
) -> None:
    cur = connect(writer_token).cursor()
    cur.execute("CREATE TABLE main.tags (id INTEGER PRIMARY KEY, tag VARCHAR)")
    cur.executemany("INSERT INTO main.tags VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    # Two sets on one row: the UPDATE runs set by set (together), so both apply in order.
    cur.executemany(
        "UPDATE main.tags SET tag = tag || ? WHERE id = ?", [("!", 1), ("?", 3), ("+", 1)]
    )
    assert cur.rowcount == 3
    # Several VALUES rows, or ON CONFLICT, also run row by row.
    cur.executemany(
        "INSERT INTO main.tags VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET tag = excluded.tag",
        [(4, "d"), (4, "e")],
    )
    assert _rows(connect, reader_token, "SELECT id, tag FROM main.tags ORDER BY id") == [
        (1, "a!+"),
        (2, "b"),
        (3, "c?"),
        (4, "e"),
    ]
    # DELETE runs set-based: a row matched by two sets is deleted (and counted) once.
    cur.executemany("DELETE FROM main.tags WHERE id = ?", [(2,), (2,), (9,)])
    assert cur.rowcount == 1
    assert _rows(connect, reader_token, "SELECT id FROM main.tags ORDER BY id") == [
        (1,),
        (3,),
        (4,),
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


# -- DML with RETURNING ------------------------------------------------------------------


def _flight_command(server: ServerProcess, token: str, sql: str) -> tuple[pa.Schema, pa.Table]:
    """Plain Flight: GetFlightInfo of a command (its stated schema), then DoGet."""
    client = server.flight()
    options = server.options(token)
    descriptor = fl.FlightDescriptor.for_command(sql.encode())
    info = client.get_flight_info(descriptor, options)
    assert client.get_schema(descriptor, options).schema == info.schema
    return info.schema, client.do_get(info.endpoints[0].ticket, options).read_all()


def _execute_action(server: ServerProcess, token: str, sql: str) -> tuple[dict, pa.Table | None]:
    results = list(
        server.flight().do_action(fl.Action("execute", sql.encode()), server.options(token))
    )
    summary = json.loads(results[0].body.to_pybytes())
    returned = ipc.open_stream(results[1].body).read_all() if len(results) > 1 else None
    return summary, returned


def test_returning_gives_the_returned_rows_on_every_channel(
    server: ServerProcess, connect: Connect, writer_token: str, reader_token: str
) -> None:
    server.execute(writer_token, "CREATE TABLE main.ret (a INTEGER, j JSON)")
    # Plain Flight: the stated schema is the returned columns', before anything runs.
    schema, got = _flight_command(
        server,
        writer_token,
        "INSERT INTO main.ret VALUES (10, NULL), (20, NULL), (30, '{}') RETURNING a",
    )
    assert schema == got.schema == pa.schema([pa.field("a", pa.int32())])
    assert got.to_pydict() == {"a": [10, 20, 30]}
    schema, got = _flight_command(
        server,
        writer_token,
        "UPDATE main.ret AS r SET a = a + 1 WHERE a > 10 RETURNING r.a, a * 2 AS twice",
    )
    assert schema == got.schema and got.to_pydict() == {"a": [21, 31], "twice": [42, 62]}

    # The execute action: the count, then the rows as an Arrow IPC stream.
    summary, returned = _execute_action(
        server, writer_token, "DELETE FROM main.ret WHERE a = 21 RETURNING a, j"
    )
    assert summary == {"rows": 1, "returning": ["a", "j"]}
    assert returned is not None and returned.to_pydict() == {"a": [21], "j": [None]}
    assert returned.schema.field("j").type == pa.json_()  # JSON columns say so
    summary, returned = _execute_action(server, writer_token, "UPDATE main.ret SET a = a")
    assert summary == {"rows": 2} and returned is None  # plain DML: the count only

    # ADBC (Flight SQL), a statement and a prepared one: rows back, rowcount = rows.
    cur = connect(writer_token).cursor()
    cur.execute("INSERT INTO main.ret VALUES (40, NULL), (50, '[1]') RETURNING a, j")
    assert cur.fetchall() == [(40, None), (50, "[1]")]
    assert cur.rowcount == 2
    cur.execute("DELETE FROM main.ret WHERE a >= ? RETURNING a", (40,))
    assert sorted(cur.fetchall()) == [(40,), (50,)]
    stmt = adbc_driver_manager.AdbcStatement(connect(writer_token).adbc_connection)
    stmt.set_sql_query("UPDATE main.ret SET a = a + 100 RETURNING a")
    assert stmt.execute_update() == 2  # rows changed (= rows returned)
    stmt.close()
    assert _rows(connect, reader_token, "SELECT a FROM main.ret ORDER BY a") == [(110,), (131,)]
    # MERGE ... RETURNING: no SELECT states its columns; the schema is still exact.
    schema, got = _flight_command(
        server,
        writer_token,
        "MERGE INTO main.ret USING (SELECT 110 AS a) s ON ret.a = s.a "
        "WHEN MATCHED THEN UPDATE SET a = 7 RETURNING merge_action, a",
    )
    assert schema == got.schema and got.to_pylist() == [{"merge_action": "UPDATE", "a": 7}]
    assert _rows(connect, reader_token, "SELECT a FROM main.ret ORDER BY a") == [(7,), (131,)]


def test_returning_is_a_write_for_readers(
    server: ServerProcess, connect: Connect, reader_token: str
) -> None:
    with pytest.raises(fl.FlightUnauthorizedError, match="may only read"):
        _flight_command(server, reader_token, "DELETE FROM main.ret RETURNING a")
    assert _rows(connect, reader_token, "SELECT count(*) FROM main.ret") == [(2,)]
