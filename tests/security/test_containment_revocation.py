"""Revocation and expiry cut running work, not just the next call.

A result being streamed (slowly, batch by batch) ends once its token is revoked or
expires, with UNAUTHENTICATED ("[unauthenticated] ..."), and the query stops on the
server (how soon, the issue's one second, is a measurement: benchmarks/). The token's running and queued exports end cancelled, with no
artefact and no partial file left behind (the lab runs one export worker, so the
second export is still queued when the token goes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow.flight as fl

from agentdata.timestamps import seconds
from tests.security.conftest import Lab
from tests.tasks.support import start_export, wait_job, wait_until

#: Far more than any test reads: the stream only ends if the server ends it.
STREAM_SQL = "SELECT range AS n FROM range(200000000)"
#: Rows slowly but steadily, until cancelled (a filtered 10^12-pair cross join).
SLOW_EXPORT_SQL = (
    "SELECT a.range AS a, b.range AS b FROM range(1000000000) a, range(1000) b "
    "WHERE (a.range + b.range) % 1009 = 0"
)
#: How long a stream may go on flowing after revocation (or expiry) before the test
#: fails: a guard against hanging, not a latency bound. STREAM_SQL outlasts it.
CUT_DEADLINE_S = 30.0
#: How long a slow consumer spends on each batch (pacing the reader, not a wait).
PACE_S = 0.02


def _running_queries(lab: Lab) -> int:
    (result,) = list(
        lab.client.do_action(
            fl.Action("health", b""), lab.server.options(lab.server.admin_token, timeout=10)
        )
    )
    return int(json.loads(result.body.to_pybytes())["running_queries"])


def _wait_idle(lab: Lab, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_queries(lab) == 0:
            return True
        time.sleep(0.1)
    return False


@contextmanager
def _stream(lab: Lab, token: str) -> Iterator[fl.FlightStreamReader]:
    """A DoGet of STREAM_SQL; cancelled on the way out, however the test ends."""
    client = lab.server.flight()
    opts = lab.server.options(token, timeout=60)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(STREAM_SQL.encode()), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    try:
        yield reader
    finally:
        try:
            reader.cancel()
        except Exception:
            pass
        client.close()


def _read_slowly(reader: fl.FlightStreamReader, until: float) -> tuple[Exception | None, int]:
    """Read batch by batch, pacing like a slow consumer, until the stream fails or the
    wall clock passes `until`. Returns the error (None: still flowing) and batches read."""
    batches = 0
    while time.time() < until:
        try:
            reader.read_chunk()
        except StopIteration:
            raise AssertionError(f"the stream ended normally after {batches} batches") from None
        except Exception as e:
            return e, batches
        batches += 1
        time.sleep(PACE_S)
    return None, batches


def _assert_unauthenticated(error: Exception | None, what: str) -> None:
    assert error is not None, f"the stream still flowed {CUT_DEADLINE_S:g}s after {what}"
    assert isinstance(error, fl.FlightUnauthenticatedError), f"{type(error).__name__}: {error}"
    assert str(error).startswith("[unauthenticated]"), str(error)


def test_revoking_a_token_ends_its_running_stream(lab: Lab) -> None:
    record = lab.server.create_token("reader", name="to-revoke")
    with _stream(lab, record["token"]) as reader:
        error, batches = _read_slowly(reader, until=time.time() + 0.3)
        assert error is None and batches > 0, f"no stream to cut: {error}"
        with lab.server.http() as admin:
            r = admin.delete(f"/api/v1/tokens/{record['id']}")
        assert r.status_code == 200, r.text
        error, _ = _read_slowly(reader, until=time.time() + CUT_DEADLINE_S)
    _assert_unauthenticated(error, "revocation")
    assert _wait_idle(lab), "the query still runs on the server"


def test_an_expiring_token_ends_its_running_stream(lab: Lab) -> None:
    record = lab.server.create_token("reader", name="short-lived", ttl_seconds=3)
    expires_at = seconds(record["expires_at"])
    with _stream(lab, record["token"]) as reader:
        error, batches = _read_slowly(reader, until=expires_at - 0.5)
        assert error is None and batches > 0, f"no stream before expiry: {error}"
        error, _ = _read_slowly(reader, until=expires_at + CUT_DEADLINE_S)
    _assert_unauthenticated(error, "expiry")
    assert _wait_idle(lab), "the query still runs on the server"


def test_revoking_a_token_cancels_its_running_and_queued_exports(lab: Lab) -> None:
    record = lab.server.create_token("reader", name="exporter")
    with lab.server.http(record["token"]) as http:
        running = start_export(http, SLOW_EXPORT_SQL, "csv")
        queued = start_export(http, SLOW_EXPORT_SQL, "csv")
    jobs = []
    with lab.server.http() as admin:
        try:
            wait_job(admin, running["job_id"], states=("running",), timeout=30)
            state = admin.get(f"/api/v1/jobs/{queued['job_id']}").json()["state"]
            assert state == "queued", f"the second export should wait for the only worker: {state}"
            r = admin.delete(f"/api/v1/tokens/{record['id']}")
            assert r.status_code == 200, r.text
            # No bound in the issue here; 20 s is far beyond any report interval.
            jobs = [wait_job(admin, j["job_id"], timeout=20) for j in (running, queued)]
        finally:
            for j in (running, queued):  # don't leave a CPU-bound export behind
                admin.delete(f"/api/v1/jobs/{j['job_id']}")
        artefacts = [
            admin.get("/api/v1/artefacts", params={"job_id": j["job_id"]}).json()["total"]
            for j in (running, queued)
        ]
    assert [j["state"] for j in jobs] == ["cancelled", "cancelled"], [
        (j["state"], j.get("error")) for j in jobs
    ]
    assert artefacts == [0, 0]
    assert _wait_idle(lab), "the export's query still runs on the server"
    partial = lab.server.data_dir / "tmp" / "tasks"
    wait_until(
        lambda: not partial.exists() or not any(p.is_file() for p in partial.rglob("*")),
        timeout=10,
        what="partial export files to go",
    )
