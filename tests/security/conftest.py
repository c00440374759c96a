"""The containment lab: a real server holding a schema some tokens must never see, a
fingerprint of everything in its database, and a leak detector.

What the lab holds:

    secret.payroll      (id, employee, salary_zq)  'Zanzibar Quux' earns 987654.32
    secret.zq_bonus_fn  a scalar macro;  secret.zq_rows_fn  a table macro
    demo.leaky          a view in demo.* that reads secret.payroll
    demo.order_ids      an honest view over demo.orders
    demo.x              a small table: the target of write attempts
    crm                 an empty schema, for the writer limited to crm.*

Tokens (`lab.tokens[...]`): limited (reader, demo.*), limited_writer (writer, crm.*),
reader, writer (both unrestricted) and admin.

The lab is shared by the containment modules (package scope). Attack tests compare
`lab.fingerprint()` with the baseline taken after setup. Many attacks succeed today,
so `lab.damage()` also puts the database back (drops what appeared, recreates the
setup and the demo tables): the next test starts clean and fails, or passes, on its
own account.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from agentdata.demo import DEMO_SQL
from tests.support.adbc import connection_per_token
from tests.support.server import REPO, ServerProcess, start_server

#: Every stable error code (agentdata.errors); messages start with one in brackets.
CODES = (
    "invalid_argument",
    "checksum_mismatch",
    "unauthenticated",
    "permission_denied",
    "not_found",
    "conflict",
    "payload_too_large",
    "quota_exceeded",
    "resource_exhausted",
    "deadline_exceeded",
    "cancelled",
    "unavailable",
    "unimplemented",
    "internal",
)
_CODE = re.compile(r"\[(" + "|".join(CODES) + r")\]")

DEMO_ROWS = 20_000
DEMO_TABLES = ("customers", "products", "orders")

#: The lab's own objects, as the admin creates them (and recreates them after damage).
SETUP_SQL = [
    "CREATE SCHEMA IF NOT EXISTS secret",
    "CREATE OR REPLACE TABLE secret.payroll (id INTEGER, employee VARCHAR, salary_zq DECIMAL(10, 2))",
    "INSERT INTO secret.payroll VALUES (1, 'Zanzibar Quux', 987654.32), "
    "(2, 'Zanzibar Quuxley', 987654.01), (3, 'Zanzibar Quuxton', 987654.99)",
    "CREATE OR REPLACE MACRO secret.zq_bonus_fn(x) AS x * 987654",
    "CREATE OR REPLACE MACRO secret.zq_rows_fn() AS TABLE SELECT * FROM secret.payroll",
    "CREATE OR REPLACE VIEW demo.leaky AS SELECT * FROM secret.payroll",
    "CREATE OR REPLACE VIEW demo.order_ids AS SELECT id, status FROM demo.orders",
    "CREATE OR REPLACE TABLE demo.x (id INTEGER, note VARCHAR)",
    "INSERT INTO demo.x VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    "CREATE SCHEMA IF NOT EXISTS crm",
]

#: Names and values of everything in schema `secret`: none may reach a limited reader.
SECRET_MARKERS = (
    "secret",
    "payroll",
    "zanzibar",
    "987654",
    "salary_zq",
    "zq_bonus_fn",
    "zq_rows_fn",
)

#: Settings whose values describe the server (paths, sizes): no non-admin may see them.
_SETTINGS_WITH_TELLING_VALUES = (
    "memory_limit",
    "max_memory",
    "temp_directory",
    "home_directory",
    "extension_directory",
    "secret_directory",
)

#: Every object in the data database, with what defines it; temporary objects (one
#: cursor's own) and DuckDB's internal ones left out. Columns: kind, schema, name, detail.
_OBJECTS_SQL = """
SELECT 'database' AS kind, '' AS s, database_name AS n, type AS d FROM duckdb_databases()
UNION ALL SELECT 'schema', '', schema_name, coalesce(comment, '') FROM duckdb_schemas()
  WHERE NOT internal AND database_name = current_database()
UNION ALL SELECT 'table', schema_name, table_name, sql || coalesce(' -- ' || comment, '')
  FROM duckdb_tables()
  WHERE NOT internal AND NOT temporary AND database_name = current_database()
UNION ALL SELECT 'view', schema_name, view_name, sql || coalesce(' -- ' || comment, '')
  FROM duckdb_views()
  WHERE NOT internal AND NOT temporary AND database_name = current_database()
