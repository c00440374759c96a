"""Client workloads, each run in its own process: `python -m benchmarks.clients CMD ...`.

Every command prints one JSON line (its result) on stdout as its last line.

    fetch   SELECT * (or any SQL) over pyarrow.flight: GetFlightInfo + DoGet, read to
            the end without keeping batches; --threads streams at once per process.
    duckdb  the same SQL in-process in DuckDB, read to the end as Arrow batches (the
            in-process reference: no server, no network).
    small   agent-style small queries (point lookup, small aggregate, LIMIT 100) in a
            closed loop for a fixed time, over pyarrow.flight, ADBC Flight SQL, or
            in-process DuckDB (the reference); prints every latency.
    session a long-lived client of several servers at once, driven line by line on
            stdin by the scenario (`benchmarks.common.FetchSession`): connects and
            warms up once, then times only each fetch it is asked for, so two servers
            are compared side by side by the same client, round by round.
    points  serial point queries `WHERE id = k` (distinct ids, seeded) over plain
            Flight (id inlined), ADBC Flight SQL (bound `?`) or in-process DuckDB
            (prepared `?`); prints every latency.

`--sync` lets several processes start their timed part together: once every thread
has imported, connected and warmed up, the process prints `READY` and waits for a
`GO` line on stdin (see `benchmarks.common.run_clients`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow.flight as fl


class StartLine:
    """All threads of this process get ready, then start together (on GO, with --sync)."""

    def __init__(self, threads: int, sync: bool) -> None:
        self._ready = threading.Barrier(threads + 1)
        self._go = threading.Event()
        self.sync = sync

    def wait(self) -> None:
        """Called by each thread when it is ready to start its timed part."""
        self._ready.wait()
        self._go.wait()

    def release(self) -> None:
        """Called by the main thread: wait for all threads, then (with --sync) for GO."""
        self._ready.wait()
        if self.sync:
            sys.stdout.write("READY\n")
            sys.stdout.flush()
            if sys.stdin.readline().strip() != "GO":
                raise SystemExit("expected GO on stdin")
        self._go.set()


def _options(token: str | None) -> fl.FlightCallOptions:
    if not token:
        return fl.FlightCallOptions()
    return fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def _in_threads(n: int, target: Callable[[int], Any], start: StartLine) -> list[Any]:
    """Run target(i) in n threads (each calls start.wait() when ready); re-raise failures."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as e:  # reported below, with the others
            errors.append(e)
            start._ready.abort()  # a thread that failed before the start line frees the rest

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        start.release()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# -- fetch -------------------------------------------------------------------------


def fetch_once(client: fl.FlightClient, sql: str, opts: fl.FlightCallOptions) -> tuple[int, int]:
    """One query, read to the end: (rows, Arrow bytes). Batches are dropped as read."""
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
    rows = nbytes = 0
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, opts)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                rows += chunk.data.num_rows
                nbytes += chunk.data.nbytes
    return rows, nbytes


def cmd_fetch(a: argparse.Namespace) -> dict[str, Any]:
    opts = _options(a.token)
    start = StartLine(a.threads, a.sync)

    def one_thread(_: int) -> dict[str, Any]:
        client = fl.connect(a.url)
        # Set the connection up before timing (agents keep theirs): the first call on
        # a fresh gRPC channel costs tens of ms that are not streaming.
        list(client.list_actions(opts))
        if a.warm_sql:
            fetch_once(client, a.warm_sql, opts)
        for _ in range(a.warmup):
            fetch_once(client, a.sql, opts)
        start.wait()
        t_start = time.time()
        times = []
        rows = nbytes = 0
        for _ in range(a.runs):
            t0 = time.perf_counter()
            rows, nbytes = fetch_once(client, a.sql, opts)
            times.append(time.perf_counter() - t0)
        client.close()
        return {
            "seconds": times,
            "rows": rows,
            "bytes": nbytes,
            "start": t_start,
            "end": time.time(),
        }

    per_thread = _in_threads(a.threads, one_thread, start)
    return {
        "seconds": [t for r in per_thread for t in r["seconds"]],
        "rows": per_thread[0]["rows"],
        "bytes": per_thread[0]["bytes"],
        "threads": per_thread,
        "start": min(r["start"] for r in per_thread),
        "end": max(r["end"] for r in per_thread),
    }


