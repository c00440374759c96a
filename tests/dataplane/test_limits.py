"""Timeouts, cancel, max_rows, client disconnects and many concurrent streams."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.server import ServerProcess

HEAVY = b"SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"
LONG_SCAN = b"SELECT a.range AS x, b.range AS y FROM range(1000000) a, range(1000000) b"


def _drain(reader: fl.FlightStreamReader) -> int:
    """Read chunk by chunk (read_all turns CANCELLED into KeyboardInterrupt in pyarrow)."""
    rows = 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return rows
        rows += chunk.data.num_rows if chunk.data is not None else 0


def _running(server: ServerProcess, client: fl.FlightClient) -> int:
    """Queries the server is running now (its `health` action)."""
    (r,) = list(client.do_action(fl.Action("health", b""), server.options(server.admin_token)))
    return int(json.loads(r.body.to_pybytes())["running_queries"])


def _wait_running(server: ServerProcess, client: fl.FlightClient, n: int) -> None:
    deadline = time.monotonic() + 30
    while _running(server, client) != n:
        assert time.monotonic() < deadline, f"running queries never became {n}"
        time.sleep(0.05)


def _audit_record(server: ServerProcess, token_id: str) -> dict[str, object]:
    """The one audit record of a token's query, once the server has written it."""
    deadline = time.monotonic() + 30
    with server.http() as http:
        while True:
            items = http.get("/api/v1/audit", params={"token_id": token_id}).json()["items"]
            if items:
                (record,) = items
                return record
            assert time.monotonic() < deadline, "no audit record for the query"
            time.sleep(0.05)


def test_token_timeout_ends_heavy_query_on_time(server: ServerProcess) -> None:
    created = server.create_token("reader", name="impatient", timeout_s=1.0)
    client = server.flight()
    opts = server.options(created["token"])
    base = _running(server, client)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(HEAVY), opts)
    # HEAVY would run for hours: only the token's 1 s timeout ends it.
    with pytest.raises(fl.FlightTimedOutError, match=r"\[deadline_exceeded\].*1s timeout"):
        _drain(client.do_get(info.endpoints[0].ticket, opts))
    _wait_running(server, client, base)  # stopped on the server, not only for the client
    assert _audit_record(server, created["id"])["outcome"] == "deadline_exceeded"


def test_timeout_mid_stream_is_deadline_exceeded(server: ServerProcess) -> None:
    created = server.create_token("reader", name="impatient-scan", timeout_s=1.0)
    client = server.flight()
    opts = server.options(created["token"])
    base = _running(server, client)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(LONG_SCAN), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    assert reader.read_chunk().data.num_rows > 0  # the stream is flowing when time runs out
    with pytest.raises(fl.FlightTimedOutError):
        _drain(reader)
    _wait_running(server, client, base)
    assert _audit_record(server, created["id"])["outcome"] == "deadline_exceeded"


def test_cancel_action_stops_running_query(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    opts = server.options(reader_token)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(HEAVY), opts)
    ticket = info.endpoints[0].ticket
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            _drain(server.flight().do_get(ticket, opts))
            outcome["error"] = None
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e

    base = _running(server, client)
    t = threading.Thread(target=run)
    t.start()
    _wait_running(server, client, base + 1)
    other = server.create_token("reader", name="not-owner")["token"]
    with pytest.raises(fl.FlightUnauthorizedError):
        list(client.do_action(fl.Action("cancel", ticket.ticket), server.options(other)))
    (result,) = list(client.do_action(fl.Action("cancel", ticket.ticket), opts))
    assert json.loads(result.body.to_pybytes()) == {"cancelled": True}
    t.join(30)  # HEAVY runs for hours: the stream ends only because it was cancelled
    assert not t.is_alive()
    assert isinstance(outcome["error"], fl.FlightCancelledError), outcome
    _wait_running(server, client, base)
    # Nothing left running for that ticket.
    (again,) = list(client.do_action(fl.Action("cancel", ticket.ticket), opts))
    assert json.loads(again.body.to_pybytes()) == {"cancelled": False}


