"""Exports in embedded mode (no Redis): the in-process runner, a real server, real clients.

Every format and compression is read back with pyarrow and compared value for value
with the same query over Flight, on a table built to break writers (quotes, commas,
newlines, unicode, NULL next to '', decimals at the edges, zoned and naive times).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from agentdata.timestamps import seconds
from tests.support.server import REPO, ServerProcess, start_server
from tests.tasks.support import (
    COMBOS,
    TRICKY_QUERY,
    create_tricky_table,
    download,
    json_row_matches,
    normalise_tz,
    read_export,
    run_export,
    start_export,
    wait_job,
    wait_until,
)

#: Produces rows steadily but slowly (a filtered 10^12-pair cross join): runs until cancelled.
SLOW_SQL = (
    "SELECT a.range AS a, b.range AS b FROM range(1000000000) a, range(1000) b "
    "WHERE (a.range + b.range) % 1009 = 0"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("exports") / "data",
        env={
            "AGENTDATA_BATCH_ROWS": "1000",  # several batches even for small results
            "AGENTDATA_EMBEDDED_WORKERS": "2",
            "AGENTDATA_EXPORT_PROGRESS_EVERY_S": "0.2",
            "AGENTDATA_QUERY_TIMEOUT_S": "120",
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reader(srv: ServerProcess) -> str:
    return str(srv.create_token("reader", name="exporter")["token"])


@pytest.fixture(scope="module")
def expected(srv: ServerProcess, reader: str) -> pa.Table:
    writer = str(srv.create_token("writer", name="qa-writer")["token"])
    create_tricky_table(srv, writer)
    return srv.query(reader, TRICKY_QUERY)


@pytest.mark.parametrize(("fmt", "compression"), COMBOS)
def test_every_format_and_compression_reads_back_value_for_value(
    srv: ServerProcess, reader: str, expected: pa.Table, fmt: str, compression: str
) -> None:
    with srv.http(reader) as http:
        job = run_export(http, TRICKY_QUERY, fmt, compression)
        result = job["result"]
        assert result["rows"] == expected.num_rows == job["progress_rows"]
        meta = http.get(f"/api/v1/artefacts/{result['artefact_id']}").json()
        data = download(http, result["artefact_id"])
    assert meta["source"] == "export" and meta["job_id"] == job["id"]
    assert meta["size"] == len(data) == result["bytes"]
    lifetime = seconds(meta["expires_at"]) - seconds(meta["created_at"])
    assert lifetime == pytest.approx(24 * 3600, abs=5)
    got = read_export(data, fmt, compression, expected.schema)
    if fmt in ("parquet", "arrow"):
        # The full Arrow schema survives: zones, decimal precision, the lot.
        assert got.schema == expected.schema
        assert got.equals(expected)
    elif fmt == "csv":
        want = normalise_tz(expected)
        assert got.column_names == want.column_names
        for name in want.column_names:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    else:
        assert len(got) == expected.num_rows
        for row, want in zip(got, expected.to_pylist(), strict=True):
            json_row_matches(row, want, expected.schema)


def test_csv_quotes_per_rfc_4180_and_keeps_null_apart_from_empty(
    srv: ServerProcess, reader: str, expected: pa.Table
) -> None:
    with srv.http(reader) as http:
        job = run_export(http, "SELECT id, s FROM qa.tricky WHERE id < 10 ORDER BY id", "csv")
        text = download(http, job["result"]["artefact_id"]).decode()
    assert text.startswith('"id","s"\n')
    assert '\n2,""\n' in text  # the empty string, quoted
    assert "\n3,\n" in text  # NULL: an empty field
    assert '\n4,"comma, ""quoted""\nnew line\r\ncrlf\ttab \\ backslash"\n' in text
    assert '\n6,""""\n' in text and '\n7,"NULL"\n' in text