# -- duckdb in-process -----------------------------------------------------------------


def cmd_duckdb(a: argparse.Namespace) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(a.db, read_only=True)

    def read_reader() -> tuple[int, int]:
        rows = nbytes = 0
        reader = con.sql(a.sql).to_arrow_reader(a.batch_rows)
        for batch in reader:
            rows += batch.num_rows
            nbytes += batch.nbytes
        return rows, nbytes

    def read_table() -> tuple[int, int]:
        table = con.sql(a.sql).to_arrow_table()
        return table.num_rows, table.nbytes

    fn = read_table if a.mode == "table" else read_reader
    for _ in range(a.warmup):
        fn()
    times = []
    rows = nbytes = 0
    for _ in range(a.runs):
        t0 = time.perf_counter()
        rows, nbytes = fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": times, "rows": rows, "bytes": nbytes}


# -- small queries -------------------------------------------------------------------


def small_query(rng: random.Random, i: int, table: str, rows: int) -> tuple[str, str]:
    """The i-th query of the agent-style mix: (kind, SQL). Literals vary per call."""
    kind = ("point", "aggregate", "limit100")[i % 3]
    if kind == "point":
        return kind, f"SELECT * FROM {table} WHERE id = {rng.randrange(rows)}"
    if kind == "aggregate":
        lo = rng.randrange(max(1, rows - 10_000))
        return kind, (
            "SELECT qty % 10 AS bucket, count(*) AS n, avg(price) AS avg_price "
            f"FROM {table} WHERE id BETWEEN {lo} AND {lo + 9_999} GROUP BY 1 ORDER BY 1"
        )
    return (
        kind,
        f"SELECT id, customer, price FROM {table} WHERE qty = {rng.randrange(1000)} LIMIT 100",
    )


def _flight_runner(a: argparse.Namespace) -> Callable[[str], int]:
    client = fl.connect(a.url)
    opts = _options(a.token)

    def run(sql: str) -> int:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        return sum(client.do_get(e.ticket, opts).read_all().num_rows for e in info.endpoints)

    return run


def _adbc_runner(a: argparse.Namespace) -> Callable[[str], int]:
    import adbc_driver_flightsql
    import adbc_driver_flightsql.dbapi as flightsql

    conn = flightsql.connect(
        a.url,
        db_kwargs={
            adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {a.token}"
        },
        autocommit=True,
    )
    cur = conn.cursor()

    def run(sql: str) -> int:
        cur.execute(sql)
        return int(cur.fetch_arrow_table().num_rows)

    return run


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def _duckdb_runner(a: argparse.Namespace) -> Callable[[str], int]:
    """The in-process reference: the same queries on a DuckDB cursor, no protocol."""
    import duckdb

    with _shared_lock:
        if "con" not in _shared:
            _shared["con"] = duckdb.connect(a.db, read_only=True)
        cur = _shared["con"].cursor()

    def run(sql: str) -> int:
        return int(cur.sql(sql).to_arrow_table().num_rows)

    return run


def cmd_small(a: argparse.Namespace) -> dict[str, Any]:
    make = {"adbc": _adbc_runner, "flight": _flight_runner, "duckdb": _duckdb_runner}[a.driver]
    start = StartLine(a.threads, a.sync)

    def one_thread(t: int) -> dict[str, Any]:
        rng = random.Random(a.seed * 1000 + t)
        run = make(a)
        for i in range(3):  # warm the connection and the server's caches
            run(small_query(rng, i, a.table, a.rows)[1])
        start.wait()
        end = time.time() + a.seconds
        lat: list[float] = []
        kinds: list[str] = []
        errors = 0
        first_error = ""
        i = t
        while True:
            kind, sql = small_query(rng, i, a.table, a.rows)
            t0 = time.perf_counter()
            if time.time() >= end:
                break
            try:
                run(sql)
            except Exception as e:
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"[:500]
                continue
            finally:
                i += 1
            lat.append((time.perf_counter() - t0) * 1000)
            kinds.append(kind)
        return {"latencies_ms": lat, "kinds": kinds, "errors": errors, "first_error": first_error}

    per_thread = _in_threads(a.threads, one_thread, start)
    return {
        "latencies_ms": [round(x, 3) for r in per_thread for x in r["latencies_ms"]],
        "kinds": [k for r in per_thread for k in r["kinds"]],
        "errors": sum(r["errors"] for r in per_thread),
        "first_error": next((r["first_error"] for r in per_thread if r["first_error"]), ""),
        "seconds": a.seconds,
        "threads": a.threads,
    }


