"""Extraction throughput: snowflake-connector-python vs the ADBC Snowflake driver.

    python -m benchmarks.sync_extract_adbc [--rows 1000000] [--repeat 3]

Starts the `fakesnow` emulator (tests/support/fakesnow_server.py), creates a table of
`--rows` rows (NUMBER id, NUMBER(9,0), NUMBER(12,2), VARCHAR, TIMESTAMP_NTZ), then reads
`SELECT *` to the end, `--repeat` times each, alternating:

- `connector`: `cursor.fetch_arrow_batches()` of snowflake-connector-python, batches
  dropped as they arrive (the bare read);
- `adbc`: `adbc_driver_snowflake` (the Go driver) `fetch_record_batch()`, same;
- `extractor`: our `SnowflakeExtractor` (connector + conversion to the target types), for
  the cost of the type conversion on top of the bare read.

Prints one JSON line with the best rows/s of each and `adbc_over_connector`. Each time
runs from the query's submission to its last batch, over an already open connection;
`median_execute` is the part until `execute()` returned.

Caveat: the emulator answers a query with the whole result inline (base64 Arrow in the
JSON response), where Snowflake sends result chunks from cloud storage that both
drivers download in parallel. Both drivers pay the same emulator time, so the ratio
compares their decoding more than their real-world transfer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import common as c
from tests.support.fakesnow_server import FakesnowServer

TABLE = "BENCH_ORDERS"


def describe(schema: Any) -> str:
    """`NAME type, ...` without the drivers' per-field Snowflake metadata."""
    return ", ".join(f"{field.name} {field.type}" for field in schema)


def read_connector(conn: Any) -> tuple[int, str, float]:
    with contextlib.closing(conn.cursor()) as cur:
        start = time.perf_counter()
        cur.execute(f"select * from {TABLE}")
        executed = time.perf_counter() - start
        rows, schema = 0, ""
        for table in cur.fetch_arrow_batches():
            rows += table.num_rows
            schema = schema or describe(table.schema)
        return rows, schema, executed


def read_adbc(conn: Any) -> tuple[int, str, float]:
    with contextlib.closing(conn.cursor()) as cur:
        start = time.perf_counter()
        cur.execute(f"select * from {TABLE}")
        executed = time.perf_counter() - start
        reader = cur.fetch_record_batch()
        rows = sum(batch.num_rows for batch in reader)
        return rows, describe(reader.schema), executed


def read_extractor(extractor: Any) -> tuple[int, str, float]:
    start = time.perf_counter()
    with extractor.extract(TABLE) as extraction:
        executed = time.perf_counter() - start
        rows = sum(batch.num_rows for batch in extraction)
        return rows, describe(extraction.schema), executed


def adbc_connect(snow: FakesnowServer) -> Any:
    import adbc_driver_snowflake.dbapi

    return adbc_driver_snowflake.dbapi.connect(
        db_kwargs={
            "adbc.snowflake.sql.account": "fakesnow",
            "username": "fake",
            "password": "snow",
            "adbc.snowflake.sql.uri.host": snow.host,
            "adbc.snowflake.sql.uri.port": str(snow.port),
            "adbc.snowflake.sql.uri.protocol": "http",
            "adbc.snowflake.sql.db": snow.database,
            "adbc.snowflake.sql.schema": snow.schema,
        }
    )


Reader = Callable[[], tuple[int, str, float]]


def timed(read: Reader) -> tuple[float, float, int, str]:
    """(total seconds, seconds until execute returned, rows, schema) of one read."""
    start = time.perf_counter()
    rows, schema, executed = read()
    return time.perf_counter() - start, executed, rows, schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from workers.sync.credentials import SnowflakeSettings
    from workers.sync.extract import SnowflakeExtractor

    with FakesnowServer() as snow:
        started = time.perf_counter()
        c.create_snowflake_table(snow, TABLE, args.rows)
        print(f"created {args.rows} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        settings = SnowflakeSettings(
            **{k.removeprefix("SNOWFLAKE_").lower(): v for k, v in snow.env().items()}
        ).model_copy(update={"network_timeout": 600})

        readers: dict[str, Reader] = {}
        errors: dict[str, str] = {}
        connector_conn = snow.connect(network_timeout=600)
        readers["connector"] = lambda: read_connector(connector_conn)
        try:
            adbc_conn = adbc_connect(snow)
            readers["adbc"] = lambda: read_adbc(adbc_conn)
        except Exception as exc:  # report why, and still measure the connector
            errors["adbc"] = f"{type(exc).__name__}: {exc}"
        extractor = SnowflakeExtractor(settings)
        readers["extractor"] = lambda: read_extractor(extractor)

        times: dict[str, list[float]] = {name: [] for name in readers}
        executes: dict[str, list[float]] = {name: [] for name in readers}
        schemas: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, read in list(readers.items()):
                try:
                    seconds, executed, rows, schema = timed(read)
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    del readers[name]
                    continue
                if rows != args.rows:
                    errors[name] = f"read {rows} rows, expected {args.rows}"
                times[name].append(seconds)
                executes[name].append(executed)
                schemas[name] = schema
        extractor.close()
        connector_conn.close()
        if "adbc" in readers:
            adbc_conn.close()

    result: dict[str, Any] = {"benchmark": "sync_extract_adbc", "rows": args.rows}
    for name, seconds in times.items():
        if seconds:
            result[f"{name}_rows_per_s"] = round(args.rows / min(seconds), 1)
            result[f"{name}_seconds"] = {
                "best": round(min(seconds), 3),
                "median": round(statistics.median(seconds), 3),
                # Until execute() returned: with the emulator, the whole result is then
                # downloaded; the rest is decoding into Arrow batches.
                "median_execute": round(statistics.median(executes[name]), 3),
            }
    if result.get("adbc_rows_per_s") and result.get("connector_rows_per_s"):
        result["adbc_over_connector"] = round(
            result["adbc_rows_per_s"] / result["connector_rows_per_s"], 3
        )
    if result.get("extractor_rows_per_s") and result.get("connector_rows_per_s"):
        result["extractor_over_connector"] = round(
            result["extractor_rows_per_s"] / result["connector_rows_per_s"], 3
        )
    result["schemas"] = schemas
    if errors:
        result["errors"] = errors
    print(json.dumps(result))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
