"""Flight SQL (issue 5): agentdata against roapi and PostgreSQL, through one ADBC client.

Every figure is taken by the same client code in a separate process: ADBC's DB-API
(`cursor.execute`, then the result read batch by batch and dropped), with the ADBC
Flight SQL driver for agentdata and roapi, and the ADBC PostgreSQL driver for
PostgreSQL. Subjects:

- agentdata: `agentdata serve` on the benchmark table `bench.t<N>` (BIGINT, INTEGER,
  DOUBLE, VARCHAR, TIMESTAMP), a reader token (Bearer header).
- roapi: the same rows written to Parquet by DuckDB in-process, served by
  `roapi --addr-flight-sql` (DataFusion), no auth.
- PostgreSQL (when the `adbc_driver_postgresql` package imports and a server answers
  on 127.0.0.1:5432, database `test`): the same rows loaded by ADBC bulk ingest, with
  a primary key on `id` (as a real table would have).

Measures: (1) `SELECT *` of the whole table, execute to last batch, median of
interleaved runs; (2) point queries `WHERE id = ?` one after another (p50, p99).
roapi's Flight SQL cannot bind parameters (it answers DoPut on a prepared statement
with UNIMPLEMENTED), so its point queries inline the id in the SQL text; agentdata is
measured both ways (bound `?` is the headline, inlined for the like-for-like figure).

    python -m benchmarks.scenarios.flightsql_vs_roapi [--quick]      # prints JSON
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import common as c

NAME = "flightsql_vs_roapi"
AIM_SCAN_VS_ROAPI = 2.0  # issue 11 (was 1.5 in issue 5)
AIM_POINT_VS_ROAPI = 5.0
AIM_SCAN_VS_POSTGRES = 4.0
PG_URI = "postgresql://127.0.0.1:5432/test"
TOKEN_ENV = "AGENTDATA_BENCH_FLIGHTSQL_TOKEN"


def run(quick: bool) -> dict[str, Any]:
    rows = 1_000_000 if quick else 10_000_000
    points = 200 if quick else 1000
    scan_runs = 2 if quick else 3  # each run is a client process per subject
    table = c.table_name(rows)
    notes: list[str] = [c.load_note() + " (before)"]
    # A scratch dir per process: two runs at once (a lead's `make bench` and a manual
    # one) must not wipe each other's server.
    work = c.scratch_dir(f"{NAME}-{os.getpid()}")
    parquet = _parquet(rows)
    subjects: dict[str, list[str]] = {}  # name -> client connection arguments
    tables: dict[str, str] = {}
    results: dict[str, Any] = {"rows": rows, "point_queries": points}

    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        # A data dir of its own (the shared dataset cache admits one server at a time).
        server = stack.enter_context(c.running_server(work / "data"))
        server.execute("CREATE SCHEMA bench")
        server.execute(f"CREATE TABLE {table} AS {c.table_sql(rows)}")
        token = server.create_token("reader", name="bench-flightsql")
        subjects["agentdata"] = ["--uri", server.flight_url, "--token-env", TOKEN_ENV]
        os.environ[TOKEN_ENV] = token  # clients inherit it; argv would show it in `ps`
        tables["agentdata"] = table
        roapi_uri = stack.enter_context(_roapi(parquet, "t", work / "roapi.log"))
        subjects["roapi"] = ["--uri", roapi_uri]
        tables["roapi"] = "t"
        pg_reason = _postgres_unavailable()
        if pg_reason is None:
            tables["postgres"] = _load_postgres(rows)
            subjects["postgres"] = ["--uri", PG_URI, "--driver", "postgresql"]
        else:
            notes.append(f"PostgreSQL skipped: {pg_reason}")
            c.log(f"PostgreSQL skipped: {pg_reason}")

        def scan(name: str) -> dict[str, Any]:
            c.log(f"{NAME}: scan {name}")
            sql = f"SELECT * FROM {tables[name]}"
            return _client(["scan", *subjects[name], "--sql", sql])

        # Warm every server once (caches, channels), then interleave the timed runs.
        for name in subjects:
            first = scan(name)
            if first["rows"] != rows:
                raise RuntimeError(f"{name} returned {first['rows']} rows, expected {rows}")
        scans = c.interleaved(scan_runs, {n: functools.partial(scan, n) for n in subjects})
        results["scan_seconds"] = {
            n: c.stats([r["seconds"] for r in runs]) for n, runs in scans.items()
        }
        results["scan_bytes"] = scans["agentdata"][0]["bytes"]

        point_runs = {
            "agentdata_param": ["--mode", "param", *subjects["agentdata"]],
            "agentdata_literal": ["--mode", "literal", *subjects["agentdata"]],
            "roapi_literal": ["--mode", "literal", *subjects["roapi"]],
        }
        if "postgres" in subjects:
            point_runs["postgres_param"] = ["--mode", "param", *subjects["postgres"]]
        latencies: dict[str, Any] = {}
        for key, args in point_runs.items():
            c.log(f"{NAME}: {points} point queries, {key}")
            subject = key.rsplit("_", 1)[0]
            res = _client(
                [
                    "points",
                    *args,
                    "--table",
                    tables[subject],
                    "--rows",
                    str(rows),
                    "--n",
                    str(points),
                ]
            )
            latencies[key] = c.latency_stats(res["latencies_ms"])
        results["point_latency_ms"] = latencies
    notes.append(c.load_note() + " (after)")
    return _report(results, notes, rows, points)


def _report(results: dict[str, Any], notes: list[str], rows: int, points: int) -> dict[str, Any]:
    scan = results["scan_seconds"]
    lat = results["point_latency_ms"]
    a_scan = scan["agentdata"]["median"]
    metrics = [
        c.metric(
            f"SELECT * {rows:,} rows, agentdata",
            a_scan,
            "s",
            reference=scan["roapi"]["median"],
            reference_label="roapi",
            ratio=scan["roapi"]["median"] / a_scan,
            aim=f"roapi/agentdata >= {AIM_SCAN_VS_ROAPI}",
            met=scan["roapi"]["median"] / a_scan >= AIM_SCAN_VS_ROAPI,
            spread=(scan["agentdata"]["min"], scan["agentdata"]["max"]),
        ),
        c.metric(
            "point query p50, agentdata (WHERE id = ?)",
            lat["agentdata_param"]["p50"],
            "ms",
            reference=lat["roapi_literal"]["p50"],
            reference_label="roapi (id inlined)",
            ratio=lat["roapi_literal"]["p50"] / lat["agentdata_param"]["p50"],
            aim=f"roapi/agentdata >= {AIM_POINT_VS_ROAPI}",
            met=lat["roapi_literal"]["p50"] / lat["agentdata_param"]["p50"] >= AIM_POINT_VS_ROAPI,
        ),
        c.metric(
            "point query p99, agentdata (WHERE id = ?)",
            lat["agentdata_param"]["p99"],
            "ms",
            reference=lat["roapi_literal"]["p99"],
            reference_label="roapi (id inlined)",
            ratio=lat["roapi_literal"]["p99"] / lat["agentdata_param"]["p99"],
        ),
        c.metric(
            "point query p50, agentdata (id inlined)",
            lat["agentdata_literal"]["p50"],
            "ms",
            reference=lat["roapi_literal"]["p50"],
            reference_label="roapi (id inlined)",
            ratio=lat["roapi_literal"]["p50"] / lat["agentdata_literal"]["p50"],
        ),
    ]
    if "postgres" in scan:
        pg_scan = scan["postgres"]["median"]
        metrics.append(
            c.metric(
                f"SELECT * {rows:,} rows, agentdata vs PostgreSQL",
                a_scan,
                "s",
                reference=pg_scan,
                reference_label="PostgreSQL (ADBC)",
                ratio=pg_scan / a_scan,
                aim=f"postgres/agentdata >= {AIM_SCAN_VS_POSTGRES}",
                met=pg_scan / a_scan >= AIM_SCAN_VS_POSTGRES,
            )
        )
        metrics.append(
            c.metric(
                "point query p50, agentdata vs PostgreSQL (both bound)",
                lat["agentdata_param"]["p50"],
                "ms",
                reference=lat["postgres_param"]["p50"],
                reference_label="PostgreSQL (primary key)",
                ratio=lat["postgres_param"]["p50"] / lat["agentdata_param"]["p50"],
            )
        )
    else:
        metrics.append(
            c.metric(
                f"SELECT * {rows:,} rows, agentdata vs PostgreSQL",
                None,
                "s",
                aim=f"postgres/agentdata >= {AIM_SCAN_VS_POSTGRES}",
            )
        )
    notes.append(
        "ratio column: reference time / agentdata time (above 1: agentdata is faster). "
        "roapi cannot bind parameters over Flight SQL, so its point queries inline the id; "
        "ADBC's DB-API then prepares each new text (CreatePreparedStatement, GetFlightInfo, "
        "DoGet, ClosePreparedStatement), as it does for agentdata's inlined figure."
    )
    notes.append(
        "agentdata's table here has no primary key (like roapi's Parquet file), while "
        "PostgreSQL's has one; point queries on an agentdata table with a primary key "
        "(an index lookup) are measured in the point_queries scenario."
    )
    return {
        "name": NAME,
        "title": "Flight SQL through ADBC: agentdata vs roapi (and PostgreSQL)",
        "measures": (
            "Wall time of SELECT * over the whole table, and latency of sequential point "
            "queries by id, all through the ADBC DB-API in separate client processes."
        ),
        "data": (
            f"{rows:,} rows x 5 columns (BIGINT id, INTEGER, DOUBLE, VARCHAR, TIMESTAMP; "
            "benchmarks.common.table_sql), ~46 bytes/row as Arrow; roapi reads the same rows "
            f"as Parquet written by DuckDB; {points} point ids drawn uniformly (seeded)."
        ),
        "reference": (
            "roapi (DataFusion over Parquet) through the same ADBC Flight SQL driver; "
            "PostgreSQL 15 through the ADBC PostgreSQL driver when available."
        ),
        "results": results,
        "metrics": metrics,
        "notes": notes,
    }


# -- subjects --------------------------------------------------------------------------


def _parquet(rows: int) -> Path:
    """The benchmark table as Parquet, written by DuckDB in-process and cached."""
    import duckdb

    root = c.WORK / "datasets" / f"duckdb{duckdb.__version__}-v{c.DATA_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{c.table_name(rows).split('.')[1]}.parquet"
    with _locked(root / ".parquet.lock"):
        if not path.exists():
            tmp = path.with_suffix(".building")
            tmp.unlink(missing_ok=True)
            duckdb.connect().execute(f"COPY ({c.table_sql(rows)}) TO '{tmp}' (FORMAT parquet)")
            tmp.rename(path)
            c.log(f"wrote {path.name}")
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (shared caches are built by one at a time)."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _roapi(parquet: Path, name: str, log_path: Path) -> Iterator[str]:
    """roapi serving `parquet` as table `name`; yields its Flight SQL URI."""
    flight, pg, http = c.free_port(), c.free_port(), c.free_port()
    binary = Path(sys.executable).with_name("roapi")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                str(binary),
                "--addr-flight-sql",
                f"127.0.0.1:{flight}",
                "-p",
                f"127.0.0.1:{pg}",
                "-a",
                f"127.0.0.1:{http}",
                "-t",
                f"{name}={parquet}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not _answers(flight):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"roapi did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"grpc://127.0.0.1:{flight}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be measured, or None when it can."""
    try:
        import adbc_driver_postgresql  # noqa: F401
    except ImportError:
        return "the adbc_driver_postgresql package is not installed"
    if not _answers(5432):
        return "no PostgreSQL server answers on 127.0.0.1:5432"
    return None


