"""Memory stays bounded (issue 11, item 6): streaming a stored table 3.4 times the
memory limit adds at most memory_limit + 64 MB + 2 batches to the server's resident
memory (RSS sampled from /proc every 5 ms while it streams), and a query GetFlightInfo
started but no DoGet ever fetched gives back what it held once started_query_ttl_s has
passed: DuckDB's own memory accounting returns to idle, no query is left running, and
round after round the process stays within the same bound over its resident memory
before the rounds. The bound for 16 streams at once is measured in benchmarks/
(memory scenario), where it is not met yet.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import pyarrow.flight as fl
import pytest

from flight_server.flightsql.messages import pack
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from tests.support.server import ServerProcess, start_server

MEMORY_LIMIT = "128MB"
MEMORY_LIMIT_BYTES = 128_000_000
MB = 1024 * 1024
ROWS = 2_000_000  # x ~220 bytes a row: ~440 MB streamed, 3.4x the memory limit
#: Long enough for two GetFlightInfo sorts on a loaded machine to be both held at once.
STARTED_TTL_S = 4


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """The highest RSS of a process, sampled every few milliseconds on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("memory")
    server = start_server(
        root / "data",
        env={
            "AGENTDATA_MEMORY_LIMIT": MEMORY_LIMIT,
            "AGENTDATA_STARTED_QUERY_TTL_S": str(STARTED_TTL_S),
        },
    )
    try:
        server.execute(
            server.admin_token,
            "CREATE TABLE main.big AS SELECT range AS id, "
            f"repeat('x', 200) || range::VARCHAR AS s, range * 1.5 AS f FROM range({ROWS})",
        )
        yield server
    finally:
        server.stop()
        shutil.rmtree(root / "data", ignore_errors=True)  # half a GB: not kept to the end


def _running(server: ServerProcess, client: fl.FlightClient) -> int:
    import json

    result = list(client.do_action(fl.Action("health", b""), server.options(server.admin_token)))
    return int(json.loads(result[0].body.to_pybytes())["running_queries"])


def test_streaming_a_stored_table_adds_at_most_the_limit_64_mb_and_two_batches(
    big: ServerProcess,
) -> None:
    token = big.create_token("reader", name="streamer")["token"]
    client = big.flight()
    try:
        client.do_get(
            client.get_flight_info(
                fl.FlightDescriptor.for_command(b"SELECT * FROM main.big LIMIT 10"),
                big.options(token),
            )
            .endpoints[0]
            .ticket,
            big.options(token),
        ).read_all()
        idle = _rss(big.proc.pid)
        largest = rows = 0
        with Sampler(big.proc.pid) as sampler:
            info = client.get_flight_info(
                fl.FlightDescriptor.for_command(b"SELECT * FROM main.big"), big.options(token)
            )
            reader = client.do_get(info.endpoints[0].ticket, big.options(token))
            for chunk in reader:
                rows += chunk.data.num_rows
                largest = max(largest, chunk.data.nbytes)
        assert rows == ROWS
        growth = sampler.peak - idle
        bound = MEMORY_LIMIT_BYTES + 64 * MB + 2 * largest
        assert growth <= bound, f"RSS grew {growth / MB:.0f} MB, bound {bound / MB:.0f} MB"
    finally:
        client.close()


def _duckdb_memory(server: ServerProcess) -> int:
    """Bytes DuckDB's buffer manager holds now (its own accounting)."""
    table = server.query(
        server.admin_token, "SELECT sum(memory_usage_bytes)::BIGINT AS b FROM duckdb_memory()"
    )
    return int(table["b"][0].as_py())


def test_a_started_query_never_fetched_gives_its_memory_back(big: ServerProcess) -> None:
    """Flight SQL runs a query in GetFlightInfo: here a sort of two columns of the whole
    table (tens of MB held by DuckDB). Never fetched, it is closed after
    started_query_ttl_s (4 s here): no query left running, DuckDB's memory back to
    what it was (its own accounting: the exact signal of what a started query kept),
    and the process's RSS within memory_limit + 64 MB of what it was before the rounds.

    RSS alone cannot say "nothing kept" round by round: freed memory goes back to the
    system on the allocator's schedule, and RSS between rounds was seen to move by
    110 MB either way with nothing held."""
    token = big.create_token("reader", name="never-fetches")["token"]
    client = big.flight()
    query = pb.CommandStatementQuery(query="SELECT id, f FROM main.big ORDER BY f DESC")
    try:
        duck_idle = _duckdb_memory(big)
        rss_before = _rss(big.proc.pid)
        after_rounds = []
        for _ in range(3):
            started = time.monotonic()
            for _ in range(2):
                client.get_flight_info(
                    fl.FlightDescriptor.for_command(pack(query)), big.options(token)
                )
            if time.monotonic() - started < STARTED_TTL_S:  # else the first may be gone
                assert _running(big, client) == 2
            assert _duckdb_memory(big) > duck_idle + 16 * MB  # the sorted results are held
            deadline = time.monotonic() + 30
            while _running(big, client) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _running(big, client) == 0
            assert _duckdb_memory(big) <= duck_idle + MB
            after_rounds.append(_rss(big.proc.pid))
        # Kept sorts would show in DuckDB's accounting above; this catches anything else
        # (batches held in Python, say) that grows past a memory limit over the rounds.
        bound = rss_before + MEMORY_LIMIT_BYTES + 64 * MB
        assert max(after_rounds) <= bound, ([r // MB for r in after_rounds], bound // MB)
    finally:
        client.close()
