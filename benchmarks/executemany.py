"""ADBC `executemany` of a parameter batch: rows per second through Flight SQL.

One writer connection, one prepared `INSERT ... VALUES (?, ?, ?, ?)` bound to N rows
(`cursor.executemany`): the server runs the batch as one set-based statement
(`agentdata.param_batches`); then an `UPDATE ... WHERE id = ?` batch of the same size,
also set-based (`UPDATE ... FROM` the batch). For contrast, an UPDATE whose WHERE reads
the column it sets, which has no set-based form and runs row by row (on 2,000 rows).
Timed from the call to its return, median of `--runs` runs; each run inserts into a
fresh table.

    python -m benchmarks.executemany [--rows 200000] [--runs 3]     # prints JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import adbc_driver_flightsql.dbapi as flight_sql

from benchmarks import common as c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = [(i, f"name-{i}", i * 0.5, i % 1000) for i in range(args.rows)]
    updates = [(f"u{i}", i) for i in range(args.rows)]
    row_by_row = [(i % 1000 + 1000, i % 1000, i) for i in range(2_000)]
    with c.start_server(c.scratch_dir("executemany") / "data") as server:
        token = server.create_token("writer", name="bench-executemany")
        conn = flight_sql.connect(
            server.flight_url,
            db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
            autocommit=True,
        )
        insert_s, update_s, row_by_row_s = [], [], []
        with conn, conn.cursor() as cur:
            for run in range(args.runs):
                table = f"main.em{run}"
                cur.execute(f"CREATE TABLE {table} (id BIGINT, name VARCHAR, x DOUBLE, k INTEGER)")
                started = time.perf_counter()
                cur.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)
                insert_s.append(time.perf_counter() - started)
                assert cur.rowcount == args.rows, cur.rowcount
                started = time.perf_counter()
                cur.executemany(f"UPDATE {table} SET name = ? WHERE id = ?", updates)
                update_s.append(time.perf_counter() - started)
                assert cur.rowcount == args.rows, cur.rowcount
                started = time.perf_counter()
                cur.executemany(f"UPDATE {table} SET k = ? WHERE k = ? AND id = ?", row_by_row)
                row_by_row_s.append(time.perf_counter() - started)
        insert = statistics.median(insert_s)
        update = statistics.median(update_s)
        slow = statistics.median(row_by_row_s)
        print(
            json.dumps(
                {
                    "machine": c.machine_info(),
                    "load": c.load_note(),
                    "insert_rows": args.rows,
                    "insert_s": insert_s,
                    "insert_rows_per_s": round(args.rows / insert),
                    "update_rows": len(updates),
                    "update_s": update_s,
                    "update_rows_per_s": round(len(updates) / update),
                    "row_by_row_rows": len(row_by_row),
                    "row_by_row_s": row_by_row_s,
                    "row_by_row_rows_per_s": round(len(row_by_row) / slow),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