def test_max_rows_fails_or_truncates(server: ServerProcess) -> None:
    token = server.create_token("reader", name="capped", max_rows=1000)["token"]
    client = server.flight()
    opts = server.options(token)
    ok = server.query(token, "SELECT * FROM range(1000)")
    assert ok.num_rows == 1000
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(b"SELECT * FROM range(5000)"), opts
    )
    with pytest.raises(fl.FlightServerError, match=r"\[resource_exhausted\].*max_rows \(1000\)"):
        client.do_get(info.endpoints[0].ticket, opts).read_all()
    cmd = json.dumps({"sql": "SELECT * FROM range(5000)", "truncate": True}).encode()
    info = client.get_flight_info(fl.FlightDescriptor.for_command(cmd), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    rows, notes = 0, []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        rows += chunk.data.num_rows
        if chunk.app_metadata is not None:
            notes.append(json.loads(chunk.app_metadata.to_pybytes()))
    assert rows == 1000
    assert notes == [{"truncated": True, "max_rows": 1000}]


def test_client_going_away_frees_the_query(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    opts = server.options(reader_token)

    def running() -> int:
        (r,) = list(client.do_action(fl.Action("health", b""), opts))
        return int(json.loads(r.body.to_pybytes())["running_queries"])

    base = running()
    info = client.get_flight_info(fl.FlightDescriptor.for_command(LONG_SCAN), opts)
    reader = server.flight().do_get(info.endpoints[0].ticket, opts)
    reader.read_chunk()
    assert running() == base + 1
    reader.cancel()
    deadline = time.monotonic() + 5
    while running() != base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running() == base


def test_32_concurrent_streams(server: ServerProcess, reader_token: str) -> None:
    opts = server.options(reader_token)

    def fetch(i: int) -> tuple[int, int]:
        client = server.flight()
        sql = f"SELECT o.id, o.amount, c.country FROM demo.orders o JOIN demo.customers c ON c.id = o.customer_id WHERE o.id % 32 = {i}"
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        t = client.do_get(info.endpoints[0].ticket, opts).read_all()
        return t.num_rows, sum(1 for v in t.column("id").to_pylist() if v % 32 != i)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(fetch, range(32), timeout=120))
    assert sum(r for r, _ in results) == 20_000
    assert all(bad == 0 for _, bad in results)


def test_batches_are_bounded_in_bytes(tmp_path) -> None:
    from tests.support.server import start_server

    limit = 1024 * 1024
    srv = start_server(
        tmp_path / "data", env={"AGENTDATA_DEMO": "false", "AGENTDATA_MAX_BATCH_BYTES": str(limit)}
    )
    try:
        client = srv.flight()
        opts = srv.options(srv.admin_token)
        sql = b"SELECT range AS id, repeat('x', 200) AS pad FROM range(300000)"
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql), opts)
        sizes, total = [], 0
        for chunk in client.do_get(info.endpoints[0].ticket, opts):
            sizes.append(chunk.data.nbytes)
            total += chunk.data.num_rows
        assert total == 300_000
        assert len(sizes) > 30  # ~64 MB of data in <= 1 MiB pieces
        assert max(sizes) <= limit * 1.05
    finally:
        srv.stop()


def test_enum_results_keep_error_codes_mid_stream(server: ServerProcess) -> None:
    token = server.create_token("reader", name="impatient-enum", timeout_s=1.0)["token"]
    server.execute(server.admin_token, "CREATE TYPE IF NOT EXISTS colour AS ENUM ('red', 'green')")
    client = server.flight()
    opts = server.options(token)
    sql = b"SELECT 'red'::colour AS c, a.range AS x FROM range(1000000) a, range(1000000) b"
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    first = reader.read_chunk().data
    assert first.column("c").type == pa.dictionary(pa.uint8(), pa.string())
    with pytest.raises(fl.FlightTimedOutError, match=r"\[deadline_exceeded\]"):
        _drain(reader)


def test_streams_stopped_by_their_timeout_leave_no_transaction_open(tmp_path) -> None:
    """A DoGet ended by its token's timeout mid-stream closes its DuckDB stream with its
    cursor: after a write, the server still checkpoints at shutdown. (Closing only the
    reader wrapped over it, the results cache's recorder, left the stream and its READ
    ONLY transaction open: every CHECKPOINT after was refused, at shutdown too.)"""
    from tests.support.server import start_server

    srv = start_server(tmp_path / "data", env={"AGENTDATA_DEMO": "false"})
    try:
        created = srv.create_token("reader", name="impatient-twice", timeout_s=0.5)
        client = srv.flight()
        opts = srv.options(created["token"])
        for _ in range(2):
            info = client.get_flight_info(fl.FlightDescriptor.for_command(LONG_SCAN), opts)
            with pytest.raises(fl.FlightTimedOutError, match=r"\[deadline_exceeded\]"):
                _drain(client.do_get(info.endpoints[0].ticket, opts))
        srv.execute(srv.admin_token, "CREATE TABLE main.after_timeouts AS SELECT 1 AS x")
        client.close()
    finally:
        assert srv.stop() == 0
    assert "checkpoint at shutdown failed" not in srv.log()