UNION ALL SELECT function_type, schema_name, function_name, coalesce(macro_definition, '')
  FROM duckdb_functions()
  WHERE function_type LIKE '%macro%' AND NOT internal AND database_name = current_database()
UNION ALL SELECT 'sequence', schema_name, sequence_name, '' FROM duckdb_sequences()
  WHERE NOT temporary AND database_name = current_database()
UNION ALL SELECT 'type', schema_name, type_name, '' FROM duckdb_types()
  WHERE NOT internal AND database_name = current_database()
UNION ALL SELECT 'index', schema_name, index_name, coalesce(sql, '') FROM duckdb_indexes()
  WHERE database_name = current_database()
"""

Fingerprint = dict[str, str]


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: a result table, or an error's type and text."""

    table: pa.Table | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def code(self) -> str | None:
        """The error's stable code (from its "[code]" prefix); None if it has none."""
        if self.error is None:
            return None
        m = _CODE.search(self.error)
        return m.group(1) if m else None

    def text(self) -> str:
        """Everything the caller got back, as one string (what the leak check reads)."""
        if self.table is not None:
            return " ".join([*self.table.column_names, str(self.table.to_pylist())])
        return self.error or ""

    def describe(self) -> str:
        if self.ok:
            rows = self.table.num_rows if self.table is not None else 0
            return f"succeeded ({rows} rows)"
        return f"{self.error_type}: {(self.error or '')[:400]}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def leaks(text: str, markers: Iterable[str], echo: str = "") -> list[str]:
    """Markers found in `text`, case-insensitively. A marker the caller wrote itself
    (it is in `echo`, the caller's SQL) is not a leak when it comes back."""
    low, said = text.lower(), echo.lower()
    return [m for m in markers if m and m.lower() not in said and m.lower() in low]


def run_flight(
    server: ServerProcess,
    token: str,
    sql: str,
    *,
    timeout: float = 60.0,
    client: fl.FlightClient | None = None,
) -> Outcome:
    """Plain Flight: GetFlightInfo on a SQL command descriptor, then DoGet."""
    own = client is None
    client = client or server.flight()
    opts = server.options(token, timeout=timeout)
    try:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    except Exception as e:  # any failure is an outcome; the tests judge its code
        return Outcome(error=str(e), error_type=type(e).__name__)
    finally:
        if own:
            client.close()
    return Outcome(table=table)


def run_flightsql(conn: Any, sql: str, params: tuple | None = None) -> Outcome:
    """Flight SQL through ADBC: a statement, or (with `params`) a prepared statement."""
    cur = conn.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, parameters=params)
        table = cur.fetch_arrow_table()
    except Exception as e:
        return Outcome(error=str(e), error_type=type(e).__name__)
    finally:
        cur.close()
    return Outcome(table=table)


def run_execute(
    server: ServerProcess,
    token: str,
    sql: str,
    *,
    timeout: float = 60.0,
    client: fl.FlightClient | None = None,
) -> Outcome:
    """The `execute` action (one DDL/DML statement)."""
    own = client is None
    client = client or server.flight()
    try:
        results = list(
            client.do_action(
                fl.Action("execute", sql.encode()), server.options(token, timeout=timeout)
            )
        )
    except Exception as e:
        return Outcome(error=str(e), error_type=type(e).__name__)
    finally:
        if own:
            client.close()
    bodies = [r.body.to_pybytes().decode("utf-8", "replace") for r in results]
    return Outcome(table=pa.table({"result": bodies}))


