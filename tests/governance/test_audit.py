"""The audit log: exactly one record per query on every channel, however it ends."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.flight as fl
import pytest

from agentdata.audit import AuditFilter, AuditLog
from agentdata.meta import MetaStore
from agentdata.tokens import Principal, Role
from tests.governance.conftest import GovLab
from tests.mcp.support import call
from tests.security.conftest import run_flightsql
from tests.support.server import REPO
from tests.tasks.support import wait_job

#: Long enough to be stopped by a timeout, a cancel or a revocation on any machine.
SLOW_SQL = "SELECT count(*) FROM range(200000000) a, range(1000) b WHERE a.range + b.range < 0"


def _audit(gov: GovLab, **params: Any) -> dict[str, Any]:
    with gov.server.http() as http:
        r = http.get("/api/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _records(gov: GovLab, token_id: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The token's records, once there are at least `n` (newest first)."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = _audit(gov, token_id=token_id, limit=1000)["items"]
        if len(items) >= n:
            return items
        time.sleep(0.05)
    raise AssertionError(f"expected {n} audit records, got {items}")


def _token(gov: GovLab, name: str, **kwargs: Any) -> tuple[str, str]:
    record = gov.server.create_token("reader", name=name, **kwargs)
    return str(record["id"]), str(record["token"])


def test_one_record_per_query_with_what_it_did(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-ok")
    for _ in range(3):  # GetFlightInfo + DoGet each time; the repeats hit the caches
        assert gov.run_as(token, "SELECT region, boss FROM sales.dept ORDER BY 1").ok
    # A stream's record is queued before its last batch leaves, and a listing writes
    # what is queued first: exactly three, at once.
    items = _audit(gov, token_id=token_id)["items"]
    assert len(items) == 3
    r = items[0]
    assert r["token_name"] == "audit-ok" and r["channel"] == "flight"
    assert r["outcome"] == "ok" and r["rows"] == 2 and r["bytes"] > 0
    assert r["tables_read"] == ["sales.dept"] and r["tables_written"] == []
    assert r["sql"] == "SELECT region, boss FROM sales.dept ORDER BY 1"
    assert len(r["sql_hash"]) == 64 and r["engine"] == "duckdb" and r["duration_s"] >= 0


def test_refused_queries_are_recorded_with_their_code(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-refused", tables=["sales.dept"])
    assert gov.run_as(token, "SELECT * FROM sales.people").code == "permission_denied"
    assert gov.run_as(token, "SELECT nosuch FROM sales.dept").code == "invalid_argument"
    assert gov.run_as(token, "DELETE FROM sales.dept").code == "permission_denied"
    items = _records(gov, token_id, 3)
    assert sorted(r["outcome"] for r in items) == [
        "invalid_argument",
        "permission_denied",
        "permission_denied",
    ]
    assert _audit(gov, token_id=token_id, outcome="error")["items"] == items
    assert _audit(gov, token_id=token_id, outcome="ok")["items"] == []


def test_timed_out_query(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-timeout", timeout_s=0.5)
    assert gov.run_as(token, SLOW_SQL).code == "deadline_exceeded"
    assert [r["outcome"] for r in _records(gov, token_id, 1)] == ["deadline_exceeded"]


def _slow_in_background(gov: GovLab, token: str) -> tuple[threading.Thread, list[Any], bytes]:
    client = gov.server.flight()
    opts = gov.server.options(token)
    info = client.get_flight_info(fl.FlightDescriptor.for_command(SLOW_SQL.encode()), opts)
    ticket = info.endpoints[0].ticket
    got: list[Any] = []

    def read() -> None:
        try:
            got.append(client.do_get(ticket, opts).read_all())
        except Exception as e:
            got.append(e)
        finally:
            client.close()

    thread = threading.Thread(target=read)
    thread.start()
    return thread, got, ticket.ticket


def _wait_running(gov: GovLab) -> None:
    """Until a result stream is open (this module's tests run one at a time)."""
    with gov.server.http() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "agentdata_active_streams 1.0" in http.get("/metrics").text:
                return
            time.sleep(0.05)
    raise AssertionError("the slow query never started")


def test_cancelled_query(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-cancel")
    thread, got, ticket = _slow_in_background(gov, token)
    deadline = time.monotonic() + 30
    cancelled = False
    while not cancelled and time.monotonic() < deadline:
        reply = list(gov.client.do_action(fl.Action("cancel", ticket), gov.server.options(token)))
        cancelled = json.loads(reply[0].body.to_pybytes())["cancelled"]
        if not cancelled:
            time.sleep(0.05)
    thread.join(60)
    assert cancelled and isinstance(got[0], Exception)
    assert [r["outcome"] for r in _records(gov, token_id, 1)] == ["cancelled"]


def test_revoked_mid_query(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-revoked")
    thread, got, _ = _slow_in_background(gov, token)
    _wait_running(gov)
    with gov.server.http() as http:
        assert http.delete(f"/api/v1/tokens/{token_id}").status_code == 200
    thread.join(60)
    assert isinstance(got[0], Exception)
    assert [r["outcome"] for r in _records(gov, token_id, 1)] == ["unauthenticated"]


def test_every_channel_is_recorded(gov: GovLab) -> None:
    import adbc_driver_flightsql.dbapi as dbapi

    token_id, token = _token(gov, "audit-channels")
    conn = dbapi.connect(
        f"grpc://127.0.0.1:{gov.server.flight_port}",
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"},
        autocommit=True,
    )
    try:
        assert run_flightsql(conn, "SELECT 1 AS one").ok
        assert run_flightsql(conn, "SELECT ? AS p", params=(1,)).ok
    finally:
        conn.close()
    result = call(gov.server, token, "query", {"sql": "SELECT 2 AS two", "max_rows": 10})
    assert not result.is_error
    with gov.server.http(token) as http:
        r = http.post("/api/v1/exports", json={"sql": "SELECT 3 AS three", "format": "json"})
        assert r.status_code == 202, r.text
        assert wait_job(http, r.json()["job_id"])["state"] == "succeeded"
    items = _records(gov, token_id, 4)
    channels = sorted(r["channel"] for r in items)
    assert channels == ["export", "flightsql", "flightsql", "mcp"], items
    assert all(r["outcome"] == "ok" for r in items)


def test_filters_and_paging(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-pages")
    before = time.time()
    for i in range(5):
        assert gov.run_as(token, f"SELECT {i} AS i FROM sales.dept LIMIT 1").ok
    assert gov.run_as(token, "SELECT count(*) FROM sales.people").ok
    items = _records(gov, token_id, 6)
    first = _audit(gov, token_id=token_id, limit=4)
    assert len(first["items"]) == 4 and first["next_cursor"]
    second = _audit(gov, token_id=token_id, limit=4, cursor=first["next_cursor"])
    assert len(second["items"]) == 2 and second["next_cursor"] is None
    assert [r["id"] for r in first["items"] + second["items"]] == [r["id"] for r in items]
    people = _audit(gov, token_id=token_id, table="sales.people")["items"]
    assert [r["sql"] for r in people] == ["SELECT count(*) FROM sales.people"]
    assert len(_audit(gov, token_id=token_id, since=before)["items"]) == 6
    assert _audit(gov, token_id=token_id, until=before)["items"] == []
    iso = _audit(gov, token_id=token_id, since="2000-01-01T00:00:00Z")["items"]
    assert len(iso) == 6


def test_governed_tokens_audit_their_own_sql(gov: GovLab) -> None:
    assert gov.run("masked", "SELECT ssn FROM sales.people").ok
    items = _records(gov, gov.ids["masked"], 1)
    assert items[0]["sql"] == "SELECT ssn FROM sales.people"  # the text sent, not the rewrite
    gov.assert_no_leak(json.dumps(items[0]), echo=items[0]["sql"])


def test_audit_is_for_admins(gov: GovLab) -> None:
    with gov.server.http(gov.tokens["masked"]) as http:
        r = http.get("/api/v1/audit")
    assert r.status_code == 403 and "[permission_denied]" in r.json()["detail"]


def test_metrics_per_token(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-metrics")
    assert gov.run_as(token, "SELECT region FROM sales.dept").ok
    assert not gov.run_as(token, "SELECT * FROM sales.nosuch").ok
    _records(gov, token_id, 2)
    with gov.server.http() as http:
        body = http.get("/metrics").text
    assert 'agentdata_token_queries_total{outcome="ok",token="audit-metrics"} 1.0' in body
    assert 'agentdata_token_rows_total{token="audit-metrics"} 2.0' in body
    assert 'agentdata_token_errors_total{code="invalid_argument",token="audit-metrics"} 1.0' in body


def test_cli_audit_ls(gov: GovLab) -> None:
    token_id, token = _token(gov, "audit-cli")
    assert gov.run_as(token, "SELECT boss FROM sales.dept").ok
    _records(gov, token_id, 1)
    env = {k: v for k, v in gov.server.env.items() if not k.startswith("AGENTDATA_")}
    env.update(AGENTDATA_URL=gov.server.http_url, AGENTDATA_TOKEN=gov.server.admin_token)
    proc = subprocess.run(
        [sys.executable, "-m", "agentdata", "audit", "ls", "--token-id", token_id],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "audit-cli" in proc.stdout and "SELECT boss FROM sales.dept" in proc.stdout


def test_maintenance_rule_audit_runs(gov: GovLab) -> None:
    with gov.server.http() as http:
        r = http.post("/api/v1/maintenance/audit/run")
    assert r.status_code in (200, 201, 202), r.text
    job = r.json()
    assert job["state"] == "succeeded", job
    assert job["result"]["deleted_audit_records"] == 0  # nothing is 30 days old


def test_retention_deletes_old_records(tmp_path: Path) -> None:
    meta = MetaStore(tmp_path / "meta.sqlite3")
    log = AuditLog(meta, sql_max_chars=10)
    who = Principal(token_id="t1", name="n", role=Role.READER)
    try:
        log.record(token_id=who.token_id, token_name=who.name, channel="flight", sql="x" * 50)
        items, _ = log.list(AuditFilter(token_id="t1"))
        assert items[0]["sql"] == "x" * 10  # truncated to the setting; the hash is of all
        assert log.delete_before(time.time() - 60) == 0
        assert log.delete_before(time.time() + 1) == 1
        assert log.list(AuditFilter())[0] == []
    finally:
        log.close()
        meta.close()


@pytest.mark.parametrize("bad", [{"cursor": "abc"}, {"since": "yesterday"}])
def test_bad_parameters(gov: GovLab, bad: dict[str, str]) -> None:
    with gov.server.http() as http:
        r = http.get("/api/v1/audit", params=bad)
    assert r.status_code == 400 and "[invalid_argument]" in r.json()["detail"]


def test_writes_are_recorded_with_the_tables_they_write(gov: GovLab) -> None:
    from tests.security.conftest import run_execute

    gov.admin("CREATE OR REPLACE TABLE sales.audit_w (id INTEGER)")
    record = gov.server.create_token("writer", name="audit-writer")
    token = str(record["token"])
    assert run_execute(gov.server, token, "INSERT INTO sales.audit_w VALUES (1), (2)").ok
    assert not run_execute(gov.server, token, "INSERT INTO sales.audit_w VALUES ('x')").ok
    items = _records(gov, str(record["id"]), 2)
    assert [(r["outcome"], r["rows"], r["tables_written"]) for r in reversed(items)] == [
        ("ok", 2, ["sales.audit_w"]),
        ("invalid_argument", 0, ["sales.audit_w"]),
    ]
