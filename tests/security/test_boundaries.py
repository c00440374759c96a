"""The server's boundaries against a real `agentdata serve`: every error on every channel
(Flight, Flight SQL, DoAction, DoExchange, PollFlightInfo, REST) starts with its
[code] and says nothing of the server's insides; numbers and names a client sends are
checked before anything is stored; /readyz answers without a token; the data dir is
private (0700 directories, 0600 files) even when it was not before the server started.

Fast, in-process checks of the same REST rules are in tests/unit/test_rest_boundaries.py.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from flight_server.flightsql.messages import pack
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from tests.support.server import REPO, ServerProcess, start_server

#: What a client must never be shown: a traceback, a source file, the Python version.
INSIDES = ("Traceback", 'File "', ".py", "Python 3.", sys.version, str(REPO), sys.prefix)


def insides(text: str, server: ServerProcess) -> list[str]:
    """Markers of the server's insides found in `text` (its data dir included)."""
    markers = (*INSIDES, str(server.data_dir), str(server.data_dir.resolve()))
    return [m for m in markers if m in text]


def failure(call: Callable[[], Any]) -> Exception:
    """The exception `call` raises (the test fails if it succeeds)."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - every channel raises its own type
        return e
    raise AssertionError("the call succeeded")


def flight_text(err: Exception) -> str:
    """Everything a pyarrow client got: the message and the Flight extra_info."""
    extra = getattr(err, "extra_info", None) or b""
    return f"{err} {bytes(extra).decode('utf-8', 'replace')}"


# -- errors on every channel -----------------------------------------------------------
@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[fl.FlightClient]:
    c = server.flight()
    yield c
    c.close()


def _put_bad_command(client: fl.FlightClient, opts: fl.FlightCallOptions) -> None:
    schema = pa.schema([("a", pa.int64())])
    writer, _ = client.do_put(fl.FlightDescriptor.for_command(b"{not json"), schema, opts)
    writer.write_table(pa.table({"a": [1]}, schema=schema))
    writer.close()


def _read_failing_stream(client: fl.FlightClient, opts: fl.FlightCallOptions) -> None:
    # The cast fails on row 5000, after the first batches went out.
    sql = (
        "SELECT CAST(CASE WHEN range = 5000 THEN 'x' ELSE range::VARCHAR END AS INTEGER) AS n "
        "FROM range(100000)"
    )
    info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
    client.do_get(info.endpoints[0].ticket, opts).read_all()


FLIGHT_CASES: dict[str, tuple[Callable[[fl.FlightClient, fl.FlightCallOptions], Any], str]] = {
    "bad SQL": (
        lambda c, o: c.get_flight_info(fl.FlightDescriptor.for_command(b"SELEC 1"), o),
        "invalid_argument",
    ),
    "unknown table": (
        lambda c, o: c.get_flight_info(fl.FlightDescriptor.for_path("demo", "nope"), o),
        "not_found",
    ),
    "unknown ticket": (
        lambda c, o: c.do_get(fl.Ticket(b"adt1.no-such-ticket"), o).read_all(),
        "not_found",
    ),
    "unknown action": (
        lambda c, o: list(c.do_action(fl.Action("no-such-action", b""), o)),
        "unimplemented",
    ),
    "DoExchange": (
        lambda c, o: c.do_exchange(fl.FlightDescriptor.for_command(b"x"), o)[1].read_all(),
        "unimplemented",
    ),
    "DoPut with a bad command": (_put_bad_command, "invalid_argument"),
    "unsupported Flight SQL command": (
        lambda c, o: c.get_flight_info(
            fl.FlightDescriptor.for_command(pack(pb.CommandStatementSubstraitPlan())), o
        ),
        "unimplemented",
    ),
    "unsupported Flight SQL action": (
        lambda c, o: list(c.do_action(fl.Action("BeginTransaction", b""), o)),
        "unimplemented",
    ),
}


@pytest.mark.parametrize("case", sorted(FLIGHT_CASES))
def test_flight_errors_start_with_their_code_and_hide_the_server(
    server: ServerProcess, client: fl.FlightClient, admin: str, case: str
) -> None:
    call, code = FLIGHT_CASES[case]
    err = failure(lambda: call(client, server.options(admin)))
    assert str(err).startswith(f"[{code}] "), str(err)
    assert not insides(flight_text(err), server), flight_text(err)


def test_an_error_mid_stream_starts_with_its_code_and_hides_the_server(
    server: ServerProcess, client: fl.FlightClient, admin: str
) -> None:
    err = failure(lambda: _read_failing_stream(client, server.options(admin)))
    assert str(err).startswith("[invalid_argument] "), str(err)
    assert not insides(flight_text(err), server), flight_text(err)


def test_unauthenticated_calls_start_with_their_code(
    server: ServerProcess, client: fl.FlightClient
) -> None:
    for opts in (fl.FlightCallOptions(), server.options("not-a-token")):
        err = failure(lambda o=opts: list(client.list_flights(options=o)))  # type: ignore[misc]
        assert isinstance(err, fl.FlightUnauthenticatedError)
        assert str(err).startswith("[unauthenticated] ") and not insides(flight_text(err), server)


@pytest.fixture(scope="module")
def adbc(server: ServerProcess, admin: str) -> Iterator[Any]:
    conn = flightsql.connect(
        f"grpc://127.0.0.1:{server.flight_port}",
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {admin}"},
        autocommit=True,
    )
    yield conn
    conn.close()


def adbc_text(err: Exception) -> str:
    """The driver's message and the raw gRPC trailers it kept (`details`)."""
    details = getattr(err, "details", None) or []
    trailers = " ".join(f"{k!r}={v!r}" for k, v in details)
    return f"{err} {trailers}"