def test_json_export_has_a_schema_document_alongside(
    srv: ServerProcess, reader: str, expected: pa.Table
) -> None:
    with srv.http(reader) as http:
        job = run_export(http, TRICKY_QUERY, "json")
        doc = json.loads(download(http, job["result"]["schema_artefact_id"]))
        schema_meta = http.get(f"/api/v1/artefacts/{job['result']['schema_artefact_id']}").json()
    assert schema_meta["source"] == "export" and schema_meta["job_id"] == job["id"]
    assert [f["name"] for f in doc["fields"]] == expected.column_names
    by_name = {f["name"]: f for f in doc["fields"]}
    assert by_name["d"]["json"] == "string (exact decimal)" and by_name["d"]["scale"] == 2
    assert by_name["tz"]["json"] == "string (ISO-8601, UTC, Z)" and by_name["tz"]["timezone"]
    assert by_name["ts"]["json"] == "string (ISO-8601, no zone)"
    assert job["result"]["schema"] == doc


def test_bad_requests_fail_at_once_with_clear_400s(srv: ServerProcess, reader: str) -> None:
    with srv.http(reader) as http:
        before = http.get("/api/v1/jobs").json()["total"]
        cases = [
            ({"sql": "SELECT 1", "format": "xlsx"}, "format must be one of"),
            ({"sql": "SELECT 1", "format": "csv", "compression": "snappy"}, "parquet only"),
            ({"sql": "SELECT 1", "format": "json", "compression": "lz4"}, "arrow only"),
            ({"sql": "SELECT 1", "format": "parquet", "compression": "brotli"}, "parquet takes"),
            ({"sql": "SELEC 1", "format": "csv"}, "syntax error"),
            ({"sql": "SELECT * FROM qa.nope", "format": "csv"}, "does not exist"),
            ({"sql": "SELECT [1, 2] AS l", "format": "csv"}, "CSV cannot hold"),
            ({"sql": "COPY qa.tricky TO 'x.csv'", "format": "csv"}, ""),
        ]
        for body, message in cases:
            r = http.post("/api/v1/exports", json=body)
            assert r.status_code in (400, 403), (body, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert message.lower() in r.json()["detail"].lower(), (body, r.json())
        assert http.get("/api/v1/jobs").json()["total"] == before  # no job was created


def test_writes_are_refused_even_for_writers(srv: ServerProcess) -> None:
    writer = str(srv.create_token("writer", name="w2")["token"])
    with srv.http(writer) as http:
        r = http.post("/api/v1/exports", json={"sql": "DROP TABLE qa.tricky", "format": "csv"})
    assert r.status_code == 400 and "queries only" in r.json()["detail"]
    assert srv.query(writer, "SELECT count(*) AS n FROM qa.tricky").column(0)[0].as_py() > 0


def test_exports_keep_the_tokens_allow_list_and_max_rows(
    srv: ServerProcess, expected: pa.Table
) -> None:
    limited = srv.create_token("reader", name="limited", tables=["demo.*"], max_rows=100)
    with srv.http(limited["token"]) as http:
        r = http.post("/api/v1/exports", json={"sql": TRICKY_QUERY, "format": "csv"})
        assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        ok = run_export(http, "SELECT * FROM demo.orders ORDER BY id LIMIT 100", "parquet")
        assert ok["result"]["rows"] == 100
        accepted = start_export(http, "SELECT * FROM demo.orders", "csv")
        job = wait_job(http, accepted["job_id"])
    assert job["state"] == "failed"
    assert job["error"]["step"] == "query"
    assert job["error"]["code"] == "resource_exhausted"
    assert "max_rows (100)" in job["error"]["message"]
    # The error says how to get the first max_rows rows instead ...
    assert '"truncate": true' in job["error"]["message"]


def test_a_truncating_export_stops_at_max_rows_and_says_so(srv: ServerProcess) -> None:
    limited = srv.create_token("reader", name="truncating", tables=["demo.*"], max_rows=1000)
    with srv.http(limited["token"]) as http:
        r = http.post(
            "/api/v1/exports",
            json={
                "sql": "SELECT * FROM demo.orders ORDER BY id",
                "format": "csv",
                "truncate": True,
            },
        )
        assert r.status_code == 202, r.text
        job = wait_job(http, r.json()["job_id"])
        assert job["state"] == "succeeded", job
        result = job["result"]
        assert (result["rows"], result["truncated"], result["max_rows"]) == (1000, True, 1000)
        lines = download(http, result["artefact_id"]).decode().splitlines()
    assert len(lines) == 1 + 1000 and lines[1].startswith("1,")
    # Under the cap, nothing is cut and the result says so.
    with srv.http(limited["token"]) as http:
        small = run_export(http, "SELECT * FROM demo.orders LIMIT 10", "csv")
    assert small["result"]["truncated"] is False and "max_rows" not in small["result"]


def test_progress_advances_with_a_percentage_while_the_export_runs(
    srv: ServerProcess, reader: str
) -> None:
    """Rows so far, and a percentage from the result's count (learned beside the export),
    reported while it runs; the query produces rows steadily for minutes, so the job is
    observed mid-way whatever the machine's speed, then cancelled."""
    sql = "SELECT range AS i, md5(md5(range::VARCHAR)) AS h FROM range(100000000)"
    with srv.http(reader) as http:
        accepted = start_export(http, sql, "csv")
        url = f"/api/v1/jobs/{accepted['job_id']}"
        first = wait_until(
            lambda: (j := http.get(url).json())["percent"] and j["state"] == "running" and j,
            what="a percentage",
        )
        assert 0 < first["percent"] < 100 and first["progress_rows"] > 0
        later = wait_until(
            lambda: (j := http.get(url).json())["progress_rows"] > first["progress_rows"] and j,
            what="more rows",
        )
        assert first["percent"] <= later["percent"] < 100
        assert later["progress_bytes"] > first["progress_bytes"]
        http.delete(url)
        assert wait_job(http, accepted["job_id"])["state"] == "cancelled"


def test_a_query_failing_at_run_time_fails_the_job_at_step_query(
    srv: ServerProcess, reader: str
) -> None:
    sql = "SELECT CAST('x' || i::VARCHAR AS INTEGER) AS n FROM range(10) t(i)"
    with srv.http(reader) as http:
        accepted = start_export(http, sql, "parquet")  # binds fine: the schema is INTEGER
        job = wait_job(http, accepted["job_id"])
        artefacts = http.get("/api/v1/artefacts", params={"job_id": job["id"]}).json()
    assert job["state"] == "failed"
    assert job["error"]["step"] == "query"
    assert job["error"]["code"] == "invalid_argument"
    assert "Could not convert string 'x0' to INT32" in job["error"]["message"]
    assert artefacts["total"] == 0
    assert _leftover_files(srv) == []


def test_cancel_stops_a_running_export_and_leaves_no_file(srv: ServerProcess, reader: str) -> None:
    with srv.http(reader) as http:
        accepted = start_export(http, SLOW_SQL, "csv", "gzip")
        job = wait_job(http, accepted["job_id"], states=("running",))
        wait_until(
            lambda: http.get(f"/api/v1/jobs/{job['id']}").json()["progress_rows"] > 0,
            what="rows flowing",
        )
        r = http.delete(f"/api/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        job = wait_job(http, job["id"], timeout=30)
        artefacts = http.get("/api/v1/artefacts", params={"job_id": job["id"]}).json()
    assert job["state"] == "cancelled" and job["error"] is None
    assert job["progress_rows"] > 0
    assert artefacts["total"] == 0
    # The query stopped on the server, and the partial file is gone.
    wait_until(lambda: _running_queries(srv) == 0, what="the query to stop")
    wait_until(lambda: _leftover_files(srv) == [], what="partial files to go")


def test_monitoring_tells_the_truth_about_the_pool(srv: ServerProcess, reader: str) -> None:
    with srv.http(reader) as http:
        jobs = [start_export(http, SLOW_SQL, "csv") for _ in range(3)]
        for accepted in jobs[:2]:
            wait_job(http, accepted["job_id"], states=("running",))
    with srv.http() as admin:
        workers = admin.get("/api/v1/tasks/workers").json()
        queues = admin.get("/api/v1/tasks/queues").json()
        active = admin.get("/api/v1/tasks/active").json()
        third = admin.get(f"/api/v1/tasks/status/{jobs[2]['task_id']}").json()
        prometheus = admin.get("/metrics").text
        first = admin.get(f"/api/v1/tasks/status/{jobs[0]['task_id']}").json()
        # Cancel: the queued one at once, the running ones at their next report.
        cancelled_queued = admin.delete(f"/api/v1/jobs/{jobs[2]['job_id']}").json()
        for accepted in jobs[:2]:
            admin.delete(f"/api/v1/jobs/{accepted['job_id']}")
        finished = [wait_job(admin, a["job_id"], timeout=30) for a in jobs]
        after = admin.get("/api/v1/tasks/workers").json()
        third_after = wait_until(
            lambda: (
                (s := admin.get(f"/api/v1/tasks/status/{jobs[2]['task_id']}").json())["state"]
                == "SUCCESS"
                and s
            ),
            what="the cancelled queued task to be skipped",
        )
    assert workers["runner"] == "embedded"
    (pool,) = workers["workers"]
    assert pool["pid"] == srv.proc.pid
    assert (pool["concurrency"], pool["threads"], pool["busy"]) == (2, 2, 2)
    depth = {q["name"]: q["depth"] for q in queues["queues"]}
    assert depth == {"tasks": 1, "maintenance": 0}
    assert [lane["threads"] for lane in pool["lanes"]] == [2, 1]
    assert 'agentdata_task_queue_depth{queue="tasks"} 1.0' in prometheus
    assert 'agentdata_tasks_running{queue="tasks"} 2.0' in prometheus
    assert {t["job"]["id"] for t in active["tasks"]} == {j["job_id"] for j in jobs[:2]}
    assert all(t["state"] == "running" for t in active["tasks"])
    assert third["state"] == "PENDING" and third["job"]["state"] == "queued"
    assert first["state"] == "STARTED" and first["job"]["state"] == "running"
    assert "token" not in json.dumps([workers, active, third, first])
    assert cancelled_queued["state"] == "cancelled"
    assert [j["state"] for j in finished] == ["cancelled"] * 3
    assert third_after["result"]["state"] == "skipped"
    with srv.http() as http:
        wait_until(
            lambda: (
                after["workers"][0]["busy"] == 0
                or http.get("/api/v1/tasks/workers").json()["workers"][0]["busy"] == 0
            ),
            what="the pool to be idle",
        )


def test_task_monitoring_is_admin_only(srv: ServerProcess, reader: str) -> None:
    with srv.http(reader) as http:
        for path in ("workers", "queues", "active", "status/x"):
            r = http.get(f"/api/v1/tasks/{path}")
            assert r.status_code == 403, (path, r.text)


def test_cli_export_waits_downloads_and_writes_the_schema(
    srv: ServerProcess, reader: str, tmp_path: Path
) -> None:
    out = tmp_path / "orders.jsonl.gz"
    env = {**os.environ, "AGENTDATA_URL": srv.http_url, "AGENTDATA_TOKEN": reader}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentdata",
            "export",
            "SELECT id, status FROM demo.orders ORDER BY id LIMIT 2500",
            "--format",
            "json",
            "--compression",
            "gzip",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    import gzip

    rows = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(rows) == 2500 and rows[0] == {"id": 1, "status": rows[0]["status"]}
    assert [r["id"] for r in rows] == list(range(1, 2501))
    schema = json.loads((tmp_path / "orders.jsonl.gz.schema.json").read_text())
    assert [f["name"] for f in schema["fields"]] == ["id", "status"]
    assert "2,500 rows" in proc.stderr


def _running_queries(srv: ServerProcess) -> int:
    client = srv.flight()
    (result,) = list(client.do_action(fl.Action("health", b""), srv.options(srv.admin_token)))
    return int(json.loads(result.body.to_pybytes())["running_queries"])


def _leftover_files(srv: ServerProcess) -> list[str]:
    root = srv.data_dir / "tmp" / "tasks"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
