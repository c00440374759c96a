"""Helpers for the task tests: tricky data, waiting for jobs, reading exports back."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import io
import json
import time
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from tests.support.server import ServerProcess

FINISHED = ("succeeded", "failed", "cancelled")

#: Every (format, compression) pair the API accepts.
COMBOS = [
    ("csv", "none"),
    ("csv", "gzip"),
    ("csv", "zstd"),
    ("json", "none"),
    ("json", "gzip"),
    ("json", "zstd"),
    ("parquet", "none"),
    ("parquet", "snappy"),
    ("parquet", "gzip"),
    ("parquet", "zstd"),
    ("arrow", "none"),
    ("arrow", "lz4"),
    ("arrow", "zstd"),
    ("arrow", "gzip"),
]

_NL, _CR, _TAB = "' || chr(10) || '", "' || chr(13) || '", "' || chr(9) || '"

#: Strings that break naive writers, decimals at the edges, zoned and naive times, NULLs.
TRICKY_SQL = f"""
CREATE OR REPLACE TABLE qa.tricky AS
SELECT * FROM (VALUES
  (1, 'plain', 1.50::DECIMAL(18, 2), TIMESTAMPTZ '2024-03-31 01:30:00.123456+00',
   TIMESTAMP '2024-01-01 12:00:00.123456', 1.5::DOUBLE, true, DATE '2024-02-29', 9007199254740993),
  (2, '', 0.00, TIMESTAMPTZ '1999-12-31 23:59:59+05:30', TIMESTAMP '1970-01-01 00:00:00',
   -0.25, false, DATE '1970-01-01', -1),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, 'comma, "quoted"{_NL}new line{_CR}{_NL}crlf{_TAB}tab \\ backslash', -12345678901234.56,
   TIMESTAMPTZ '2024-10-27 02:30:00+02', TIMESTAMP '2000-02-29 23:59:59.999999', 1e300,
   true, DATE '2000-02-29', 0),
  (5, 'ünïcødé 😀 中文 עברית', 99999999999999.99, TIMESTAMPTZ '2038-01-19 03:14:08-07',
   TIMESTAMP '2262-04-11 23:47:16', -1e-300, false, DATE '1900-01-01', 42),
  (6, '"', 0.01, TIMESTAMPTZ '1970-01-01 00:00:00+00', TIMESTAMP '1969-12-31 23:59:59',
   0.1, NULL, DATE '2024-12-31', NULL),
  (7, 'NULL', -0.01, NULL, NULL, 3.0, true, NULL, 7),
  (8, ' ', NULL, TIMESTAMPTZ '2024-06-01 12:00:00+00', TIMESTAMP '2024-06-01 12:00:00', -0.0,
   false, DATE '2024-06-01', 8)
) v(id, s, d, tz, ts, f, b, dt, big)
UNION ALL
SELECT 100 + i, 'row ' || i, (i / 100)::DECIMAL(18, 2),
       TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(i * 7919),
       TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(i * 1234567),
       i * 0.5, i % 2 = 0, DATE '2024-01-01' + (i % 365)::INTEGER, i * 1000003
FROM range(5000) t(i)
"""

TRICKY_QUERY = "SELECT * FROM qa.tricky ORDER BY id"


def create_tricky_table(server: ServerProcess, writer_token: str) -> None:
    server.execute(writer_token, "CREATE SCHEMA IF NOT EXISTS qa")
    server.execute(writer_token, TRICKY_SQL)


def wait_job(
    http: httpx.Client, job_id: str, *, timeout: float = 60, states: tuple[str, ...] = FINISHED
) -> dict[str, Any]:
    """Poll a job until it is in one of `states`; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not {states} after {timeout}s: {job}")


def wait_until(predicate: Any, *, timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_export(http: httpx.Client, sql: str, fmt: str, compression: str = "none") -> dict:
    r = http.post("/api/v1/exports", json={"sql": sql, "format": fmt, "compression": compression})
    assert r.status_code == 202, r.text
    return r.json()


def run_export(http: httpx.Client, sql: str, fmt: str, compression: str = "none") -> dict:
    """Export and wait; returns the finished job (asserting it succeeded)."""
    accepted = start_export(http, sql, fmt, compression)
    job = wait_job(http, accepted["job_id"])
    assert job["state"] == "succeeded", job
    return job


def download(http: httpx.Client, artefact_id: str) -> bytes:
    r = http.get(f"/api/v1/artefacts/{artefact_id}/content")
    assert r.status_code == 200, r.text
    return r.content


def decompressed(data: bytes, compression: str, fmt: str) -> bytes:
    """The file's bytes with stream compression undone (format-internal codecs stay)."""
    if compression == "gzip" and fmt in ("csv", "json", "arrow"):
        return gzip.decompress(data)
    if compression == "zstd" and fmt in ("csv", "json"):
        return pa.input_stream(pa.py_buffer(data), compression="zstd").read()
    return data


def read_export(data: bytes, fmt: str, compression: str, expected: pa.Schema) -> Any:
    """Read an export back: a pyarrow Table (csv, parquet, arrow) or a list of rows (json)."""
    raw = decompressed(data, compression, fmt)
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(raw))
    if fmt == "arrow":
        return ipc.open_file(pa.py_buffer(raw)).read_all()
    if fmt == "csv":
        types = {
            f.name: pa.timestamp(f.type.unit, tz="UTC")
            if pa.types.is_timestamp(f.type) and f.type.tz
            else f.type
            for f in expected
        }
        return pacsv.read_csv(
            io.BytesIO(raw),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                null_values=[""],
            ),
        )
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def normalise_tz(table: pa.Table) -> pa.Table:
    """Zoned timestamp columns in UTC (the same instants; only the zone label changes)."""
    columns = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type) and f.type.tz:
            col = col.cast(pa.timestamp(f.type.unit, tz="UTC"))
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def json_row_matches(row: dict[str, Any], expected: dict[str, Any], schema: pa.Schema) -> None:
    """Compare one JSON Lines row with the query's row, by the documented encoding."""
    assert list(row) == list(expected), (list(row), list(expected))
    for f in schema:
        got, want = row[f.name], expected[f.name]
        if want is None:
            assert got is None, (f.name, got)
        elif pa.types.is_decimal(f.type):
            assert isinstance(got, str) and decimal.Decimal(got) == want and got == str(want), (
                f.name,
                got,
                want,
            )
        elif pa.types.is_timestamp(f.type):
            assert isinstance(got, str) and "T" in got, got
            if f.type.tz:
                assert got.endswith("Z"), got
            assert dt.datetime.fromisoformat(got) == want, (f.name, got, want)
        elif pa.types.is_date(f.type):
            assert dt.date.fromisoformat(got) == want
        else:
            assert got == want and type(got) is type(want), (f.name, got, want)
