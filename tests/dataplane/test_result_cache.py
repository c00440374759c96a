"""The results cache against a real server: hits are marked and counted, volatile
queries are never cached, and under writers and readers interleaved a read that starts
after a write committed never sees the older data."""

from __future__ import annotations

import threading
import time

import pyarrow.flight as fl
import pytest

from tests.support.server import ServerProcess


def _fetch(server: ServerProcess, token: str, sql: str) -> tuple[list[dict], str]:
    client = server.flight()
    try:
        opts = server.options(token)
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        table = client.do_get(info.endpoints[0].ticket, opts).read_all()
    finally:
        client.close()
    cache = (table.schema.metadata or {}).get(b"agentdata.cache", b"").decode()
    return table.to_pylist(), cache


def test_repeated_query_is_a_hit_until_a_write(
    server: ServerProcess, reader_token: str, writer_token: str
) -> None:
    server.execute(writer_token, "CREATE TABLE main.cache_probe AS SELECT 1 AS v")
    sql = "SELECT v, count(*) AS n FROM main.cache_probe GROUP BY v"
    first, how = _fetch(server, reader_token, sql)
    assert how == "miss" and first == [{"v": 1, "n": 1}]
    again, how = _fetch(server, reader_token, sql)
    assert how == "hit" and again == first
    server.execute(writer_token, "INSERT INTO main.cache_probe VALUES (1)")
    after, how = _fetch(server, reader_token, sql)
    assert how == "miss" and after == [{"v": 1, "n": 2}]
    with server.http() as http:
        metrics = http.get("/metrics").text
    assert 'agentdata_result_cache_requests_total{outcome="hit"}' in metrics
    assert "agentdata_result_cache_bytes" in metrics


@pytest.mark.parametrize(
    "sql",
    ["SELECT random() AS r", "SELECT now() AS t", "SELECT * FROM demo.orders USING SAMPLE 5 ROWS"],
)
def test_volatile_queries_are_never_cached(
    server: ServerProcess, reader_token: str, sql: str
) -> None:
    for _ in range(2):
        _, how = _fetch(server, reader_token, sql)
        assert how == "miss"


def test_a_read_after_a_commit_never_sees_older_data(
    server: ServerProcess, reader_token: str, writer_token: str
) -> None:
    """Writers bump a version column for 10 s while readers repeat the same query (so
    the cache is hot); each read must see at least the version committed before it
    started."""
    server.execute(writer_token, "CREATE OR REPLACE TABLE main.versioned AS SELECT 0 AS v")
    committed = [0]
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    hits = [0]

    def write() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            server.execute(writer_token, f"UPDATE main.versioned SET v = {version}")
            with lock:
                committed[0] = version

    def read() -> None:
        while not stop.is_set():
            with lock:
                floor = committed[0]
            rows, how = _fetch(server, reader_token, "SELECT max(v) AS v FROM main.versioned")
            hits[0] += how == "hit"
            if rows[0]["v"] < floor:
                failures.append(f"read {rows[0]['v']} after version {floor} committed ({how})")

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not failures:
        stop.wait(0.2)
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures[:5]
    assert committed[0] > 5, "the writer made too little progress to mean anything"
    assert hits[0] > 0, "the readers never hit the cache: the test exercised nothing"
