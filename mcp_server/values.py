"""Result rows as JSON an agent can read, within a character budget.

Arrow values become JSON-safe values, the same way in every MCP answer:

    DECIMAL                 "12.50"         (a string: no float rounding)
    TIMESTAMP / DATE / TIME "2024-05-01T10:00:00.123456+00:00", "2024-05-01", "10:00:00"
    INTERVAL                {"months": 1, "days": 2, "nanoseconds": 0}
    BLOB                    "aGVsbG8="      (base64)
    UUID                    "0b4c..."       (text)
    BIGINT beyond ±2^53     "9007199254740993"  (a string: JSON readers use doubles)
    DOUBLE NaN / ±inf       "NaN", "Infinity", "-Infinity"
    LIST / STRUCT           arrays / objects of the above; MAP with text keys: an object,
                            otherwise [[key, value], ...]

Rows are objects keyed by column name (a repeated name gets a `_2`, `_3` suffix). The
budget counts the characters of the rows' compact JSON: a page stops before the row
that would pass it (so a page can be empty when one row alone is too large).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

#: Integers a JSON reader can hold exactly in a double.
_SAFE_INT = 2**53


def json_safe(value: Any) -> Any:
    """One Python value (as pyarrow gives it) as a JSON-safe value."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return _map(value)  # pyarrow gives a MAP as [(key, value), ...]
        return [json_safe(v) for v in value]
    return str(value)


def _map(pairs: list[Any] | tuple[Any, ...]) -> Any:
    if all(isinstance(k, str) for k, _ in pairs):
        return {k: json_safe(v) for k, v in pairs}
    return [[json_safe(k), json_safe(v)] for k, v in pairs]


def _duration(value: dt.timedelta) -> str:
    """ISO-8601 duration (`PT1H30M`, `-P1DT2S`)."""
    total_us = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    days, rest = divmod(total_us, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = rest / 1_000_000
    time_part = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds:
        time_part += f"{seconds:g}S"
    text = f"P{days}D" if days else "P"
    if time_part or not days:
        text += "T" + (time_part or "0S")
    return sign + text


def column_names(schema: pa.Schema) -> list[str]:
    """The schema's column names, repeated ones made unique (`a`, `a_2`)."""
    seen: dict[str, int] = {}
    names = []
    for name in schema.names:
        n = seen.get(name, 0) + 1
        seen[name] = n
        names.append(name if n == 1 else f"{name}_{n}")
    return names


@dataclass
class Page:
    """Rows collected within a budget."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    chars: int = 0
    #: True when the budget stopped the page before the batches ended.
    cut: bool = False


def collect(batches: Iterable[pa.RecordBatch], schema: pa.Schema, budget: int) -> Page:
    """JSON-safe rows from `batches` until the next row would pass `budget` characters."""
    names = column_names(schema)
    page = Page()
    for batch in batches:
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for values in zip(*columns, strict=True):
            row = {name: json_safe(v) for name, v in zip(names, values, strict=True)}
            size = len(json.dumps(row, separators=(",", ":"), ensure_ascii=False)) + 1
            if page.chars + size > budget:
                page.cut = True
                return page
            page.rows.append(row)
            page.chars += size
    return page
