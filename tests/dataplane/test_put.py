"""DoPut: append, replace and upsert are atomic; readers keep their snapshot; a
client that drops mid-upload leaves the table untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.server import ServerProcess


def _put(
    server: ServerProcess, token: str, descriptor: fl.FlightDescriptor, table: pa.Table
) -> dict:
    writer, reader = server.flight().do_put(descriptor, table.schema, server.options(token))
    writer.write_table(table, max_chunksize=max(1, table.num_rows // 3))
    writer.done_writing()
    meta = reader.read()
    writer.close()
    return json.loads(meta.to_pybytes())


def _cmd(**doc: object) -> fl.FlightDescriptor:
    return fl.FlightDescriptor.for_command(json.dumps(doc).encode())


def test_append_creates_then_appends(server: ServerProcess, writer_token: str) -> None:
    t = pa.table({"id": [1, 2, 3], "name": ["a", "b", None]})
    assert _put(server, writer_token, fl.FlightDescriptor.for_path("puts", "events"), t) == {
        "table": "puts.events",
        "rows": 3,
        "created": True,
        "deleted": 0,
        "schema_changes": {},
        "duplicates_folded": 0,
    }
    # Columns in another order still land by name.
    t2 = pa.table({"name": ["d"], "id": [4]})
    assert (
        _put(server, writer_token, fl.FlightDescriptor.for_path("puts", "events"), t2)["rows"] == 1
    )
    got = server.query(writer_token, "SELECT * FROM puts.events ORDER BY id")
    assert got.to_pydict() == {"id": [1, 2, 3, 4], "name": ["a", "b", None, "d"]}


def test_replace_and_upsert(server: ServerProcess, writer_token: str) -> None:
    base = pa.table({"k": [1, 2, 3], "v": ["one", "two", "three"]})
    _put(server, writer_token, _cmd(table="puts.kv", mode="replace"), base)
    up = pa.table({"k": [2, 4], "v": ["TWO", "four"]})
    assert (
        _put(server, writer_token, _cmd(table="puts.kv", mode="upsert", key=["k"]), up)["rows"] == 2
    )
    assert server.query(writer_token, "SELECT * FROM puts.kv ORDER BY k").to_pydict() == {
        "k": [1, 2, 3, 4],
        "v": ["one", "TWO", "three", "four"],
    }
    # The same upsert again changes nothing.
    _put(server, writer_token, _cmd(table="puts.kv", mode="upsert", key=["k"]), up)
    assert server.query(writer_token, "SELECT count(*) AS n FROM puts.kv").to_pydict() == {"n": [4]}
    replaced = pa.table({"k": [9], "v": ["nine"]})
    _put(server, writer_token, _cmd(table="puts.kv", mode="replace"), replaced)
    assert server.query(writer_token, "SELECT * FROM puts.kv").to_pydict() == {
        "k": [9],
        "v": ["nine"],
    }


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"table": "puts.kv", "mode": "merge"}, "mode must be"),
        ({"table": "puts.kv", "mode": "upsert"}, "needs a non-empty 'key'"),
        ({"table": "puts.kv", "mode": "reconcile"}, "needs a non-empty 'key'"),
        ({"table": "puts.kv", "evolve": "yes"}, "evolve must be"),
        ({"table": "puts.kv", "colour": "red"}, "unknown DoPut option"),
        ({"table": "puts.kv", "mode": "upsert", "key": ["nope"]}, "key column"),
        ({"mode": "append"}, "table"),
        ({"table": "puts.kv", "on_duplicate_key": "ignore"}, "on_duplicate_key must be"),
        ({"table": "puts.kv", "primary_key": "k"}, "primary_key must be a list"),
        ({"table": "puts.kv", "primary_key": ["nope"]}, "constraint on column 'nope'"),
        ({"table": "puts.kv", "latest_by": "nope"}, "latest_by column"),
        ({"table": "a.b.c.d"}, "schema.table"),
    ],
)
def test_bad_put_commands(server: ServerProcess, writer_token: str, doc: dict, match: str) -> None:
    with pytest.raises(pa.ArrowInvalid, match=match):
        _put(server, writer_token, _cmd(**doc), pa.table({"k": [1], "v": ["x"]}))


def test_type_mismatch_leaves_table_untouched(server: ServerProcess, writer_token: str) -> None:
    _put(server, writer_token, _cmd(table="puts.typed", mode="replace"), pa.table({"n": [1, 2]}))
    with pytest.raises(pa.ArrowInvalid):
        _put(server, writer_token, _cmd(table="puts.typed"), pa.table({"n": ["not a number"]}))
    assert server.query(writer_token, "SELECT n FROM puts.typed ORDER BY n").to_pydict() == {
        "n": [1, 2]
    }


def test_reader_streaming_old_table_keeps_its_snapshot(
    server: ServerProcess, writer_token: str
) -> None:
    n = 400_000
    server.execute(
        writer_token,
        f"CREATE OR REPLACE TABLE puts.snap AS SELECT range AS id, 'old' AS gen FROM range({n})",
    )
    client = server.flight()
    opts = server.options(writer_token)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(b"SELECT * FROM puts.snap"), opts)
    stream = client.do_get(info.endpoints[0].ticket, opts)
    first = stream.read_chunk().data  # the query is running now
    # Swap the table while the stream is open.
    new = pa.table({"id": pa.array(range(10), pa.int64()), "gen": ["new"] * 10})
    assert _put(server, writer_token, _cmd(table="puts.snap", mode="replace"), new)["rows"] == 10
    rest = stream.read_all()
    rows = first.num_rows + rest.num_rows
    gens = set(first.column("gen").to_pylist()) | set(rest.column("gen").to_pylist())
    assert rows == n and gens == {"old"}
    assert server.query(writer_token, "SELECT DISTINCT gen FROM puts.snap").to_pydict() == {
        "gen": ["new"]
    }


def test_client_dropping_mid_upload_leaves_table_untouched(
    server: ServerProcess, writer_token: str
) -> None:
    server.execute(
        writer_token, "CREATE OR REPLACE TABLE puts.fragile AS SELECT range AS id FROM range(5)"
    )
    # A separate process streams batches, then dies without finishing the upload.
    script = textwrap.dedent(
        f"""
        import os, pyarrow as pa, pyarrow.flight as fl
        c = fl.connect("{server.flight_url}")
        opts = fl.FlightCallOptions(headers=[(b"authorization", b"Bearer {writer_token}")])
        d = fl.FlightDescriptor.for_command(b'{{"table": "puts.fragile", "mode": "replace"}}')
        batch = pa.record_batch([pa.array(range(100_000), pa.int64())], names=["id"])
        w, _ = c.do_put(d, batch.schema, opts)
        for _ in range(20):
            w.write_batch(batch)
        os._exit(1)
        """
    )
    log_start = len(server.log())
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == 1
    # The server notices the broken upload and gives it up (it logs why); from then on
    # nothing more can land, so the table is checked after that.
    deadline = time.monotonic() + 30
    while "the client went away before finishing the upload" not in server.log()[log_start:]:
        assert time.monotonic() < deadline, server.log()[log_start:]
        time.sleep(0.1)
    got = server.query(writer_token, "SELECT count(*) AS n, sum(id) AS s FROM puts.fragile")
    assert got.to_pydict() == {"n": [5], "s": [10]}
    # No staging table is visible.
    names = (
        server.query(server.admin_token, "SELECT table_name FROM duckdb_tables()")
        .column(0)
        .to_pylist()
    )
    assert not [n for n in names if n.startswith("stage_")]


def test_concurrent_puts_to_one_table_all_land(server: ServerProcess, writer_token: str) -> None:
    server.execute(writer_token, "CREATE OR REPLACE TABLE puts.many (w INTEGER, i BIGINT)")
    errors: list[BaseException] = []

    def put(w: int) -> None:
        try:
            t = pa.table(
                {"w": pa.array([w] * 1000, pa.int32()), "i": pa.array(range(1000), pa.int64())}
            )
            _put(server, writer_token, _cmd(table="puts.many"), t)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=put, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.query(
        writer_token, "SELECT count(*) AS n, count(DISTINCT w) AS ws FROM puts.many"
    ).to_pydict() == {
        "n": [8000],
        "ws": [8],
    }


def test_evolve_adds_and_widens_columns_and_reports_missing(
    server: ServerProcess, writer_token: str
) -> None:
    first = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "price": pa.array([1, 2], pa.int32()),
            "gone": ["a", "b"],
        }
    )
    _put(server, writer_token, _cmd(table="puts.evolving", mode="replace"), first)
    second = pa.table(
        {
            "id": pa.array([3], pa.int64()),  # INTEGER -> BIGINT: widened
            "price": pa.array([2.5], pa.float64()),  # INTEGER -> DOUBLE: widened
            "added": ["new"],  # new column
        }
    )
    result = _put(server, writer_token, _cmd(table="puts.evolving", evolve=True), second)
    assert result["schema_changes"] == {
        "added": ["added"],
        "widened": ["id", "price"],
        "missing": ["gone"],
    }
    got = server.query(writer_token, "SELECT * FROM puts.evolving ORDER BY id")
    assert (
        got.schema.field("id").type == pa.int64() and got.schema.field("price").type == pa.float64()
    )
    assert got.to_pydict() == {
        "id": [1, 2, 3],
        "price": [1.0, 2.0, 2.5],
        "gone": ["a", "b", None],
        "added": [None, None, "new"],
    }


def test_evolve_refuses_incompatible_change_and_writes_nothing(
    server: ServerProcess, writer_token: str
) -> None:
    _put(
        server,
        writer_token,
        _cmd(table="puts.strict", mode="replace"),
        pa.table({"id": [1], "when": ["x"]}),
    )
    bad = pa.table({"id": [2], "when": pa.array([1.5], pa.float64())})  # VARCHAR -> DOUBLE
    with pytest.raises(
        pa.ArrowInvalid, match=r"incompatible schema change on puts.strict.when: VARCHAR -> DOUBLE"
    ):
        _put(server, writer_token, _cmd(table="puts.strict", evolve=True), bad)
    assert server.query(writer_token, "SELECT * FROM puts.strict").to_pydict() == {
        "id": [1],
        "when": ["x"],
    }


def test_reconcile_deletes_keys_missing_from_upload_and_records_snapshot(
    server: ServerProcess, writer_token: str
) -> None:
    _put(
        server,
        writer_token,
        _cmd(table="puts.rec", mode="replace"),
        pa.table({"k": [1, 2, 3, 4], "v": list("abcd")}),
    )
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.rec", mode="reconcile", key=["k"], snapshot="snap-42"),
        pa.table({"k": [1, 3]}),
    )
    assert result["deleted"] == 2
    assert server.query(writer_token, "SELECT * FROM puts.rec ORDER BY k").to_pydict() == {
        "k": [1, 3],
        "v": ["a", "c"],
    }
    info = [
        i
        for i in server.flight().list_flights(options=server.options(writer_token))
        if i.descriptor.path == [b"puts", b"rec"]
    ][0]
    meta = json.loads(info.app_metadata)
    assert meta["source_snapshot"] == "snap-42" and meta["last_synced"] is not None


# -- one row per key, constraints ------------------------------------------------------


def _constraints(server: ServerProcess, token: str, table: str) -> dict[str, list[str]]:
    schema, name = table.split(".")
    got = server.query(
        token,
        "SELECT constraint_type AS t, constraint_column_names AS c FROM duckdb_constraints()"
        f" WHERE schema_name = '{schema}' AND table_name = '{name}' ORDER BY 1, 2",
    ).to_pylist()
    out: dict[str, list[str]] = {}
    for row in got:
        out.setdefault(row["t"], []).extend(row["c"])
    return out


def test_upsert_keeps_the_last_row_per_key_and_counts_the_folded(
    server: ServerProcess, writer_token: str
) -> None:
    _put(
        server,
        writer_token,
        _cmd(table="puts.once", mode="replace"),
        pa.table({"k": [1, 2], "v": ["one", "two"]}),
    )
    # Key 7 twice in one batch, key 2 in two batches (_put sends three batches): last wins.
    up = pa.table({"k": [7, 7, 2, 3, 2, 7], "v": ["a", "b", "c", "d", "e", "f"]})
    result = _put(server, writer_token, _cmd(table="puts.once", mode="upsert", key=["k"]), up)
    assert result["rows"] == 6 and result["duplicates_folded"] == 3 and result["deleted"] == 1
    assert server.query(writer_token, "SELECT * FROM puts.once ORDER BY k").to_pydict() == {
        "k": [1, 2, 3, 7],
        "v": ["one", "e", "d", "f"],
    }
    # latest_by: the greatest value wins, whatever the order; ties go to the last row.
    newer = pa.table({"k": [5, 5, 5, 6, 6], "v": ["x", "y", "z", "p", "q"], "ts": [3, 9, 1, 4, 4]})
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.once", mode="upsert", key=["k"], latest_by="ts", evolve=True),
        newer,
    )
    assert result["duplicates_folded"] == 3
    got = server.query(writer_token, "SELECT k, v FROM puts.once WHERE k IN (5, 6) ORDER BY k")
    assert got.to_pydict() == {"k": [5, 6], "v": ["y", "q"]}


def test_duplicate_keys_can_be_refused_with_nothing_written(
    server: ServerProcess, writer_token: str
) -> None:
    _put(server, writer_token, _cmd(table="puts.dup", mode="replace"), pa.table({"k": [1]}))
    with pytest.raises(pa.ArrowInvalid, match=r"repeating a key, e\.g\. k=9 \(2 rows\)"):
        _put(
            server,
            writer_token,
            _cmd(table="puts.dup", mode="upsert", key=["k"], on_duplicate_key="error"),
            pa.table({"k": [9, 8, 9]}),
        )
    assert server.query(writer_token, "SELECT k FROM puts.dup").to_pydict() == {"k": [1]}
    # Reconcile counts repeated keys the same way (they delete nothing twice).
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.dup", mode="reconcile", key=["k"]),
        pa.table({"k": [1, 1, 1]}),
    )
    assert (result["duplicates_folded"], result["deleted"]) == (2, 0)


def test_primary_key_and_not_null_become_constraints_and_guard_later_loads(
    server: ServerProcess, writer_token: str
) -> None:
    rows = pa.table({"id": [1, 2, 1], "name": ["a", "b", "c"], "note": [None, "n", None]})
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.keyed", mode="replace", primary_key=["id"], not_null=["name"]),
        rows,
    )
    assert result["duplicates_folded"] == 1
    assert result["constraints"] == {"primary_key": ["id"], "not_null": ["id", "name"]}
    assert _constraints(server, writer_token, "puts.keyed") == {
        "NOT NULL": ["id", "name"],
        "PRIMARY KEY": ["id"],
    }
    # An append repeating a key already in the table, or a NULL name: refused, nothing written.
    with pytest.raises(pa.ArrowInvalid, match="breaks a constraint.*Duplicate key"):
        _put(
            server,
            writer_token,
            _cmd(table="puts.keyed"),
            pa.table({"id": [3, 2], "name": ["x", "y"]}),
        )
    with pytest.raises(pa.ArrowInvalid, match="breaks a constraint.*NOT NULL"):
        _put(
            server,
            writer_token,
            _cmd(table="puts.keyed", mode="upsert", key=["id"]),
            pa.table({"id": [4, 5], "name": ["x", None]}),
        )
    assert server.query(writer_token, "SELECT * FROM puts.keyed ORDER BY id").to_pydict() == {
        "id": [1, 2],
        "name": ["c", "b"],
        "note": [None, "n"],
    }
    # The key is an index: a point lookup scans the index, not the table.
    plan = server.query(
        server.admin_token, "EXPLAIN ANALYZE SELECT * FROM puts.keyed WHERE id = 2"
    ).to_pylist()
    assert "Index Scan" in plan[0]["explain_value"]


def test_constraints_are_brought_to_an_existing_table(
    server: ServerProcess, writer_token: str
) -> None:
    _put(
        server,
        writer_token,
        _cmd(table="puts.later", mode="replace"),
        pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["a", None]}),
    )
    # A key added to a table that had none; a NOT NULL its rows break is refused.
    with pytest.raises(pa.ArrowInvalid, match="NOT NULL"):
        _put(
            server,
            writer_token,
            _cmd(table="puts.later", mode="upsert", key=["id"], primary_key=["id"], not_null=["v"]),
            pa.table({"id": pa.array([3], pa.int32()), "v": ["c"]}),
        )
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.later", mode="upsert", key=["id"], primary_key=["id"], not_null=[]),
        pa.table({"id": pa.array([3], pa.int32()), "v": ["c"]}),
    )
    assert result["constraints"] == {"primary_key": ["id"], "not_null": ["id"]}
    # The key column widens (INTEGER -> BIGINT): DuckDB cannot alter a key column in
    # place, so the table is rebuilt in the load's transaction, key and rows kept.
    wider = pa.table({"id": pa.array([2**40], pa.int64()), "v": ["big"]})
    result = _put(
        server,
        writer_token,
        _cmd(table="puts.later", mode="upsert", key=["id"], evolve=True, primary_key=["id"]),
        wider,
    )
    assert result["schema_changes"]["widened"] == ["id"]
    got = server.query(writer_token, "SELECT * FROM puts.later ORDER BY id")
    assert got.schema.field("id").type == pa.int64()
    assert got.to_pydict() == {"id": [1, 2, 3, 2**40], "v": ["a", None, "c", "big"]}
    assert _constraints(server, writer_token, "puts.later")["PRIMARY KEY"] == ["id"]


def test_put_descriptions_fill_what_is_not_described_yet(
    server: ServerProcess, writer_token: str
) -> None:
    """A sync sends its source's comments with the load (`descriptions`); they become the
    table's and columns' descriptions where none is set, and never replace an admin's."""
    t = pa.table({"id": [1], "city": ["Oslo"]})
    words = {"table": "one row per office", "columns": {"city": "where it is", "nope": "x"}}
    _put(server, writer_token, _cmd(table="puts.offices", mode="replace", descriptions=words), t)

    def described() -> dict:
        with server.http() as http:
            tables = http.get("/api/v1/tables").json()
        return next(x for x in tables if x["schema"] == "puts" and x["name"] == "offices")

    entry = described()
    assert entry["description"] == "one row per office"
    assert {c["name"]: c.get("description") for c in entry["columns"]} == {
        "id": None,
        "city": "where it is",
    }
    with server.http() as http:
        r = http.patch("/api/v1/tables/puts/offices", json={"columns": {"city": "by ops"}})
        assert r.status_code == 200, r.text
    _put(server, writer_token, _cmd(table="puts.offices", mode="replace", descriptions=words), t)
    assert {c["name"]: c.get("description") for c in described()["columns"]}["city"] == "by ops"
    with pytest.raises(pa.ArrowInvalid, match=r"\[invalid_argument\] descriptions"):
        _put(server, writer_token, _cmd(table="puts.offices", descriptions={"oops": 1}), t)
    # A dropped table's descriptions go with it: a new table of that name starts bare.
    server.execute(writer_token, "DROP TABLE puts.offices")
    server.execute(writer_token, "CREATE TABLE puts.offices (id INTEGER, city VARCHAR)")
    entry = described()
    assert entry["description"] is None
    assert all(c.get("description") is None for c in entry["columns"])
