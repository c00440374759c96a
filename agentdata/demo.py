"""The demo dataset: a small shop in schema `demo`, generated locally (no download).

    demo.customers  10,000 rows     id, name, email, country, signed_up
    demo.products    1,000 rows     id, name, category, price DECIMAL(10,2)
    demo.orders     1,000,000 rows  id, customer_id, product_id, quantity, amount, ordered_at TIMESTAMPTZ, status

Deterministic (hash-based), so examples in the docs give the same answers everywhere.
"""

from __future__ import annotations

from agentdata.engine import Engine

DEMO_SQL = [
    "CREATE SCHEMA IF NOT EXISTS demo",
    """CREATE TABLE demo.customers AS
       SELECT i AS id,
              'Customer ' || i AS name,
              'customer' || i || '@example.com' AS email,
              (['DE', 'FR', 'GB', 'US', 'JP', 'BR', 'IN', 'NL'])[1 + CAST(hash(i) % 8 AS BIGINT)] AS country,
              DATE '2020-01-01' + CAST(hash(i * 7) % 1800 AS INTEGER) AS signed_up
       FROM range(1, 10001) t(i)""",
    """CREATE TABLE demo.products AS
       SELECT i AS id,
              'Product ' || i AS name,
              (['books', 'games', 'garden', 'kitchen', 'music', 'toys'])[1 + CAST(hash(i) % 6 AS BIGINT)] AS category,
              CAST(1 + (hash(i * 13) % 50000) / 100.0 AS DECIMAL(10, 2)) AS price
       FROM range(1, 1001) t(i)""",
    """CREATE TABLE demo.orders AS
       SELECT i AS id,
              1 + CAST(hash(i * 3) % 10000 AS BIGINT) AS customer_id,
              1 + CAST(hash(i * 5) % 1000 AS BIGINT) AS product_id,
              CAST(1 + hash(i * 11) % 5 AS INTEGER) AS quantity,
              CAST((hash(i * 17) % 100000) / 100.0 AS DECIMAL(12, 2)) AS amount,
              TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(CAST(hash(i * 19) % 63072000 AS BIGINT)) AS ordered_at,
              (['placed', 'paid', 'shipped', 'delivered', 'returned'])[1 + CAST(hash(i * 23) % 5 AS BIGINT)] AS status
       FROM range(1, $rows + 1) t(i)""",
]

DEMO_TABLES = {"demo.customers", "demo.products", "demo.orders"}


def load_demo(engine: Engine, *, rows: int = 1_000_000) -> None:
    """Create the demo schema in one transaction (all tables or none)."""
    with engine.writer() as w:
        for sql in DEMO_SQL:
            w.execute(sql.replace("$rows", str(int(rows))))
    engine.touch_tables(set(DEMO_TABLES))