def _server_message(err: Exception) -> str:
    """The server's own message, as sent (the driver prefixes its own "CODE: [FlightSQL]")."""
    for key, value in getattr(err, "details", None) or []:
        if key == "x-arrow-status-message-bin":
            return bytes(value).decode("utf-8", "replace")
    return str(err).split("[FlightSQL] ", 1)[-1]


def test_flight_sql_errors_start_with_their_code_and_hide_the_server(
    server: ServerProcess, adbc: Any
) -> None:
    cur = adbc.cursor()
    try:
        err = failure(lambda: cur.execute("SELEC 1"))
    finally:
        cur.close()
    assert isinstance(err, adbc_driver_manager.ProgrammingError)  # INVALID_ARGUMENT kept
    assert _server_message(err).startswith("[invalid_argument] "), adbc_text(err)
    assert not insides(adbc_text(err), server), adbc_text(err)


def test_poll_flight_info_is_unimplemented_and_hides_the_server(
    server: ServerProcess, adbc: Any
) -> None:
    """ADBC's incremental execution calls PollFlightInfo. pyarrow's Python server has no
    hook for it; the auth middleware sees it as an unknown method and answers
    UNIMPLEMENTED with its code, and nothing of the server."""
    cur = adbc.cursor()
    try:
        cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
        cur.adbc_statement.set_sql_query("SELECT 1")
        err = failure(cur.adbc_statement.execute_partitions)
    finally:
        cur.close()
    assert isinstance(err, adbc_driver_manager.NotSupportedError), adbc_text(err)
    assert "[unimplemented] PollFlightInfo is not supported" in adbc_text(err), adbc_text(err)
    assert not insides(adbc_text(err), server), adbc_text(err)