def _load_postgres(rows: int) -> str:
    """The benchmark table in PostgreSQL (loaded once by ADBC bulk ingest, then kept)."""
    import adbc_driver_postgresql.dbapi as pg
    import duckdb

    table = f"bench_{c.table_name(rows).split('.')[1]}_v{c.DATA_VERSION}"
    lock = c.WORK / "datasets" / ".postgres.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lock), pg.connect(PG_URI) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename = $1", (table,))
        if cur.fetchone()[0] == 1:  # type: ignore[index]
            cur.execute(f"SELECT count(*) FROM {table}")
            if cur.fetchone()[0] == rows:  # type: ignore[index]
                return table
        started = time.monotonic()
        reader = duckdb.connect().sql(c.table_sql(rows)).to_arrow_reader(100_000)
        cur.adbc_ingest(table, reader, mode="replace")
        cur.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
        cur.execute(f"ANALYZE {table}")
        conn.commit()
        c.log(f"loaded {table} into PostgreSQL in {time.monotonic() - started:.0f}s")
    return table


def _point_ids(rows: int, n: int) -> list[int]:
    rng = random.Random(5)
    return [rng.randrange(rows) for _ in range(n)]


# -- the client (a separate process) ---------------------------------------------------


def _client(args: list[str], timeout: float = 3600) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scenarios.flightsql_vs_roapi", "client", *args],
        cwd=c.REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def _connect(uri: str, token: str | None, driver: str) -> Any:
    if driver == "postgresql":
        import adbc_driver_postgresql.dbapi as pg

        return pg.connect(uri, autocommit=True)
    import adbc_driver_flightsql.dbapi as flightsql

    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {token}"} if token else {}
    return flightsql.connect(uri, db_kwargs=kwargs, autocommit=True)


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="flightsql_vs_roapi client")
    parser.add_argument("workload", choices=["scan", "points"])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--token-env", help="environment variable holding the bearer token")
    parser.add_argument("--driver", default="flightsql", choices=["flightsql", "postgresql"])
    parser.add_argument("--sql")
    parser.add_argument("--table")
    parser.add_argument("--rows", type=int, help="table rows (point ids are drawn below)")
    parser.add_argument("--n", type=int, help="point queries to time")
    parser.add_argument("--mode", default="param", choices=["param", "literal"])
    a = parser.parse_args(argv)
    conn = _connect(a.uri, os.environ.get(a.token_env) if a.token_env else None, a.driver)
    cur = conn.cursor()
    if a.workload == "scan":
        started = time.perf_counter()
        cur.execute(a.sql)
        rows = nbytes = 0
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
            nbytes += batch.nbytes
        out: dict[str, Any] = {
            "seconds": time.perf_counter() - started,
            "rows": rows,
            "bytes": nbytes,
        }
    else:
        placeholder = "$1" if a.driver == "postgresql" else "?"
        ids = _point_ids(a.rows, a.n)  # the same seeded ids for every subject

        def one(i: int) -> int:
            if a.mode == "param":
                cur.execute(f"SELECT * FROM {a.table} WHERE id = {placeholder}", (i,))
            else:
                cur.execute(f"SELECT * FROM {a.table} WHERE id = {i}")
            return len(cur.fetchall())

        for i in ids[:10]:  # warm-up: connection, prepared statement, caches
            one(i)
        latencies = []
        for i in ids:
            t0 = time.perf_counter()
            found = one(i)
            latencies.append((time.perf_counter() - t0) * 1000)
            if found != 1:
                raise RuntimeError(f"id {i}: {found} rows")
        out = {"latencies_ms": latencies}
    conn.close()
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
    else:
        main = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        main.add_argument("--quick", action="store_true")
        print(json.dumps(run(main.parse_args().quick), default=str))
