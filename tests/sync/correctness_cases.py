"""Sync correctness, end to end: one row per key, NULL cursors, constraints, column types.

These cases run twice: `test_sync_embedded.py` (the server's in-process runner) and
`test_sync_celery.py` (a real Celery worker on Redis) import them, and each module's
`snow`, `server` and `http` fixtures (the emulator, a real `agentdata serve`, a REST
client) serve them. The worker reads batches of at most `SYNC_BATCH_ROWS` rows, so
a table of a few thousand rows spans several batches of one run.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tests.support.fakesnow_server import FakesnowServer
from tests.support.server import ServerProcess
from tests.sync.support import (
    cli,
    create_spec,
    rows,
    run_sync,
    source_of,
    start_run,
    wait_for,
)

__all__ = [
    "SYNC_BATCH_ROWS",
    "test_column_types_give_native_integers_and_refuse_values_that_do_not_fit",
    "test_constraints_reach_duckdb_and_a_violating_load_writes_nothing",
    "test_duplicate_keys_fold_to_one_row_per_key",
    "test_null_cursors_under_each_policy_across_three_runs",
]

#: `AGENTDATA_SYNC_BATCH_ROWS` of the modules that import these cases.
SYNC_BATCH_ROWS = 1000
#: Rows in the duplicate-key source: several batches.
DUP_ROWS = 3 * SYNC_BATCH_ROWS


def _constraints(server: ServerProcess, table: str) -> dict[str, list[str]]:
    schema, name = table.split(".")
    found = rows(
        server,
        "SELECT constraint_type AS t, constraint_column_names AS c FROM duckdb_constraints()"
        f" WHERE schema_name = '{schema}' AND table_name = '{name}' ORDER BY 1, 2",
    )
    out: dict[str, list[str]] = {}
    for row in found:
        out.setdefault(row["t"], []).extend(row["c"])
    return {k: sorted(v) for k, v in out.items()}


def _ids(server: ServerProcess, table: str) -> dict[str, int]:
    return rows(server, f"SELECT count(*) AS n, count(DISTINCT ID) AS d FROM {table}")[0]


def test_duplicate_keys_fold_to_one_row_per_key(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    """ID 7 twice in the first batch (the newer version read first), ID 3 again in the
    last batch, ID 11 twice more: one row per key, the greatest cursor kept (ties: the
    last read), in a full load and in an incremental merge, and the count reported."""
    snow.execute(
        "create table DUPS (ID NUMBER(38,0), V VARCHAR, UPDATED_AT TIMESTAMP_NTZ)",
        f"""insert into DUPS select seq8(), 'v' || seq8(),
            dateadd(minute, seq8(), '2024-01-01'::timestamp_ntz)
            from table(generator(rowcount => {DUP_ROWS}))""",
        "update DUPS set V = 'seven, newer', UPDATED_AT = '2024-06-02' where ID = 7",
        "insert into DUPS values (7, 'seven, older', '2024-06-01'),"
        " (3, 'three, last read', '2024-01-01 00:03:00'),"
        " (11, 'eleven a', '2024-06-05'), (11, 'eleven b', '2024-06-05')",
    )
    # A full sync without a cursor: the last row read wins.
    create_spec(
        http,
        name="dups-full",
        source=source_of(snow, "DUPS"),
        target="dup.full",
        primary_key=["ID"],
    )
    full = run_sync(http, "dups-full")["result"]
    assert full["rows_loaded"] == DUP_ROWS + 4 and full["duplicates_folded"] == 4, full
    assert any("folded" in n for n in full["notes"])
    assert _ids(server, "dup.full") == {"n": DUP_ROWS, "d": DUP_ROWS}
    got = {
        r["ID"]: r["V"] for r in rows(server, "SELECT ID, V FROM dup.full WHERE ID IN (3, 7, 11)")
    }
    assert got == {3: "three, last read", 7: "seven, older", 11: "eleven b"}

    # Incremental with a cursor: the greatest cursor wins (ties: the last read).
    create_spec(
        http,
        name="dups-inc",
        source=source_of(snow, "DUPS"),
        target="dup.inc",
        mode="incremental",
        cursor="UPDATED_AT",
        primary_key=["ID"],
    )
    first = run_sync(http, "dups-inc")["result"]
    assert first["plan"]["mode"] == "full" and first["duplicates_folded"] == 4
    got = {
        r["ID"]: r["V"] for r in rows(server, "SELECT ID, V FROM dup.inc WHERE ID IN (3, 7, 11)")
    }
    assert got == {3: "three, last read", 7: "seven, newer", 11: "eleven b"}
    # ID 5 updated twice inside the next window: one row, the later version.
    snow.execute(
        "insert into DUPS values (5, 'five, second', '2024-07-02'), (5, 'five, first', '2024-07-01')"
    )
    second = run_sync(http, "dups-inc")["result"]
    assert second["plan"]["load"] == "upsert" and second["duplicates_folded"] >= 1
    assert rows(server, "SELECT V FROM dup.inc WHERE ID = 5") == [{"V": "five, second"}]
    assert _ids(server, "dup.inc") == {"n": DUP_ROWS, "d": DUP_ROWS}

    # on_duplicate_key: error fails the run naming a key, and writes nothing.
    create_spec(
        http,
        name="dups-strict",
        source=source_of(snow, "DUPS"),
        target="dup.strict",
        primary_key=["ID"],
        on_duplicate_key="error",
    )
    failed = wait_for(http, start_run(http, "dups-strict"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["step"] == "load" and failed["error"]["code"] == "invalid_argument"
    assert "repeating a key, e.g. ID=" in failed["error"]["message"]
    listed = {f"{t['schema']}.{t['name']}" for t in http.get("/api/v1/tables").json()}
    assert "dup.strict" not in listed


def test_null_cursors_under_each_policy_across_three_runs(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    snow.execute(
        "create table NULLC (ID NUMBER(38,0), V VARCHAR, UPDATED_AT TIMESTAMP_NTZ)",
        "insert into NULLC values (1, 'a', '2024-01-01'), (2, 'b', '2024-01-02'),"
        " (3, 'c', NULL), (4, 'd', NULL)",
    )
    base = {"source": source_of(snow, "NULLC"), "mode": "incremental", "cursor": "UPDATED_AT"}
    create_spec(http, name="nulls-include", target="nul.inc", primary_key=["ID"], **base)
    create_spec(
        http, name="nulls-skip", target="nul.skip", primary_key=["ID"], null_cursor="skip", **base
    )
    create_spec(http, name="nulls-error", target="nul.err", **base)  # append: error by default

    def table(name: str) -> dict[int, str]:
        return {r["ID"]: r["V"] for r in rows(server, f"SELECT ID, V FROM {name}")}

    # Run 1.
    inc = run_sync(http, "nulls-include")["result"]
    assert inc["null_cursor"] == {"column": "UPDATED_AT", "policy": "include", "rows": 2}
    assert table("nul.inc") == {1: "a", 2: "b", 3: "c", 4: "d"}
    skip = run_sync(http, "nulls-skip")["result"]
    assert skip["null_cursor"] == {"column": "UPDATED_AT", "policy": "skip", "rows": 2}
    assert table("nul.skip") == {1: "a", 2: "b"}
    failed = wait_for(http, start_run(http, "nulls-error"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["step"] == "plan"
    assert (
        "2 row(s)" in failed["error"]["message"]
        and "NULL cursor UPDATED_AT" in failed["error"]["message"]
    )
    listed = {f"{t['schema']}.{t['name']}" for t in http.get("/api/v1/tables").json()}
    assert "nul.err" not in listed

    # Run 2: a NULL-cursor row changes (its cursor stays NULL), another gets a cursor.
    snow.execute(
        "update NULLC set V = 'c2' where ID = 3",
        "update NULLC set V = 'd2', UPDATED_AT = '2024-02-01' where ID = 4",
    )
    inc = run_sync(http, "nulls-include")["result"]
    assert inc["null_cursor"]["rows"] == 1  # ID 3, re-read although older than any bound
    assert table("nul.inc") == {1: "a", 2: "b", 3: "c2", 4: "d2"}
    skip = run_sync(http, "nulls-skip")["result"]
    assert skip["null_cursor"]["rows"] == 1
    assert table("nul.skip") == {1: "a", 2: "b", 4: "d2"}
    failed = wait_for(http, start_run(http, "nulls-error"))
    assert failed["state"] == "failed" and "1 row(s)" in failed["error"]["message"]

    # Run 3: the last NULL cursor gets a value; a new row arrives with none.
    snow.execute(
        "update NULLC set UPDATED_AT = '2024-03-01' where ID = 3",
        "insert into NULLC values (5, 'e', NULL)",
    )
    inc = run_sync(http, "nulls-include")["result"]
    assert inc["null_cursor"]["rows"] == 1
    assert table("nul.inc") == {1: "a", 2: "b", 3: "c2", 4: "d2", 5: "e"}
    skip = run_sync(http, "nulls-skip")["result"]
    assert skip["null_cursor"]["rows"] == 1
    assert any("left out (null_cursor: skip)" in n for n in skip["notes"])
    assert table("nul.skip") == {1: "a", 2: "b", 3: "c2", 4: "d2"}
    snow.execute("update NULLC set UPDATED_AT = '2024-04-01' where ID = 5")
    done = run_sync(http, "nulls-error")["result"]  # no NULL cursor left: the append runs
    assert done["null_cursor"] == {"column": "UPDATED_AT", "policy": "error", "rows": 0}
    assert table("nul.err") == {1: "a", 2: "b", 3: "c2", 4: "d2", 5: "e"}

    # `agentdata sync status` shows the count and the policy.
    status = cli(server, "status", "nulls-skip")
    assert status.returncode == 0, status.stderr
    assert "NULL cursor UPDATED_AT: 1 rows left out (null_cursor: skip)" in status.stdout


def test_constraints_reach_duckdb_and_a_violating_load_writes_nothing(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    snow.execute(
        "create table KEYED (ID NUMBER(38,0) NOT NULL PRIMARY KEY, NAME VARCHAR NOT NULL,"
        " NOTE VARCHAR, UPDATED_AT TIMESTAMP_NTZ)",
        "insert into KEYED values (1, 'a', NULL, '2024-01-01'), (2, 'b', 'x', '2024-01-02')",
    )
    # No primary_key in the spec: the source table's own key is used.
    create_spec(
        http,
        name="keyed",
        source=source_of(snow, "KEYED"),
        target="con.keyed",
        mode="incremental",
        cursor="UPDATED_AT",
    )
    first = run_sync(http, "keyed")["result"]
    assert first["plan"]["key"] == ["ID"] and first["plan"]["key_from"] == "source"
    expected = {"NOT NULL": ["ID", "NAME"], "PRIMARY KEY": ["ID"]}
    assert _constraints(server, "con.keyed") == expected
    assert first["constraints"] == {"primary_key": ["ID"], "not_null": ["ID", "NAME"]}
    snow.execute(
        "update KEYED set NAME = 'b2', UPDATED_AT = '2024-02-01' where ID = 2",
        "insert into KEYED values (3, 'c', NULL, '2024-02-01')",
    )
    second = run_sync(http, "keyed")["result"]
    assert second["plan"]["load"] == "upsert"
    assert _constraints(server, "con.keyed") == expected
    # The key is an index: a point lookup uses it.
    plan = rows(server, "EXPLAIN ANALYZE SELECT * FROM con.keyed WHERE ID = 2")
    assert "Index Scan" in plan[0]["explain_value"]

    # A spec's key over a column holding a NULL: the load breaks NOT NULL, nothing lands.
    snow.execute(
        "create table LOOSE (K NUMBER(38,0), V VARCHAR)", "insert into LOOSE values (1, 'a')"
    )
    create_spec(
        http, name="loose", source=source_of(snow, "LOOSE"), target="con.loose", primary_key=["K"]
    )
    run_sync(http, "loose")
    assert _constraints(server, "con.loose") == {"NOT NULL": ["K"], "PRIMARY KEY": ["K"]}
    snow.execute("insert into LOOSE values (NULL, 'b'), (2, 'c')")
    failed = wait_for(http, start_run(http, "loose"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["step"] == "load"
    assert (
        "breaks a constraint" in failed["error"]["message"]
        and "NOT NULL" in failed["error"]["message"]
    )
    assert rows(server, "SELECT K, V FROM con.loose") == [{"K": 1, "V": "a"}]


def test_column_types_give_native_integers_and_refuse_values_that_do_not_fit(
    snow: FakesnowServer, server: ServerProcess, http: Any
) -> None:
    snow.execute(
        "create table WIDE (ID NUMBER(38,0), PRICE NUMBER(10,2), QTY NUMBER(38,0))",
        "insert into WIDE values (1, 9.99, 7), (2, 100.50, 100000)",
    )
    create_spec(
        http,
        name="wide",
        source=source_of(snow, "WIDE"),
        target="typ.wide",
        primary_key=["ID"],
        column_types={"id": "BIGINT", "QTY": "INTEGER"},
    )
    run_sync(http, "wide")
    types = {r["column_name"]: r["column_type"] for r in rows(server, "DESCRIBE typ.wide")}
    assert types == {"ID": "BIGINT", "PRICE": "DECIMAL(10,2)", "QTY": "INTEGER"}
    assert rows(server, "SELECT * FROM typ.wide ORDER BY ID") == [
        {"ID": 1, "PRICE": Decimal("9.99"), "QTY": 7},
        {"ID": 2, "PRICE": Decimal("100.50"), "QTY": 100000},
    ]
    # QTY as SMALLINT: 100000 does not fit; the run fails naming the column.
    r = http.patch("/api/v1/syncs/wide", json={"column_types": {"ID": "BIGINT", "QTY": "SMALLINT"}})
    assert r.status_code == 200, r.text
    failed = wait_for(http, start_run(http, "wide"))
    assert failed["state"] == "failed" and failed["attempts"] == 1
    assert "'QTY'" in failed["error"]["message"] and "SMALLINT" in failed["error"]["message"]
    assert json.loads(json.dumps(rows(server, "SELECT count(*) AS n FROM typ.wide"))) == [{"n": 2}]
