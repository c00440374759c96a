"""What every scenario needs: a real server, data, RSS sampling, client processes, stats.

- `start_server` runs a real `agentdata serve` (demo off) on free ports in a data dir,
  with settings passed as `AGENTDATA_*` variables, and waits until it answers.
- `dataset` returns a data dir holding the benchmark tables, built once through a
  server (the `execute` action) and cached under benchmarks/work/ across runs.
- `RssSampler` samples a process's resident set size in a thread.
- `run_client` / `spawn_client` run `benchmarks.clients` in separate processes, so
  client and server never share a GIL (or a core's worth of Python).
- `stats`, `metric`, `machine_info`, `plt` (matplotlib, Agg) build the report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.flight as fl

REPO = Path(__file__).resolve().parents[1]
#: Scratch space (git-ignored): cached datasets, server data dirs and logs.
WORK = Path(os.environ.get("AGENTDATA_BENCH_WORK", REPO / "benchmarks" / "work"))
#: Where latest.json, summary.md and the plots go.
RESULTS = Path(os.environ.get("AGENTDATA_BENCH_RESULTS", REPO / "benchmarks" / "results"))

MB = 1024 * 1024

#: Bumped whenever `table_sql` changes, so cached datasets are rebuilt.
DATA_VERSION = 1


def table_sql(rows: int) -> str:
    """The benchmark table: 5 columns (BIGINT, INTEGER, DOUBLE, VARCHAR, TIMESTAMP).

    Deterministic (no random()), so a reference server can build exactly the same
    table in its own process. About 46 bytes per row as Arrow.
    """
    return (
        "SELECT i AS id, (i % 1000)::INTEGER AS qty, (hash(i) % 100000) / 100.0 AS price, "
        "'customer-' || (i % 100000)::VARCHAR AS customer, "
        "TIMESTAMP '2024-01-01 00:00:00' + to_seconds(i) AS ts "
        f"FROM range({int(rows)}) t(i)"
    )


def create_snowflake_table(snow: Any, table: str, rows: int) -> None:
    """The Snowflake side's benchmark table in the emulator (syncs, federation): the
    shape of a typical fact table, a NUMBER key, a small NUMBER, money, text, time."""
    snow.execute(
        f"""create or replace table {table} as select
            seq8() as ID,
            (seq8() % 1000)::NUMBER(9,0) as QTY,
            ((seq8() % 100000) / 100)::NUMBER(12,2) as PRICE,
            'customer-' || (seq8() % 100000) as CUSTOMER,
            dateadd(second, seq8(), '2024-01-01 00:00:00'::timestamp_ntz) as TS
        from table(generator(rowcount => {int(rows)}))"""
    )


def table_name(rows: int) -> str:
    """`bench.t10m` for 10,000,000 rows, `bench.t500k` for 500,000."""
    if rows % 1_000_000 == 0:
        return f"bench.t{rows // 1_000_000}m"
    if rows % 1_000 == 0:
        return f"bench.t{rows // 1_000}k"
    return f"bench.t{rows}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bearer(token: str, timeout: float | None = None) -> fl.FlightCallOptions:
    return fl.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {token}".encode())], timeout=timeout
    )


# -- the server ----------------------------------------------------------------------


@dataclass
class BenchServer:
    """A running `agentdata serve` process and what a benchmark needs to talk to it."""

    data_dir: Path
    flight_port: int
    http_port: int
    admin_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    settings: dict[str, str] = field(default_factory=dict)
    serving_lock: Any = None  # held while this server owns data_dir (see start_server)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def flight_url(self) -> str:
        return f"grpc://127.0.0.1:{self.flight_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def execute(self, sql: str, timeout: float = 3600) -> int:
        """Run one DDL/DML statement as admin (the `execute` action)."""
        client = fl.connect(self.flight_url)
        try:
            (result,) = list(
                client.do_action(
                    fl.Action("execute", sql.encode()), bearer(self.admin_token, timeout)
                )
            )
        finally:
            client.close()
        return int(json.loads(result.body.to_pybytes())["rows"])

    def query(self, sql: str, token: str | None = None) -> pa.Table:
        """Run a small query and collect it (setup and checks, not measurements)."""
        client = fl.connect(self.flight_url)
        try:
            opts = bearer(token or self.admin_token)
            info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
            return client.do_get(info.endpoints[0].ticket, opts).read_all()
        finally:
            client.close()

    def create_token(self, role: str = "reader", name: str = "bench") -> str:
        """A fresh JWT from the control plane (clients use it as real agents would)."""
        import httpx

        r = httpx.post(
            f"{self.http_url}/api/v1/tokens",
            json={"name": name, "role": role},
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.serving_lock is not None:
            self.serving_lock.close()  # releases the flock
            self.serving_lock = None
        return int(self.proc.returncode)

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    data_dir: Path,
    settings: dict[str, str] | None = None,
    *,
    wait: float = 120,
    command: Sequence[str] | None = None,
) -> BenchServer:
    """Start `agentdata serve` (demo off) on free ports and wait until it answers.

    `settings` are `AGENTDATA_*` names without the prefix, e.g. {"MEMORY_LIMIT": "256MB"}.
    `command` replaces `python -m agentdata serve` (e.g. to run it under a profiler);
    the server's pid is then that of the command's process.
    """
    settings = {k.upper(): str(v) for k, v in (settings or {}).items()}
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _serving_lock(data_dir, wait=1800)
    try:
        return _start(data_dir, settings, wait, command, lock)
    except BaseException:
        lock.close()
        raise


def _serving_lock(data_dir: Path, wait: float) -> Any:
    """Wait for exclusive use of a data dir: DuckDB admits one server per database file,
    and two benchmark runs on one machine (say, two people's) share the cached dataset."""
    lock = open(data_dir.parent / f".{data_dir.name}.serving.lock", "w")  # noqa: SIM115
    deadline = time.monotonic() + wait
    waited = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise RuntimeError(f"{data_dir} stayed in use by another benchmark") from None
            if not waited:
                log(f"waiting: another benchmark's server is using {data_dir}")
                waited = True
            time.sleep(1.0)


def _start(
    data_dir: Path,
    settings: dict[str, str],
    wait: float,
    command: Sequence[str] | None,
    lock: Any,
) -> BenchServer:
    import httpx

    flight_port, http_port = free_port(), free_port()
    admin = "adt_bench_" + os.urandom(12).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env.update(
        {
            "AGENTDATA_DATA_DIR": str(data_dir),
            "AGENTDATA_FLIGHT_PORT": str(flight_port),
            "AGENTDATA_HTTP_PORT": str(http_port),
            "AGENTDATA_ADMIN_TOKEN": admin,
            "AGENTDATA_DEMO": "false",
            "AGENTDATA_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"AGENTDATA_{k}": v for k, v in settings.items()})
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        list(command or [sys.executable, "-m", "agentdata", "serve"]),
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    server = BenchServer(data_dir, flight_port, http_port, admin, proc, log_path, settings, lock)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.http_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start in {wait}s:\n{server.log()[-4000:]}")


@contextlib.contextmanager
def running_server(
    data_dir: Path, settings: dict[str, str] | None = None, command: Sequence[str] | None = None
) -> Iterator[BenchServer]:
    server = start_server(data_dir, settings, command=command)
    try:
        yield server
    finally:
        server.stop()


# -- data --------------------------------------------------------------------------


def dataset(rows: Sequence[int]) -> Path:
    """A data dir holding `bench.t<N>` for each N in `rows`, built once and cached.

    The cache lives under benchmarks/work/datasets/, keyed by the DuckDB version and
    `DATA_VERSION`; tables missing from it are added. A file lock keeps two runs from
    building at once. Servers for measurements are started on this dir afterwards
    (one at a time: DuckDB admits a single opener).
    """
    import duckdb

    root = WORK / "datasets" / f"duckdb{duckdb.__version__}-v{DATA_VERSION}"
    data_dir = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done_path = root / "tables.json"
        done: set[str] = set(json.loads(done_path.read_text())) if done_path.exists() else set()
        missing = [n for n in sorted(set(rows)) if table_name(n) not in done]
        if missing:
            # Build with a generous memory limit; measurements set their own.
            with running_server(data_dir, {"MEMORY_LIMIT": "4GB"}) as server:
                server.execute("CREATE SCHEMA IF NOT EXISTS bench")
                for n in missing:
                    started = time.monotonic()
                    name = table_name(n)
                    server.execute(f"CREATE OR REPLACE TABLE {name} AS {table_sql(n)}")
                    count = server.query(f"SELECT count(*) AS n FROM {name}").column(0)[0]
                    if count.as_py() != n:
                        raise RuntimeError(f"{name} has {count} rows, expected {n}")
                    done.add(name)
                    done_path.write_text(json.dumps(sorted(done)))
                    log(f"built {name} ({n:,} rows) in {time.monotonic() - started:.1f}s")
        return data_dir


def reference_db(rows: int) -> Path:
    """A separate DuckDB file holding the same `bench.t<N>` table, for in-process references.

    The server's data.duckdb cannot be opened by anyone else while it runs, so the
    in-process reference (and the bare Flight server) read this copy, built the same
    way and cached beside the dataset. Several processes may open it read-only at once.
    """
    import duckdb

    root = WORK / "datasets" / f"duckdb{duckdb.__version__}-v{DATA_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"ref-{table_name(rows).split('.')[1]}.duckdb"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            started = time.monotonic()
            tmp = path.with_suffix(".building")
            tmp.unlink(missing_ok=True)
            con = duckdb.connect(str(tmp))
            con.execute("CREATE SCHEMA bench")
            con.execute(f"CREATE TABLE {table_name(rows)} AS {table_sql(rows)}")
            con.close()
            tmp.rename(path)
            log(f"built reference {path.name} in {time.monotonic() - started:.1f}s")
    return path


def scratch_dir(name: str) -> Path:
    """An empty directory under benchmarks/work/ for one scenario's own files."""
    path = WORK / "scratch" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# -- memory ------------------------------------------------------------------------


class RssSampler:
    """Samples one process's RSS every `interval` seconds in a background thread.

    `samples` holds (seconds since start, rss bytes). `mark(label)` records an event
    (e.g. "streams start") at the current time, for plots.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.marks: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append((time.monotonic() - self._t0, int(rss)))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> RssSampler:
        self._stop.set()
        self._thread.join()
        return self

    def mark(self, label: str) -> None:
        self.marks.append((time.monotonic() - self._t0, label))

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def peak(self) -> int:
        return max((r for _, r in self.samples), default=0)

    @property
    def first(self) -> int:
        return self.samples[0][1] if self.samples else 0


# -- clients -----------------------------------------------------------------------


def client_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.clients", *map(str, args)]


def spawn_client(args: Sequence[str]) -> subprocess.Popen[str]:
    """Start a client process (`python -m benchmarks.clients ARGS`); see `collect`."""
    return subprocess.Popen(
        client_command(args),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collect(proc: subprocess.Popen[str], timeout: float = 1800) -> dict[str, Any]:
    """Wait for a client process; its last stdout line is its JSON result."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"client timed out after {timeout}s: {err[-2000:]}") from None
    lines = [line for line in out.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client failed ({proc.returncode}): {err.strip()[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def warm(url: str, sql: str, token: str | None = None) -> int:
    """Fetch `sql` once from this process, untimed: fills the server's buffer pool and
    caches without paying for a client process. Returns the rows read."""
    from benchmarks.clients import fetch_once

    client = fl.connect(url)
    try:
        opts = bearer(token) if token else fl.FlightCallOptions()
        return fetch_once(client, sql, opts)[0]
    finally:
        client.close()


class FetchSession:
    """One long-lived client process (`benchmarks.clients session`) of several servers.

    It connects to every subject and warms each channel once, then times only the
    fetches it is asked for, one at a time: the same client compares two servers
    round by round, the way an agent with an open connection sees them, and the
    caller can read a server's CPU time around each fetch.

        with FetchSession({"a": server.flight_url, "b": bare_url}, {"a": token}) as s:
            s.fetch("a", sql)  # {"seconds", "rows", "bytes", "cache"}

    A subject is a Flight URL or ``duckdb:PATH`` (in the client process). Tokens go
    to the client through its environment, never its command line.
    """

    def __init__(
        self,
        subjects: dict[str, str],
        tokens: dict[str, str] | None = None,
        *,
        batch_rows: int = 65_536,
        ready_timeout: float = 300,
    ) -> None:
        args = ["session", "--batch-rows", str(batch_rows)]
        env = dict(os.environ)
        for name, target in subjects.items():
            args += ["--subject", f"{name}={target}"]
        for name, token in (tokens or {}).items():
            var = f"AGENTDATA_BENCH_SESSION_TOKEN_{name.upper()}"
            env[var] = token
            args += ["--auth", f"{name}={var}"]
        self.proc = subprocess.Popen(
            client_command(args),
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._readline(ready_timeout)
        if line.strip() != "READY":
            self.close()
            raise RuntimeError(f"session client did not start ({line.strip()!r})")

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        done: list[str] = []
        reader = threading.Thread(target=lambda: done.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not done:
            self.proc.kill()
            raise RuntimeError(f"session client gave no answer in {timeout:g}s")
        if not done[0]:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"session client exited: {err.strip()[-3000:]}")
        return done[0]

    def fetch(self, subject: str, sql: str, timeout: float = 1800) -> dict[str, Any]:
        """Fetch `sql` from `subject` to the end; raises if the client reports an error."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"subject": subject, "sql": sql}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._readline(timeout))
        if "error" in answer:
            raise RuntimeError(f"{subject}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> FetchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_client(args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:
    """Run one client process to completion and return its JSON result."""
    return collect(spawn_client(args), timeout)


def run_clients(
    arg_lists: Sequence[Sequence[str]],
    timeout: float = 1800,
    *,
    ready_timeout: float = 300,
    on_go: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """Run several client processes at once; results in the same order.

    Clients get `--sync`: each prints READY once imported, connected and warmed up,
    and all are sent GO together, so slow start-ups on a busy machine never eat into
    the timed part. Each result gets "go" (the time.time() of the start signal);
    `on_go` runs just before the signal (e.g. to read the server's CPU time).
    """
    procs = [spawn_client([*a, "--sync"]) for a in arg_lists]
    deadline = time.monotonic() + ready_timeout
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "READY" or time.monotonic() > deadline:
            for q in procs:
                q.kill()
            err = p.stderr.read() if p.stderr else ""
            raise RuntimeError(f"client did not get ready ({line.strip()!r}): {err[-3000:]}")
    if on_go is not None:
        on_go()
    go = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("GO\n")
        p.stdin.flush()
    results = []
    errors = []
    for p in procs:
        try:
            results.append({**collect(p, timeout), "go": go})
        except RuntimeError as e:
            errors.append(str(e))
    if errors:
        raise RuntimeError("; ".join(errors))
    return results


# -- statistics and the report ---------------------------------------------------------


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median with min and max (and every run), the way figures are reported."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
    }


def interleaved(runs: int, subjects: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Run each subject `runs` times, rotating the order every round.

    On a shared machine, load drifts; rotating (a, b, c), (b, c, a), ... spreads the
    drift over every subject instead of favouring whoever runs first.
    """
    names = list(subjects)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(runs):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(subjects[name]())
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process (all its threads)."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) of already sorted values, nearest-rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[k])


def latency_stats(ms: Sequence[float]) -> dict[str, Any]:
    """Percentiles (nearest-rank), mean, max and count of latencies in milliseconds."""
    ordered = sorted(ms)
    return {
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "mean": statistics.fmean(ordered),
        "max": ordered[-1],
        "n": len(ordered),
    }


def metric(
    metric: str,
    value: float | None,
    unit: str = "",
    *,
    reference: float | str | None = None,
    reference_label: str | None = None,
    ratio: float | None = None,
    aim: str | None = None,
    met: bool | None = None,
    spread: tuple[float, float] | None = None,
    load: float | None = None,
) -> dict[str, Any]:
    """One row of the summary table (see the contract in benchmarks.scenarios).

    `ratio` defaults to value / reference when both are numbers; `reference_label`
    names the reference (e.g. "bare Flight"); `spread` is the (min, max) of the runs
    behind a median; `load` is the machine's 1-minute load average while the figure
    was taken (by default: now, so build rows right after measuring, or pass the
    load read at the end of the measurement with `load1()`).
    """
    if ratio is None and isinstance(reference, int | float) and value is not None and reference:
        ratio = value / reference
    return {
        "metric": metric,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_label": reference_label,
        "ratio": ratio,
        "aim": aim,
        "met": met,
        "spread": list(spread) if spread else None,
        "load": round(load1() if load is None else load, 2),
    }


def machine_info() -> dict[str, Any]:
    """Cores, memory, load and library versions: the machine a figure was taken on."""
    import duckdb

    versions: dict[str, str] = {
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
    }
    for dist in ("adbc-driver-flightsql", "adbc-driver-manager", "agentdata", "grpcio"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": cpu_model,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "commit": commit,
    }


def load1() -> float:
    """The 1-minute load average now (every figure in the summary quotes one)."""
    return float(os.getloadavg()[0])


def load_note() -> str:
    """A one-line note on how busy the machine is (other processes skew timings)."""
    load1, _, _ = os.getloadavg()
    return f"1-minute load average {load1:.2f} on {os.cpu_count()} cores at this point"


def plt() -> Any:
    """matplotlib.pyplot with the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def log(message: str) -> None:
    """Progress on stderr (stdout of a scenario child carries its JSON)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
