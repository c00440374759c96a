"""MCP rows: JSON-safe values and the character budget (no server)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pyarrow as pa

from mcp_server.values import collect, column_names, json_safe


def test_values_are_json_safe() -> None:
    assert json_safe(decimal.Decimal("12.50")) == "12.50"
    assert json_safe(dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)) == "2024-05-01T10:00:00+00:00"
    assert json_safe(dt.date(2024, 5, 1)) == "2024-05-01"
    assert json_safe(b"\x01\x02") == "AQI="
    assert json_safe(float("inf")) == "Infinity" and json_safe(float("nan")) == "NaN"
    assert json_safe(2**60) == str(2**60) and json_safe(2**52) == 2**52
    assert json_safe(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert json_safe(dt.timedelta(hours=1, minutes=30)) == "PT1H30M"
    assert json_safe([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}  # a MAP
    assert json_safe([(1, "x")]) == [[1, "x"]]
    json.dumps(json_safe({"nested": [decimal.Decimal("1.5"), b"x"]}))


def test_repeated_names_are_made_unique() -> None:
    schema = pa.schema([("a", pa.int8()), ("a", pa.int8()), ("b", pa.int8())])
    assert column_names(schema) == ["a", "a_2", "b"]


def test_the_budget_stops_before_the_row_that_would_pass_it() -> None:
    batch = pa.record_batch({"s": ["x" * 40] * 10})  # each row: {"s":"xxx..."} = 48 chars + 1
    page = collect([batch], batch.schema, budget=200)
    assert len(page.rows) == 4 and page.cut and page.chars <= 200
    whole = collect([batch], batch.schema, budget=10_000)
    assert len(whole.rows) == 10 and not whole.cut
