"""Catalog introspection shows a token only what it may read, and nobody but an admin
sees the server's settings or paths.

The limited reader (demo.*) may list and describe demo tables through every catalog
surface DuckDB has, and gets them; it never sees a name or value from schema
`secret`, not even through the view demo.leaky or a "Did you mean" hint. Functions
that describe the server (settings, databases, extensions, the function list) or that
are on no allow-list are refused to every non-admin with [permission_denied], naming
the function.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.security.conftest import Lab

DEMO_TABLES = frozenset({"orders", "customers", "products"})


@dataclass(frozen=True)
class Listing:
    id: str
    sql: str
    #: Column holding names, and names it must include (None: only "no leak" is asked,
    #: e.g. SHOW TABLES lists schema main, which is empty).
    column: str | None = None
    expect: frozenset[str] = frozenset()
    #: Column holding each row's schema, when every row must be in demo.
    schema_column: str | None = None


LISTINGS = [
    Listing(
        "information_schema.tables",
        "SELECT * FROM information_schema.tables",
        "table_name",
        DEMO_TABLES,
        "table_schema",
    ),
    Listing(
        "information_schema.columns",
        "SELECT * FROM information_schema.columns",
        "column_name",
        frozenset({"amount", "customer_id", "email"}),
    ),
    Listing(
        "information_schema.schemata",
        "SELECT * FROM information_schema.schemata",
        "schema_name",
        frozenset({"demo"}),
    ),
    Listing(
        "duckdb_tables", "SELECT * FROM duckdb_tables()", "table_name", DEMO_TABLES, "schema_name"
    ),
    Listing(
        "duckdb_columns",
        "SELECT * FROM duckdb_columns()",
        "column_name",
        frozenset({"amount", "customer_id", "email"}),
    ),
    Listing("duckdb_schemas", "SELECT * FROM duckdb_schemas()", "schema_name", frozenset({"demo"})),
    Listing("duckdb_views", "SELECT * FROM duckdb_views()", "view_name", frozenset({"order_ids"})),
    Listing("show-tables", "SHOW TABLES"),
    Listing("show-all-tables", "SHOW ALL TABLES", "name", DEMO_TABLES, "schema"),
    Listing("describe", "DESCRIBE demo.orders", "column_name", frozenset({"amount", "status"})),
    Listing(
        "pragma_table_info",
        "SELECT * FROM pragma_table_info('demo.orders')",
        "name",
        frozenset({"amount", "status"}),
    ),
    Listing(
        "pragma_storage_info",
        "SELECT column_name, segment_type, count FROM pragma_storage_info('demo.orders')",
        "column_name",
        frozenset({"amount", "status"}),
    ),
]


@pytest.mark.parametrize("listing", LISTINGS, ids=[x.id for x in LISTINGS])
def test_limited_reader_sees_demo_and_nothing_of_secret(lab: Lab, listing: Listing) -> None:
    outcome = lab.run("limited", listing.sql)
    assert outcome.ok and outcome.table is not None, outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=listing.sql)
    rows = outcome.table.to_pylist()
    if listing.column is not None:
        names = {str(r[listing.column]).lower() for r in rows}
        assert listing.expect <= names, f"missing {sorted(listing.expect - names)} in {names}"
    if listing.schema_column is not None:
        schemas = {r[listing.schema_column] for r in rows}
        assert schemas == {"demo"}, f"tables outside demo.* listed: {schemas}"


@pytest.mark.parametrize("function", ["pragma_table_info", "pragma_storage_info"])
def test_pragma_functions_on_a_hidden_table_are_refused(lab: Lab, function: str) -> None:
    sql = f"SELECT * FROM {function}('secret.payroll')"
    outcome = lab.run("limited", sql)
    assert outcome.code == "permission_denied", outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=sql)


#: (the function's name, as the refusal must name it; SQL).
SERVER_FUNCTIONS = [
    ("duckdb_settings", "SELECT * FROM duckdb_settings()"),
    ("duckdb_databases", "SELECT * FROM duckdb_databases()"),
    ("current_setting", "SELECT current_setting('temp_directory') AS v"),
    ("duckdb_extensions", "SELECT * FROM duckdb_extensions()"),
    ("pg_class", "SELECT * FROM pg_catalog.pg_class"),
    ("duckdb_functions", "SELECT * FROM duckdb_functions()"),
    ("test_all_types", "SELECT * FROM test_all_types()"),  # real, but on no allow-list
    ("zz_no_such_table_fn", "SELECT * FROM zz_no_such_table_fn()"),  # unknown
]


@pytest.mark.parametrize("who", ["limited", "reader", "writer"])
@pytest.mark.parametrize(("name", "sql"), SERVER_FUNCTIONS, ids=[n for n, _ in SERVER_FUNCTIONS])
def test_server_describing_functions_are_refused_to_non_admins(
    lab: Lab, who: str, name: str, sql: str
) -> None:
    outcome = lab.run(who, sql)
    assert outcome.code == "permission_denied", outcome.describe()
    assert name in (outcome.error or "").lower(), (
        f"the refusal does not name {name}: {outcome.error}"
    )
    lab.assert_no_leak(outcome.text(), echo=sql, secrets=who == "limited")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT current_setting('memory_limit') AS v",
        "SELECT value FROM duckdb_settings() WHERE name = 'temp_directory'",
        "SELECT path FROM duckdb_databases()",
        "WITH s AS (SELECT * FROM duckdb_settings()) SELECT count(*) AS n FROM s",
        "SELECT * FROM (SELECT current_setting('temp_directory') AS t) AS s",
        "SELECT * FROM query('SELECT path FROM duckdb_databases()')",
        "SELECT * FROM duckdb_temporary_files()",
        "SELECT * FROM pragma_database_size()",
    ],
)
def test_unrestricted_reader_cannot_see_settings_or_paths(lab: Lab, sql: str) -> None:
    outcome = lab.run("reader", sql)
    assert outcome.code == "permission_denied", outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=sql, secrets=False)


def test_unrestricted_reader_may_read_the_secret_table(lab: Lab) -> None:
    outcome = lab.run("reader", "SELECT employee FROM secret.payroll ORDER BY id")
    assert outcome.ok and outcome.table is not None, outcome.describe()
    assert outcome.table.column("employee").to_pylist()[0] == "Zanzibar Quux"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM demo.leaky",
        "SELECT count(*) AS n FROM demo.leaky",
        "SELECT * FROM demo.leaky LIMIT 0",
        "SELECT salary_z FROM demo.leaky",
        "SELECT x.note, l.* FROM demo.x AS x JOIN demo.leaky AS l ON l.id = x.id",
    ],
)
def test_limited_reader_cannot_read_through_a_view_and_is_not_told_why(lab: Lab, sql: str) -> None:
    outcome = lab.run("limited", sql)
    assert outcome.code == "permission_denied", outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=sql)


@pytest.mark.parametrize(
    "sql",
    [
        "DESCRIBE demo.leaky",
        "SELECT * FROM pragma_table_info('demo.leaky')",
        "SUMMARIZE demo.leaky",
        "SELECT * FROM information_schema.views",
        "SELECT * FROM information_schema.columns WHERE table_name = 'leaky'",
    ],
)
def test_limited_reader_learns_nothing_of_secret_from_the_view_whatever_the_answer(
    lab: Lab, sql: str
) -> None:
    outcome = lab.run("limited", sql)
    assert outcome.ok or outcome.code is not None, outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM payrol",
        "SELECT * FROM main.payrol",
        "SELECT zq_bonus_f(1) AS v",
        "SELECT * FROM zq_rows_f()",
        "SELECT * FROM demo.payrol",
    ],
)
def test_a_typo_gets_no_hint_about_hidden_objects(lab: Lab, sql: str) -> None:
    outcome = lab.run("limited", sql)
    assert outcome.code is not None, outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=sql)


def test_the_leak_detector_fires_on_what_it_guards(lab: Lab) -> None:
    """The checks above can fail: the admin's view of the same things trips them."""
    secret = lab.run("admin", "SELECT * FROM secret.payroll")
    assert {"zanzibar", "987654", "salary_zq"} <= set(lab.leaks(secret.text()))
    view = lab.run("admin", "SELECT sql FROM duckdb_views() WHERE view_name = 'leaky'")
    assert "payroll" in lab.leaks(view.text())
    temp = lab.run("admin", "SELECT current_setting('temp_directory') AS v")
    assert temp.ok and lab.leaks(temp.text(), secrets=False), temp.describe()