# -- REST ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url", "body", "status", "code"),
    [
        ("GET", "/api/v1/jobs/no-such-job", None, 404, "not_found"),
        ("POST", "/api/v1/tokens", {"name": "big", "max_rows": 2**63}, 422, "invalid_argument"),
        ("POST", "/api/v1/tokens", {"name": "ttl", "ttl_seconds": 10**30}, 422, "invalid_argument"),
        ("POST", "/api/v1/tokens", {"name": "esc\x1b[2J"}, 400, "invalid_argument"),
        ("POST", "/api/v1/tokens", {"name": "n" * 300}, 422, "invalid_argument"),
        ("POST", "/api/v1/exports", {"sql": "SELEC 1", "format": "csv"}, 400, "invalid_argument"),
    ],
)
def test_rest_errors_start_with_their_code_and_nothing_is_written(
    server: ServerProcess,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    status: int,
    code: str,
) -> None:
    with server.http() as http:
        tokens_before = http.get("/api/v1/tokens").json()
        r = http.request(method, url, json=body)
        tokens_after = http.get("/api/v1/tokens").json()
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["detail"].startswith(f"[{code}] "), r.text
    assert not insides(r.text, server), r.text
    assert tokens_after == tokens_before


def test_rest_without_a_token_is_401_with_its_code(server: ServerProcess) -> None:
    with server.http() as http:
        r = http.get("/api/v1/tokens", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["detail"].startswith("[unauthenticated] ")


# -- readiness -------------------------------------------------------------------------
def test_readyz_answers_without_a_token_and_details_only_admins(
    server: ServerProcess, admin: str, reader_token: str
) -> None:
    import httpx

    anonymous = httpx.get(f"{server.http_url}/readyz", timeout=30)
    assert (anonymous.status_code, anonymous.json()) == (200, {"status": "ready"})
    with server.http(reader_token) as http:
        reader = http.get("/readyz")
    assert (reader.status_code, reader.json()) == (200, {"status": "ready"})
    with server.http(admin) as http:
        detailed = http.get("/readyz")
    assert detailed.status_code == 200
    assert detailed.json()["status"] == "ready" and detailed.json()["checks"]["database"] == "ok"


# -- the data dir ----------------------------------------------------------------------
def modes(root: Path) -> dict[str, int]:
    """path (relative) -> permission bits of every entry under `root`, and root itself."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(parent, name)
            try:
                out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
            except FileNotFoundError:  # a temp file that came and went
                pass
    return out


def test_the_data_dir_is_private_even_when_it_was_not(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "notes").mkdir(parents=True)
    for d in (data_dir, data_dir / "notes"):
        d.chmod(0o755)
    for f in (data_dir / "left-by-an-operator.txt", data_dir / "notes" / "n.txt"):
        f.write_text("restored from a backup")
        f.chmod(0o644)
    server = start_server(data_dir, demo_rows=1000)
    try:
        writer = str(server.create_token("writer", name="mode-writer")["token"])
        server.execute(writer, "CREATE TABLE main.modes AS SELECT range AS n FROM range(1000)")
        client = server.flight()
        table = pa.table({"n": list(range(100))})
        put, _ = client.do_put(
            fl.FlightDescriptor.for_path("main", "put_modes"), table.schema, server.options(writer)
        )
        put.write_table(table)
        put.close()
        client.close()
        with server.http(writer) as http:
            r = http.post("/api/v1/artefacts", files={"file": ("a.txt", b"artefact")})
            assert r.status_code == 201, r.text
        running = modes(data_dir)
    finally:
        server.stop()
    stopped = modes(data_dir)

    for seen in (running, stopped):
        loose = {
            p: oct(m)
            for p, m in seen.items()
            if m
            != (0o700 if (data_dir / p).is_dir() and not (data_dir / p).is_symlink() else 0o600)
        }
        assert not loose, f"entries with loose modes: {loose}"
    expected = {
        "data.duckdb",
        "meta.sqlite3",
        "artefacts",
        "left-by-an-operator.txt",
        "notes/n.txt",
    }
    assert expected <= set(running), sorted(running)
    wal = [p for p in running if p.endswith((".wal", "-wal"))]
    assert wal, f"no write-ahead log seen while running: {sorted(running)}"