# -- session: one long-lived client, driven by the scenario ---------------------------


def _read_stream(reader: fl.FlightStreamReader) -> tuple[int, int]:
    rows = nbytes = 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return rows, nbytes
        if chunk.data is not None:
            rows += chunk.data.num_rows
            nbytes += chunk.data.nbytes


class _FlightSubject:
    """One server, one channel kept for the whole session (as an agent keeps its own)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.client = fl.connect(url)
        self.opts = _options(token)
        list(self.client.list_actions(self.opts))  # the channel's set-up, outside timings

    def fetch(self, sql: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        info = self.client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), self.opts)
        rows = nbytes = 0
        cache = None
        for endpoint in info.endpoints:
            reader = self.client.do_get(endpoint.ticket, self.opts)
            metadata = reader.schema.metadata or {}
            cache = metadata.get(b"agentdata.cache", b"").decode() or cache
            r, b = _read_stream(reader)
            rows, nbytes = rows + r, nbytes + b
        return {
            "seconds": time.perf_counter() - t0,
            "rows": rows,
            "bytes": nbytes,
            "cache": cache,
        }

    def close(self) -> None:
        self.client.close()


class _DuckDBSubject:
    """The engine ceiling: the same SQL in this process, read as Arrow batches."""

    def __init__(self, db: str, batch_rows: int) -> None:
        import duckdb

        self.con = duckdb.connect(db, read_only=True)
        self.batch_rows = batch_rows

    def fetch(self, sql: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = nbytes = 0
        for batch in self.con.sql(sql).to_arrow_reader(self.batch_rows):
            rows += batch.num_rows
            nbytes += batch.nbytes
        return {"seconds": time.perf_counter() - t0, "rows": rows, "bytes": nbytes}

    def close(self) -> None:
        self.con.close()


def cmd_session(a: argparse.Namespace) -> dict[str, Any]:
    """Serve fetch requests from stdin: one JSON line {"subject", "sql"} in, one out.

    Subjects are NAME=grpc://host:port (token from the environment variable named by
    --auth NAME=VAR, so it never shows in `ps`) or NAME=duckdb:PATH. Prints READY once
    every subject is connected; an empty line or EOF ends the session.
    """
    tokens = dict(x.split("=", 1) for x in a.auth)
    subjects: dict[str, _FlightSubject | _DuckDBSubject] = {}
    for spec in a.subject:
        name, target = spec.split("=", 1)
        if target.startswith("duckdb:"):
            subjects[name] = _DuckDBSubject(target.removeprefix("duckdb:"), a.batch_rows)
        else:
            token = os.environ.get(tokens[name]) if name in tokens else None
            subjects[name] = _FlightSubject(target, token)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    served = 0
    for line in sys.stdin:
        if not line.strip():
            break
        request = json.loads(line)
        try:
            answer = subjects[request["subject"]].fetch(request["sql"])
        except Exception as e:  # reported to the scenario, which decides
            answer = {"error": f"{type(e).__name__}: {e}"[:1000]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        served += 1
    for subject in subjects.values():
        subject.close()
    return {"served": served}


# -- points: serial point queries ----------------------------------------------------


def cmd_points(a: argparse.Namespace) -> dict[str, Any]:
    """`--n` point queries one after another, each id distinct (so no two texts or
    parameter sets repeat, and a results cache never answers for the index)."""
    rng = random.Random(a.seed)
    ids = rng.sample(range(a.rows), a.n + a.warmup)
    sql_param = f"SELECT * FROM {a.table} WHERE id = ?"
    one: Callable[[int], int]
    if a.driver == "flight":
        client = fl.connect(a.url)
        opts = _options(a.token)
        list(client.list_actions(opts))

        def one(i: int) -> int:
            sql = f"SELECT * FROM {a.table} WHERE id = {i}"
            info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
            return sum(client.do_get(e.ticket, opts).read_all().num_rows for e in info.endpoints)

    elif a.driver == "adbc":
        import adbc_driver_flightsql.dbapi as flightsql

        conn = flightsql.connect(
            a.url,
            db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {a.token}"},
            autocommit=True,
        )
        cur = conn.cursor()

        def one(i: int) -> int:
            cur.execute(sql_param, (i,))
            return int(cur.fetch_arrow_table().num_rows)

    else:
        import duckdb

        dcur = duckdb.connect(a.db, read_only=True).cursor()

        def one(i: int) -> int:
            result = dcur.execute(sql_param, [i])
            assert result is not None
            table = result.to_arrow_table()
            assert table is not None
            return int(table.num_rows)

    for i in ids[: a.warmup]:  # connection, prepared statement, caches
        one(i)
    latencies = []
    for i in ids[a.warmup :]:
        t0 = time.perf_counter()
        found = one(i)
        latencies.append((time.perf_counter() - t0) * 1000)
        if found != 1:
            raise RuntimeError(f"id {i}: {found} rows, expected 1")
    return {"latencies_ms": [round(x, 4) for x in latencies], "driver": a.driver}


# -- entry -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clients")
    sub = p.add_subparsers(dest="cmd", required=True)

    f = sub.add_parser("fetch")
    f.add_argument("--url", required=True)
    f.add_argument("--token", default="")
    f.add_argument("--sql", required=True)
    f.add_argument("--runs", type=int, default=1)
    f.add_argument("--warmup", type=int, default=0)
    f.add_argument("--warm-sql", default="", help="run once before timing, to warm the channel")
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--sync", action="store_true", help="print READY, start on GO")

    d = sub.add_parser("duckdb")
    d.add_argument("--db", required=True)
    d.add_argument("--sql", required=True)
    d.add_argument("--runs", type=int, default=1)
    d.add_argument("--warmup", type=int, default=1)
    d.add_argument("--batch-rows", type=int, default=65_536)
    d.add_argument("--mode", choices=["reader", "table"], default="reader")

    s = sub.add_parser("small")
    s.add_argument("--url", default="")
    s.add_argument("--token", default="")
    s.add_argument("--db", default="", help="DuckDB file, for --driver duckdb")
    s.add_argument("--driver", choices=["flight", "adbc", "duckdb"], default="flight")
    s.add_argument("--table", required=True)
    s.add_argument("--rows", type=int, required=True)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--seconds", type=float, default=5.0)
    s.add_argument("--sync", action="store_true", help="print READY, start on GO")
    s.add_argument("--seed", type=int, default=1)

    se = sub.add_parser("session")
    se.add_argument("--subject", action="append", required=True, help="NAME=URL|duckdb:PATH")
    se.add_argument("--auth", action="append", default=[], help="NAME=ENVVAR holding a token")
    se.add_argument("--batch-rows", type=int, default=65_536)

    pt = sub.add_parser("points")
    pt.add_argument("--driver", choices=["flight", "adbc", "duckdb"], required=True)
    pt.add_argument("--url", default="")
    pt.add_argument("--token", default="")
    pt.add_argument("--db", default="", help="DuckDB file, for --driver duckdb")
    pt.add_argument("--table", required=True)
    pt.add_argument("--rows", type=int, required=True)
    pt.add_argument("--n", type=int, default=500)
    pt.add_argument("--warmup", type=int, default=20)
    pt.add_argument("--seed", type=int, default=7)

    a = p.parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "fetch": cmd_fetch,
        "duckdb": cmd_duckdb,
        "small": cmd_small,
        "session": cmd_session,
        "points": cmd_points,
    }
    result = commands[a.cmd](a)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
