"""Untrusted SQL cannot reach files, extensions, settings or other databases, and a
reader cannot write. Each attempt is refused with the right code, and afterwards
nothing on disk or in the database has changed."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.server import ServerProcess

DENIED = fl.FlightUnauthorizedError  # PERMISSION_DENIED
INVALID = pa.ArrowInvalid  # INVALID_ARGUMENT


def _attempts(target: Path) -> list[tuple[str, str, type[Exception]]]:
    """(role, sql, expected error) — role is reader, writer, admin or limited."""
    t = str(target)
    return [
        ("reader", "SELECT * FROM read_csv('/etc/passwd')", DENIED),
        ("reader", "SELECT * FROM read_text('/etc/passwd')", DENIED),
        ("reader", "SELECT * FROM read_json_auto('/etc/hostname')", DENIED),
        ("reader", f"SELECT * FROM read_parquet('{t}/x.parquet')", DENIED),
        ("reader", "SELECT * FROM glob('/*')", DENIED),
        ("admin", "SELECT * FROM sniff_csv('/etc/passwd')", DENIED),
        ("reader", f"COPY demo.orders TO '{t}/out.csv'", DENIED),
        ("admin", f"COPY (SELECT 42) TO '{t}/out.parquet' (FORMAT parquet)", DENIED),
        ("writer", f"ATTACH '{t}/other.duckdb' AS other", DENIED),
        ("admin", "ATTACH ':memory:' AS scratch", DENIED),
        ("admin", "DETACH data", DENIED),
        ("admin", "INSTALL httpfs", DENIED),
        ("admin", "LOAD httpfs", DENIED),
        ("admin", "SET enable_external_access = true", DENIED),
        ("reader", "SET threads = 1", DENIED),
        ("admin", "RESET memory_limit", DENIED),
        ("admin", "USE memory", DENIED),
        ("reader", "PRAGMA enable_profiling", DENIED),
        ("admin", "PRAGMA database_list", DENIED),
        ("reader", "CALL pragma_version()", DENIED),
        ("admin", f"EXPORT DATABASE '{t}/dump'", DENIED),
        (
            "writer",
            f"CREATE TABLE main.stolen AS SELECT * FROM read_csv('{t}/../../etc/passwd')",
            DENIED,
        ),
        ("writer", "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", DENIED),
        ("reader", "INSERT INTO demo.products VALUES (9999, 'x', 'y', 1.00)", DENIED),
        ("reader", "UPDATE demo.products SET price = 0", DENIED),
        ("reader", "DELETE FROM demo.orders", DENIED),
        ("reader", "DROP TABLE demo.orders", DENIED),
        ("reader", "CREATE TABLE main.mine AS SELECT 1 AS x", DENIED),
        ("reader", "ALTER TABLE demo.orders ADD COLUMN pwned INTEGER", DENIED),
        ("reader", "SELECT 1; DROP TABLE demo.orders", INVALID),
        ("writer", f"SELECT 1; COPY demo.orders TO '{t}/x.csv'", INVALID),
        ("reader", "BEGIN TRANSACTION", DENIED),
        ("limited", "SELECT * FROM demo.orders", DENIED),
        ("limited", "WITH x AS (SELECT * FROM demo.orders) SELECT count(*) FROM x", DENIED),
        ("limited", "SELECT (SELECT max(amount) FROM demo.orders) AS m", DENIED),
        (
            "limited",
            "SELECT * FROM demo.customers WHERE id IN (SELECT customer_id FROM demo.orders)",
            DENIED,
        ),
        ("limited", "SELECT * FROM query('SELECT * FROM demo.orders')", DENIED),
        ("limited", "SELECT * FROM query_table('demo.orders')", DENIED),
        ("limited", "SELECT * FROM shadow.orders_view", DENIED),
        ("limited", "SELECT * FROM demo.customers c JOIN demo.products p ON p.id = c.id", DENIED),
        ("limited", "SELECT o.id FROM demo.customers AS c, demo.orders AS o", DENIED),
        ("limited", "DESCRIBE demo.orders", DENIED),
    ]


def _fingerprint(server: ServerProcess) -> list[tuple]:
    t = server.query(
        server.admin_token,
        "SELECT schema_name, table_name, estimated_size, column_count FROM duckdb_tables() ORDER BY ALL",
    )
    sums = server.query(
        server.admin_token,
        "SELECT (SELECT sum(amount) FROM demo.orders) a, (SELECT sum(price) FROM demo.products) p, "
        "(SELECT count(*) FROM demo.customers) c",
    )
    return [tuple(r.values()) for r in t.to_pylist()] + [tuple(sums.to_pylist()[0].values())]


def _files(*dirs: Path) -> set[str]:
    out = set()
    for d in dirs:
        for root, _dirs, files in os.walk(d):
            for f in files:
                if not f.endswith(".wal"):
                    out.add(os.path.join(root, f))
    return out


def _run(server: ServerProcess, token: str, sql: str) -> None:
    client = server.flight()
    opts = server.options(token)
    if sql.split()[0].upper() in {"INSERT", "UPDATE", "DELETE", "DROP", "CREATE", "ALTER"}:
        list(client.do_action(fl.Action("execute", sql.encode()), opts))
        return
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
    client.do_get(info.endpoints[0].ticket, opts).read_all()


def test_escapes_are_refused_and_change_nothing(
    server: ServerProcess, reader_token: str, writer_token: str, tmp_path: Path
) -> None:
    target = tmp_path / "escape-target"
    target.mkdir()
    # A view over a table the limited token may not read: views are resolved to base tables.
    server.execute(server.admin_token, "CREATE SCHEMA IF NOT EXISTS shadow")
    server.execute(
        server.admin_token, "CREATE OR REPLACE VIEW shadow.orders_view AS SELECT * FROM demo.orders"
    )
    limited = server.create_token("reader", name="limited", tables=["demo.customers", "shadow.*"])[
        "token"
    ]
    tokens = {
        "reader": reader_token,
        "writer": writer_token,
        "admin": server.admin_token,
        "limited": limited,
    }

    # Positive controls: the same tokens do work inside their rights.
    assert (
        server.query(limited, "SELECT count(*) AS n FROM demo.customers").column("n")[0].as_py() > 0
    )
    assert (
        server.query(reader_token, "SELECT count(*) AS n FROM demo.orders").column("n")[0].as_py()
        > 0
    )

    before_db = _fingerprint(server)
    before_files = _files(server.data_dir, target)
    attempts = _attempts(target)
    assert len(attempts) >= 25
    failures = []
    for role, sql, expected in attempts:
        try:
            _run(server, tokens[role], sql)
        except expected as e:
            assert "[" in str(e), f"error without a stable code: {e}"
            continue
        except Exception as e:  # wrong code
            failures.append(f"{role}: {sql!r} -> {type(e).__name__}: {str(e)[:160]}")
            continue
        failures.append(f"{role}: {sql!r} was NOT refused")
    assert not failures, "\n".join(failures)
    assert _fingerprint(server) == before_db
    assert _files(server.data_dir, target) == before_files
    assert not any(target.iterdir())


@pytest.mark.parametrize("sql", ["", "   ", "SELEC 1", "SELECT * FROM no_such_table"])
def test_bad_sql_is_invalid_argument_with_duckdb_message(
    server: ServerProcess, reader_token: str, sql: str
) -> None:
    with pytest.raises(pa.ArrowInvalid) as e:
        server.flight().get_flight_info(
            fl.FlightDescriptor.for_command(sql.encode()), server.options(reader_token)
        )
    assert "[invalid_argument]" in str(e.value)


def test_non_utf8_command_is_invalid(server: ServerProcess, reader_token: str) -> None:
    with pytest.raises(pa.ArrowInvalid, match="UTF-8"):
        server.flight().get_flight_info(
            fl.FlightDescriptor.for_command(b"\xff\xfe SELECT"), server.options(reader_token)
        )
