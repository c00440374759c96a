"""Point queries (issue 11): `WHERE id = ?` on a table with a PRIMARY KEY, one at a time.

The table is the benchmark table (benchmarks.common.table_sql) declared with
`id BIGINT PRIMARY KEY`, so DuckDB keeps an ART index on `id` and a point query is
an index lookup. The scenario checks that on the server: DuckDB 2.0 picks the index
scan at run time, so plain EXPLAIN shows a "Sequential Scan" and only EXPLAIN ANALYZE
shows "Type: Index Scan" (with no row group scanned).
Queries run serially (the next one once the last is read), each id distinct and
drawn uniformly (seeded), so no query repeats and the results cache (at its default
size) never answers for the index. Subjects, each a client process that connects
and warms up before its timed queries:

- plain Flight (`pyarrow.flight`, GetFlightInfo + DoGet, the id inlined in the SQL);
- ADBC Flight SQL with a bound parameter (`cursor.execute(sql, (id,))`, prepared
  once by the driver and re-bound each call);
- the reference: DuckDB in-process on a copy of the table with the same PRIMARY KEY,
  the same prepared statement, no server and no protocol;
- the floors, the same clients against servers that answer from memory without any
  SQL (one row, whatever is asked): a bare `pyarrow.flight` server for plain Flight
  (benchmarks.bare_flight) and a bare pyarrow Flight SQL server for ADBC
  (benchmarks.bare_flightsql). What a point query costs there is the client's and the
  transport's own, the least any server written on pyarrow's Flight can answer in.

Rounds are interleaved; latencies of all rounds are pooled per subject.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from benchmarks import bare_flight, bare_flightsql
from benchmarks import common as c

NAME = "point_queries"
AIM_FLIGHT_P50_MS = 1.5
AIM_ADBC_P50_MS = 2.5
COLUMNS = "id BIGINT PRIMARY KEY, qty INTEGER, price DOUBLE, customer VARCHAR, ts TIMESTAMP"


def run(quick: bool) -> dict[str, Any]:
    rows = 1_000_000 if quick else 10_000_000
    points = 200 if quick else 1000
    rounds = 2 if quick else 3
    table = "bench.pk_" + c.table_name(rows).split(".")[1]
    notes: list[str] = [c.load_note() + " (before)"]
    # A scratch dir per process (two runs at once must not share a server's data dir),
    # removed at the end: the tables are rebuilt every run, in a minute or less.
    work = c.scratch_dir(f"{NAME}-{os.getpid()}")
    try:
        return _measure(quick, rows, points, rounds, table, work, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(
    quick: bool, rows: int, points: int, rounds: int, table: str, work: Path, notes: list[str]
) -> dict[str, Any]:
    ref = _reference_db(work / "ref.duckdb", table, rows)
    latencies: dict[str, list[float]] = {
        "flight": [],
        "adbc": [],
        "duckdb": [],
        "flight_floor": [],
        "adbc_floor": [],
    }
    round_p50: dict[str, list[float]] = {k: [] for k in latencies}
    one_row = f"SELECT * FROM {table} WHERE id = 42"
    bare, bare_port = bare_flight.start(str(ref), one_row, 65_536)
    bare_sql, bare_sql_port = bare_flightsql.start(str(ref), one_row)
    try:
        return _measure_with(
            quick,
            rows,
            points,
            rounds,
            table,
            work,
            notes,
            ref,
            latencies,
            round_p50,
            f"grpc://127.0.0.1:{bare_port}",
            f"grpc://127.0.0.1:{bare_sql_port}",
        )
    finally:
        for proc in (bare, bare_sql):
            proc.kill()
            proc.wait()


def _measure_with(
    quick: bool,
    rows: int,
    points: int,
    rounds: int,
    table: str,
    work: Path,
    notes: list[str],
    ref: Path,
    latencies: dict[str, list[float]],
    round_p50: dict[str, list[float]],
    flight_floor_url: str,
    adbc_floor_url: str,
) -> dict[str, Any]:
    with c.running_server(work / "data") as server:
        server.execute("CREATE SCHEMA bench")
        server.execute(f"CREATE TABLE {table} ({COLUMNS})")
        server.execute(f"INSERT INTO {table} {c.table_sql(rows)}")
        plan = _plan(server.query(f"EXPLAIN ANALYZE SELECT * FROM {table} WHERE id = 42"))
        pk = server.query(
            "SELECT constraint_text FROM duckdb_constraints() "
            f"WHERE schema_name = 'bench' AND table_name = '{table.split('.')[1]}' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).column(0)
        token = server.create_token("reader", name="bench-points")
        base = ["points", "--table", table, "--rows", str(rows), "--n", str(points)]
        args = {
            "flight": [*base, "--driver", "flight", "--url", server.flight_url, "--token", token],
            "adbc": [*base, "--driver", "adbc", "--url", server.flight_url, "--token", token],
            "duckdb": [*base, "--driver", "duckdb", "--db", str(ref)],
            "flight_floor": [*base, "--driver", "flight", "--url", flight_floor_url],
            "adbc_floor": [*base, "--driver", "adbc", "--url", adbc_floor_url],
        }
        seeds = iter(range(1, 1000))

        def subject(name: str) -> None:
            got = c.run_client([*args[name], "--seed", str(next(seeds))], timeout=900)
            ms = got["latencies_ms"]
            latencies[name] += ms
            round_p50[name].append(statistics.median(ms))

        c.interleaved(rounds, {n: functools.partial(subject, n) for n in latencies})
        load = c.load1()
    notes.append(c.load_note() + " (after)")
    if quick:
        notes.append(f"quick mode: {rows:,} rows, {rounds} rounds of {points} queries")
    index_used = "INDEX SCAN" in plan.upper().replace("_", " ")
    if not index_used:
        notes.append(f"EXPLAIN ANALYZE on the server shows no index scan: {plan[:600]}")
    if not pk:
        notes.append(f"{table} has no PRIMARY KEY on the server")
    stats = {k: c.latency_stats(v) for k, v in latencies.items()}
    ref_p50 = stats["duckdb"]["p50"]
    metrics = [
        c.metric(
            "point p50, plain Flight (id inlined)",
            stats["flight"]["p50"],
            "ms",
            reference=ref_p50,
            reference_label="DuckDB in-process, PK",
            aim=f"<= {AIM_FLIGHT_P50_MS:g} ms",
            met=stats["flight"]["p50"] <= AIM_FLIGHT_P50_MS,
            spread=_spread(round_p50["flight"]),
            load=load,
        ),
        c.metric(
            "point p50, ADBC Flight SQL (bound ?)",
            stats["adbc"]["p50"],
            "ms",
            reference=ref_p50,
            reference_label="DuckDB in-process, PK",
            aim=f"<= {AIM_ADBC_P50_MS:g} ms",
            met=stats["adbc"]["p50"] <= AIM_ADBC_P50_MS,
            spread=_spread(round_p50["adbc"]),
            load=load,
        ),
        c.metric(
            "point p99, plain Flight",
            stats["flight"]["p99"],
            "ms",
            reference=stats["duckdb"]["p99"],
            reference_label="DuckDB in-process, PK",
            load=load,
        ),
        c.metric(
            "point p99, ADBC Flight SQL",
            stats["adbc"]["p99"],
            "ms",
            reference=stats["duckdb"]["p99"],
            reference_label="DuckDB in-process, PK",
            load=load,
        ),
        c.metric(
            "point p50, plain Flight, bare pyarrow server (floor)",
            stats["flight_floor"]["p50"],
            "ms",
            spread=_spread(round_p50["flight_floor"]),
            load=load,
        ),
        c.metric(
            "point p50, ADBC, bare pyarrow Flight SQL server (floor)",
            stats["adbc_floor"]["p50"],
            "ms",
            spread=_spread(round_p50["adbc_floor"]),
            load=load,
        ),
        c.metric(
            "point p50, DuckDB in-process (reference)",
            ref_p50,
            "ms",
            spread=_spread(round_p50["duckdb"]),
            load=load,
        ),
        c.metric(
            "server plan is an index lookup (EXPLAIN ANALYZE: Index Scan)",
            index_used,
            aim="yes",
            met=index_used,
            load=load,
        ),
    ]
    return {
        "name": NAME,
        "title": "Point queries on a primary key: plain Flight and ADBC vs in-process DuckDB",
        "measures": (
            f"Latency of {points} serial point queries `WHERE id = ?` per round and subject "
            f"({rounds} rounds, pooled): p50 and p99, from the request to the row read."
        ),
        "data": (
            f"{table}: {rows:,} rows x 5 columns ({COLUMNS}), built on the server by "
            "CREATE TABLE ... PRIMARY KEY then INSERT ... SELECT (benchmarks.common.table_sql); "
            "ids distinct per round, uniform, seeded."
        ),
        "reference": (
            "DuckDB in-process on an identical table with the same PRIMARY KEY, prepared "
            "`?`: what the engine itself needs for one lookup, with no server and no protocol."
        ),
        "results": {
            "rows": rows,
            "points_per_round": points,
            "rounds": rounds,
            "latency_ms": stats,
            "round_p50_ms": round_p50,
            "server_plan": plan,
            "primary_key": [str(x) for x in pk.to_pylist()],
            "load": load,
        },
        "metrics": metrics,
        "notes": notes,
    }


def _reference_db(path: Path, table: str, rows: int) -> Path:
    """The same table with the same PRIMARY KEY in a DuckDB file of its own."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA bench")
    con.execute(f"CREATE TABLE {table} ({COLUMNS})")
    con.execute(f"INSERT INTO {table} {c.table_sql(rows)}")
    con.close()
    return path


def _plan(result: Any) -> str:
    """Every text cell of an EXPLAIN result, joined (the plan's shape varies by version)."""
    return "\n".join(
        str(v) for col in result.columns for v in col.to_pylist() if isinstance(v, str)
    )


def _spread(values: list[float]) -> tuple[float, float]:
    return (min(values), max(values))
