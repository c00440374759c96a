"""Property: whatever the limited reader (demo.*) sends, nothing breaks out.

Statements are composed from DuckDB's statement types (queries, DML, DDL, COPY,
ATTACH, SET, PRAGMA, CALL, EXPORT, CHECKPOINT, VACUUM, transactions, ...), its table,
catalog and pragma functions and system views, aimed at schema `secret` and at demo
objects, then wrapped (EXPLAIN, EXPLAIN ANALYZE, CTEs, subqueries, `query('...')`,
UNION, comments, a second statement). Each is sent as the limited reader over plain
Flight (mostly), the `execute` action or Flight SQL. Invariants, over every attempt:

* it succeeds, or fails with a message carrying a "[code]";
* no name or value from schema `secret`, server path, setting value or credential
  appears in its result or error (unless the attempt's own SQL said it);
* the database is unchanged (checked every AUDIT_EVERY attempts and at the end), and
  no file appears in the scratch directory the statements aim at.

Every violation is collected and reported together (a list says more to whoever fixes
them than one shrunk example would); examples are derandomized, so runs repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.security.conftest import Lab, Outcome, literal, run_flightsql

AUDIT_EVERY = 10

#: Tables and views the statements aim at ("payroll" alone: a bare name to resolve).
TABLES = ["secret.payroll", "demo.leaky", "demo.x", "demo.orders", "demo.order_ids", "payroll"]
#: Names for things a statement would create.
NEW = ["demo.pwn_zz", "secret.pwn_zz", "main.pwn_zz", "pwn_zz"]

#: `{t}` a table, `{n}` a new name, `{scratch}` a directory the test watches.
STATEMENTS = [
    # queries and query-like statements
    "SELECT * FROM {t}",
    "SELECT count(*) AS n FROM {t}",
    "FROM {t} LIMIT 5",
    "SELECT * FROM {t} WHERE id = 1",
    "SUMMARIZE {t}",
    "DESCRIBE {t}",
    "SHOW {t}",
    "SHOW TABLES",
    "SHOW ALL TABLES",
    "SHOW DATABASES",
    "SELECT secret.zq_bonus_fn(2) AS v",
    "SELECT * FROM secret.zq_rows_fn()",
    # DML
    "INSERT INTO {t} SELECT * FROM {t}",
    "INSERT INTO {t} DEFAULT VALUES",
    "UPDATE {t} SET id = id + 1",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
    "MERGE INTO {t} AS d USING (SELECT 1 AS id) AS s ON d.id = s.id WHEN MATCHED THEN DELETE",
    # DDL
    "CREATE TABLE {n} AS SELECT * FROM {t}",
    "CREATE OR REPLACE TABLE {t} AS SELECT 1 AS id",
    "CREATE VIEW {n} AS SELECT * FROM {t}",
    "CREATE OR REPLACE VIEW demo.leaky AS SELECT 1 AS id",
    "CREATE MACRO {n}(a) AS a",
    "CREATE MACRO {n}() AS TABLE SELECT * FROM {t}",
    "CREATE SCHEMA pwn_s",
    "CREATE SEQUENCE {n}",
    "CREATE TYPE {n} AS ENUM ('a')",
    "CREATE TEMP TABLE pwn_tmp AS SELECT * FROM {t}",
    "CREATE INDEX pwn_idx ON {t} (id)",
    "COMMENT ON TABLE {t} IS 'pwned'",
    "DROP TABLE {t}",
    "DROP VIEW {t}",
    "DROP SCHEMA secret CASCADE",
    "DROP MACRO secret.zq_bonus_fn",
    "DROP MACRO TABLE secret.zq_rows_fn",
    "ALTER TABLE {t} ADD COLUMN pwn INTEGER",
    "ALTER TABLE {t} RENAME TO pwn_r",
    "ALTER TABLE {t} DROP COLUMN id",
    "ALTER VIEW demo.leaky RENAME TO pwn_v",
    # files, databases, extensions, settings
    "COPY {t} TO '{scratch}/out.csv'",
    "COPY {t} FROM '{scratch}/in.csv'",
    "EXPORT DATABASE '{scratch}/dump'",
    "IMPORT DATABASE '{scratch}/dump'",
    "ATTACH ':memory:' AS pwn",
    "ATTACH '{scratch}/pwn.duckdb' AS pwn",
    "DETACH data",
    "USE secret",
    "LOAD json",
    "INSTALL httpfs",
    "CREATE SECRET pwn_sec (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SET memory_limit = '64GB'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET search_path = 'secret'",
    "RESET threads",
    # pragmas, calls, maintenance, transactions, prepared statements
    "PRAGMA table_info('{t}')",
    "PRAGMA storage_info('{t}')",
    "PRAGMA database_list",
    "PRAGMA show_tables",
    "PRAGMA enable_profiling",
    "CALL pragma_table_info('{t}')",
    "CALL duckdb_tables()",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "VACUUM ANALYZE {t}",
    "ANALYZE {t}",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "PREPARE pwn_p AS SELECT * FROM {t}",
    "EXECUTE pwn_p",
    "DEALLOCATE pwn_p",
    # table, catalog and pragma functions; system views; telling scalars
    "SELECT * FROM query('SELECT * FROM {t}')",
    "SELECT * FROM query_table('{t}')",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM duckdb_columns()",
    "SELECT * FROM duckdb_views()",
    "SELECT * FROM duckdb_schemas()",
    "SELECT * FROM duckdb_functions()",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM duckdb_constraints()",
    "SELECT * FROM duckdb_indexes()",
    "SELECT * FROM duckdb_sequences()",
    "SELECT * FROM duckdb_dependencies()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM duckdb_memory()",
    "SELECT * FROM duckdb_temporary_files()",
    "SELECT * FROM duckdb_types()",
    "SELECT * FROM pragma_table_info('{t}')",
    "SELECT * FROM pragma_storage_info('{t}')",
    "SELECT * FROM pragma_metadata_info()",
    "SELECT * FROM pragma_database_size()",
    "SELECT * FROM pragma_show('{t}')",
    "SELECT * FROM pragma_version()",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM information_schema.schemata",
    "SELECT * FROM information_schema.views",
    "SELECT * FROM information_schema.table_constraints",
    "SELECT * FROM pg_catalog.pg_class",
    "SELECT * FROM pg_catalog.pg_namespace",
    "SELECT * FROM pg_catalog.pg_attribute",
    "SELECT * FROM pg_catalog.pg_views",
    "SELECT * FROM pg_catalog.pg_proc",
    "SELECT current_setting('temp_directory') AS v",
    "SELECT current_setting('memory_limit') AS v",
    "SELECT current_database() AS v",
    "SELECT * FROM read_csv('{scratch}/in.csv')",
    "SELECT * FROM read_text('/proc/self/environ')",
    "SELECT * FROM glob('{scratch}/*')",
]


def _query_literal(sql: str) -> str:
    return f"SELECT * FROM query({literal(sql)})"


WRAPPERS: list[Callable[[str], str]] = [
    lambda s: f"EXPLAIN {s}",
    lambda s: f"EXPLAIN ANALYZE {s}",
    lambda s: f"EXPLAIN (FORMAT json) {s}",
    lambda s: f"EXPLAIN (ANALYZE, FORMAT json) {s}",
    lambda s: f"WITH c AS ({s}) SELECT * FROM c",
    lambda s: f"WITH c AS (SELECT 1 AS one) {s}",
    lambda s: f"SELECT * FROM ({s}) AS sub",
    _query_literal,
    lambda s: f"SELECT count(*) AS n FROM ({s}) AS u UNION ALL SELECT 1",
    lambda s: f"/* c */ {s};",
    lambda s: f"SELECT 1; {s}",
]

CHANNELS = ["flight", "flight", "flight", "execute", "flight-sql"]


@st.composite
def attempts(draw: st.DrawFn) -> tuple[str, str]:
    """(channel, SQL with a `{scratch}` placeholder)."""
    template = draw(st.sampled_from(STATEMENTS))
    sql = template.replace("{t}", draw(st.sampled_from(TABLES))).replace(
        "{n}", draw(st.sampled_from(NEW))
    )
    for wrap in draw(st.lists(st.sampled_from(WRAPPERS), max_size=2)):
        sql = wrap(sql)
    return draw(st.sampled_from(CHANNELS)), sql


def _send(lab: Lab, flightsql: Callable[[str], Any], channel: str, sql: str) -> Outcome:
    if channel == "execute":
        return lab.execute("limited", sql)
    if channel == "flight-sql":
        return run_flightsql(flightsql("limited"), sql)
    return lab.run("limited", sql)


def test_whatever_the_limited_reader_sends_nothing_breaks_out(
    lab: Lab, flightsql: Callable[[str], Any], tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tried: list[str] = []
    problems: list[str] = []  # no "[code]", or a leak
    damage: list[str] = []
    pending: list[str] = []
    broken: list[str] = []  # the lab could not be restored: stop trying

    def audit() -> None:
        try:
            diff = lab.damage()
        except AssertionError as e:
            broken.append(str(e))
            diff = "(and the lab could not be restored)"
        if diff is not None:
            damage.append(f"after one of {pending}:\n{diff}")
        pending.clear()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(attempt=attempts())
    def attempt(attempt: tuple[str, str]) -> None:
        if broken:
            return
        channel, template = attempt
        sql = template.replace("{scratch}", str(scratch))
        outcome = _send(lab, flightsql, channel, sql)
        tried.append(sql)
        pending.append(f"{channel}: {sql!r}")
        if not outcome.ok and outcome.code is None:
            problems.append(f"no [code]: {channel}: {sql!r} -> {outcome.describe()}")
        found = lab.leaks(outcome.text(), echo=sql)
        if found:
            text = outcome.text()
            at = text.lower().find(found[0].lower())
            problems.append(
                f"leaked {found}: {channel}: {sql!r} -> ...{text[max(0, at - 120) : at + 120]}..."
            )
        if len(pending) >= AUDIT_EVERY:
            audit()

    attempt()
    audit()
    written = sorted(str(p) for p in scratch.rglob("*"))
    report = [f"{len(tried)} attempts"]
    problems = list(dict.fromkeys(problems))  # the generator repeats itself now and then
    if problems:
        report.append(f"{len(problems)} broke an invariant, e.g.:\n" + "\n".join(problems[:20]))
    if damage:
        report.append(f"{len(damage)} audits found the database changed:\n" + "\n".join(damage))
    if broken:
        report.append(f"the lab could not be restored: {broken[0]}")
    if written:
        report.append(f"files appeared: {written}")
    assert not (problems or damage or broken or written), "\n\n".join(report)
    assert len(tried) >= 150, f"only {len(tried)} attempts were made"