def run_cli(server: ServerProcess, token: str, sql: str) -> Outcome:
    """`agentdata sql` as a user runs it (only AGENTDATA_FLIGHT_URL and the token set)."""
    env = {k: v for k, v in server.env.items() if not k.startswith("AGENTDATA_")}
    env.update(AGENTDATA_FLIGHT_URL=server.flight_url, AGENTDATA_TOKEN=token)
    proc = subprocess.run(
        [sys.executable, "-m", "agentdata", "sql", sql],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode == 0:
        return Outcome(table=pa.table({"stdout": [proc.stdout + proc.stderr]}))
    return Outcome(error=proc.stderr, error_type=f"exit {proc.returncode}")


def admin_rows(
    server: ServerProcess, sql: str, client: fl.FlightClient | None = None
) -> list[tuple]:
    outcome = run_flight(server, server.admin_token, sql, client=client)
    if outcome.table is None:
        raise AssertionError(f"admin query failed: {outcome.describe()}\n{sql}")
    return [tuple(r.values()) for r in outcome.table.to_pylist()]


def fingerprint(server: ServerProcess, client: fl.FlightClient | None = None) -> Fingerprint:
    """Schemas, tables (definition, row count and a checksum of every row), views,
    macros, sequences, types, indexes and attached databases, read by the admin."""
    out: Fingerprint = {}
    tables: list[tuple[str, str]] = []
    for kind, schema, name, detail in admin_rows(server, _OBJECTS_SQL, client):
        key = f"{kind} {quote(schema) + '.' if schema else ''}{quote(name)}"
        out[key] = str(detail)
        if kind == "table":
            tables.append((schema, name))
    if tables:
        parts = [
            f"SELECT {literal(quote(s) + '.' + quote(n))} AS k, count(*)::VARCHAR || ' rows, sum ' "
            f"|| coalesce(sum(hash(fp_row_zz)), 0)::VARCHAR AS v FROM {quote(s)}.{quote(n)} AS fp_row_zz"
            for s, n in tables
        ]
        for key, value in admin_rows(server, " UNION ALL ".join(parts), client):
            out[f"contents {key}"] = str(value)
    return out


def describe_diff(before: Fingerprint, after: Fingerprint) -> str:
    lines = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            lines.append(f"  gone:    {key}")
        elif key not in before:
            lines.append(f"  new:     {key}")
        elif before[key] != after[key]:
            lines.append(f"  changed: {key}: {before[key][:80]!r} -> {after[key][:80]!r}")
    return "\n".join(lines)


@dataclass(frozen=True, repr=False)
class Lab:
    """A running server with the lab's objects and tokens, and its baseline fingerprint."""

    server: ServerProcess
    tokens: dict[str, str]
    markers: tuple[str, ...]
    baseline: Fingerprint
    #: One Flight connection for the lab's calls (a new channel per call costs ~20 ms).
    client: fl.FlightClient

    def run(self, who: str, sql: str, *, timeout: float = 60.0) -> Outcome:
        """`sql` over plain Flight as the token called `who` (see the module docstring)."""
        return run_flight(self.server, self.tokens[who], sql, timeout=timeout, client=self.client)

    def execute(self, who: str, sql: str) -> Outcome:
        """`sql` through the `execute` action as the token called `who`."""
        return run_execute(self.server, self.tokens[who], sql, client=self.client)

    def admin(self, sql: str) -> None:
        """Run one statement as the admin; it must succeed."""
        outcome = self.execute("admin", sql)
        assert outcome.ok, f"admin statement failed: {outcome.describe()}\n{sql}"

    def leaks(self, text: str, *, echo: str = "", secrets: bool = True) -> list[str]:
        markers = self.markers if secrets else self.server_markers
        return leaks(text, markers, echo)

    def assert_no_leak(self, text: str, *, echo: str = "", secrets: bool = True) -> None:
        """No server path, setting value or credential in `text` (any case), nor (with
        `secrets`, for tokens that may not read schema `secret`) a name or value from
        schema `secret`. Markers present in `echo` (the caller's own SQL) may come back."""
        found = self.leaks(text, echo=echo, secrets=secrets)
        if found:
            at = text.lower().find(found[0].lower())
            excerpt = text[max(0, at - 250) : at + 250]
            raise AssertionError(f"leaked {found}; around the first: ...{excerpt}...")

    @property
    def server_markers(self) -> tuple[str, ...]:
        return tuple(m for m in self.markers if m not in SECRET_MARKERS)

    def fingerprint(self) -> Fingerprint:
        return fingerprint(self.server, self.client)

    def damage(self) -> str | None:
        """None if the database is as set up; else what changed (and it is restored)."""
        now = self.fingerprint()
        if now == self.baseline:
            return None
        diff = describe_diff(self.baseline, now)
        self.restore(now)
        return diff

    def restore(self, now: Fingerprint | None = None) -> None:
        """Drop objects that appeared, recreate the demo tables that changed and the
        lab's objects; fail loudly if the database still differs from the baseline.
        `now` is the current fingerprint, when the caller has just taken it."""
        now = now if now is not None else self.fingerprint()
        extra = [key for key in now if key not in self.baseline]
        drops = {
            "index": "DROP INDEX IF EXISTS {}",
            "view": "DROP VIEW IF EXISTS {}",
            "macro": "DROP MACRO IF EXISTS {}",
            "table_macro": "DROP MACRO TABLE IF EXISTS {}",
            "table": "DROP TABLE IF EXISTS {} CASCADE",
            "sequence": "DROP SEQUENCE IF EXISTS {} CASCADE",
            "type": "DROP TYPE IF EXISTS {} CASCADE",
            "schema": "DROP SCHEMA IF EXISTS {} CASCADE",
        }
        for kind in drops:
            for key in extra:
                key_kind, _, name = key.partition(" ")
                if key_kind == kind:
                    self.execute("admin", drops[kind].format(name))
        changed_demo = [
            t
            for t in DEMO_TABLES
            if now.get(f'contents "demo".{quote(t)}')
            != self.baseline.get(f'contents "demo".{quote(t)}')
            or now.get(f'table "demo".{quote(t)}') != self.baseline.get(f'table "demo".{quote(t)}')
        ]
        for sql in DEMO_SQL:
            target = next((t for t in changed_demo if f"demo.{t} " in sql), None)
            if sql.startswith("CREATE SCHEMA") or target is not None:
                sql = sql.replace("CREATE TABLE", "CREATE OR REPLACE TABLE")
                self.admin(sql.replace("$rows", str(DEMO_ROWS)))
        for sql in SETUP_SQL:
            self.admin(sql)
        after = self.fingerprint()
        assert after == self.baseline, "the lab could not be restored:\n" + describe_diff(
            self.baseline, after
        )

    def __repr__(self) -> str:
        return f"Lab({self.server.flight_url}, data_dir={self.server.data_dir})"

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    def assert_unchanged(self, what: str) -> None:
        """Assert the database is as set up (restoring it if not, for the next test)."""
        diff = self.damage()
        assert diff is None, f"{what} changed the database:\n{diff}"


def _setting_markers(server: ServerProcess) -> list[str]:
    names = ", ".join(literal(n) for n in _SETTINGS_WITH_TELLING_VALUES)
    try:
        rows = admin_rows(server, f"SELECT value FROM duckdb_settings() WHERE name IN ({names})")
    except AssertionError:  # an engine that refuses its admin this is another test's topic
        return []
    return [str(v) for (v,) in rows if v is not None and len(str(v)) >= 4]


def open_lab(data_dir: Path, *, env: dict[str, str] | None = None) -> Lab:
    """Start a server, create the lab's objects and tokens, take the baseline."""
    jwt_secret = "jwt_lab_" + os.urandom(24).hex()
    server = start_server(
        data_dir, env={"AGENTDATA_JWT_SECRET": jwt_secret, **(env or {})}, demo_rows=DEMO_ROWS
    )
    try:
        for sql in SETUP_SQL:
            server.execute(server.admin_token, sql)
        records = {
            "limited": server.create_token("reader", name="limited-reader", tables=["demo.*"]),
            "limited_writer": server.create_token(
                "writer", name="limited-writer", tables=["crm.*"]
            ),
            "reader": server.create_token("reader", name="reader"),
            "writer": server.create_token("writer", name="writer"),
        }
        resolved = data_dir.resolve()
        markers = (
            *SECRET_MARKERS,
            str(data_dir),
            str(resolved),
            str(resolved / "tmp"),
            # DuckDB's home (extensions, secrets) for the user the server runs as.
            str(Path.home() / ".duckdb"),
            "data.duckdb",
            "meta.sqlite3",
            server.admin_token,
            jwt_secret,
            *_setting_markers(server),
        )
        client = server.flight()
        return Lab(
            server=server,
            client=client,
            tokens={
                **{k: str(r["token"]) for k, r in records.items()},
                "admin": server.admin_token,
            },
            markers=tuple(dict.fromkeys(markers)),
            baseline=fingerprint(server, client),
        )
    except BaseException:
        server.stop()
        raise


#: Settings of the shared lab: one export worker (so a second export queues), quick
#: export progress reports, and a query timeout that ends anything left running.
LAB_ENV = {
    "AGENTDATA_EMBEDDED_WORKERS": "1",
    "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
    "AGENTDATA_QUERY_TIMEOUT_S": "60",
}


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab server for the containment modules (a server start costs ~4 s). Every
    test leaves the database as the baseline (`assert_unchanged` restores it), so the
    modules share it safely; test_containment_resources runs its own, which it may kill."""
    the_lab = open_lab(tmp_path_factory.mktemp("lab") / "data", env=LAB_ENV)
    yield the_lab
    the_lab.close()


@pytest.fixture(scope="module")
def flightsql(lab: Lab) -> Iterator[Callable[[str], Any]]:
    """`flightsql(who)`: an ADBC Flight SQL connection as that lab token (one each)."""
    with connection_per_token(lab.server.flight_port, lab.tokens) as connect:
        yield connect
