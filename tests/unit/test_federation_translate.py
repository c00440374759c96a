"""DuckDB -> Snowflake translation for federated reads (agentdata.federation.translate):
which statements are pushed whole, and which conditions a remote scan may apply.

Fast tier: no emulator, no server. The end-to-end tier (tests/federation) runs these
plans against the fakesnow emulator and compares the answers with a synced copy.
"""

from __future__ import annotations

import pytest

from agentdata.federation.catalog import RemoteColumn, RemoteTable
from agentdata.federation.translate import parse, plan_scans, whole_query

ORDERS = RemoteTable(
    schema="sales",
    table="orders",
    source="SHOP.PUBLIC.ORDERS",
    columns=(
        RemoteColumn("ID", "BIGINT", "NUMBER(18,0)"),
        RemoteColumn("CUSTOMER_ID", "BIGINT", "NUMBER(18,0)"),
        RemoteColumn("AMOUNT", "DECIMAL(10,2)", "NUMBER(10,2)"),
        RemoteColumn("Status", "VARCHAR", "VARCHAR"),  # created quoted, mixed case
        RemoteColumn("NOTE", "VARCHAR", "VARCHAR"),
    ),
    rows=1000,
)
REMOTES = {ORDERS.name: ORDERS}
LOCAL = {("crm", "customers"): {"id": "INTEGER", "name": "VARCHAR", "region": "VARCHAR"}}


def columns_of(schema: str, table: str) -> dict[str, str] | None:
    return LOCAL.get((schema, table))


def scan(sql: str) -> tuple[str, list[str | None]]:
    tree = parse(sql)
    assert tree is not None
    planned = plan_scans(tree, REMOTES, columns_of)["sales.orders"]
    return planned.sql(), planned.conditions


def test_whole_query_quotes_exact_names_and_replaces_the_source() -> None:
    tree = parse(
        "SELECT status, count(*) FILTER (WHERE amount > 5) AS big FROM sales.orders o"
        " WHERE note ILIKE 'x%' GROUP BY ALL ORDER BY big DESC LIMIT 3"
    )
    assert tree is not None
    sql = whole_query(tree, REMOTES, limit=101)
    assert sql is not None
    assert 'FROM SHOP.PUBLIC.ORDERS AS "O"' in sql
    assert '"O"."Status"' in sql or '"Status"' in sql  # the exact, mixed-case name
    assert "COUNT_IF" in sql and "ILIKE" in sql and "NULLS LAST" in sql
    assert sql.endswith("LIMIT 101")


@pytest.mark.parametrize(
    "text",
    [
        "SELECT my_macro(id) FROM sales.orders",  # a function sqlglot does not know
        "SELECT id FROM sales.orders WHERE id = ?",  # a placeholder
    ],
)
def test_what_cannot_be_translated_with_confidence_is_not_pushed_whole(text: str) -> None:
    tree = parse(text)
    assert tree is not None
    assert whole_query(tree, REMOTES, None) is None


def test_scan_reads_only_the_columns_used() -> None:
    sql, _ = scan(
        "SELECT c.name, sum(o.amount) FROM crm.customers c JOIN sales.orders o"
        " ON o.customer_id = c.id GROUP BY c.name"
    )
    assert sql == 'SELECT "CUSTOMER_ID", "AMOUNT" FROM SHOP.PUBLIC.ORDERS'


def test_where_and_inner_on_conditions_on_the_remote_table_are_pushed() -> None:
    sql, _ = scan(
        "SELECT c.name FROM crm.customers c JOIN sales.orders o"
        " ON o.customer_id = c.id AND o.note = 'gift'"
        " WHERE o.amount > 10 AND c.region = 'EU' AND (o.id < 5 OR c.id = 1)"
    )
    where = sql.split(" WHERE ", 1)[1]
    assert '"AMOUNT" > 10' in where and "\"NOTE\" = 'gift'" in where
    # Spanning both tables, or naming only the local one: stays in DuckDB.
    assert "REGION" not in where and "OR" not in where


def test_null_supplying_side_keeps_its_where_conditions_in_duckdb() -> None:
    # WHERE o.amount IS NULL keeps customers without orders: filtering the scan by it
    # would turn matched customers into unmatched ones.
    _, conditions = scan(
        "SELECT c.name FROM crm.customers c LEFT JOIN sales.orders o ON o.customer_id = c.id"
        " WHERE o.amount IS NULL"
    )
    assert conditions == [None]
    # Its own ON conditions are safe to push (a row failing them never matches).
    sql, _ = scan(
        "SELECT c.name FROM crm.customers c LEFT JOIN sales.orders o"
        " ON o.customer_id = c.id AND o.amount > 3"
    )
    assert sql.endswith('WHERE ("AMOUNT" > 3)')
    # The preserved side of a RIGHT join: nothing.
    _, conditions = scan(
        "SELECT c.name FROM crm.customers c RIGHT JOIN sales.orders o"
        " ON o.customer_id = c.id AND o.amount > 3"
    )
    assert conditions == [None]


@pytest.mark.parametrize(
    "where",
    [
        "o.amount > (SELECT 1)",
        "o.amount > random()",
        "o.id = ?",
    ],
)
def test_conditions_that_must_run_once_or_here_are_not_pushed(where: str) -> None:
    _, conditions = scan(
        f"SELECT c.name FROM crm.customers c JOIN sales.orders o ON o.customer_id = c.id WHERE {where}"
    )
    assert conditions == [None]


def test_two_references_read_what_either_needs() -> None:
    tree = parse(
        "SELECT a.id FROM sales.orders a JOIN sales.orders b ON a.id = b.customer_id"
        " JOIN crm.customers c ON c.id = a.customer_id WHERE a.amount > 1 AND b.note = 'x'"
    )
    assert tree is not None
    planned = plan_scans(tree, REMOTES, columns_of)["sales.orders"]
    assert len(planned.conditions) == 2
    assert planned.condition is not None and " OR " in planned.condition
