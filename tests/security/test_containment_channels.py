"""The read-side attacks of the catalog suite, on every other channel: Flight SQL
statements, Flight SQL prepared statements, exports and the `agentdata sql` CLI.

Each channel reaches the same engine path, so each attempt must end the same way as
over plain Flight: a refusal with its `[code]`, or an answer that names nothing
outside the limited reader's allow-list (`demo.*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from tests.security.conftest import Lab, Outcome, run_cli, run_flightsql
from tests.tasks.support import wait_job

#: (id, SQL, what must happen): "refused" (a [permission_denied]) or "listing" (an
#: answer that shows demo objects and nothing of schema secret).
ATTACKS = [
    ("pragma-storage", "SELECT * FROM pragma_storage_info('secret.payroll')", "refused"),
    ("pragma-info", "SELECT * FROM pragma_table_info('secret.payroll')", "refused"),
    ("setting", "SELECT current_setting('temp_directory') AS v", "refused"),
    ("databases", "SELECT * FROM duckdb_databases()", "refused"),
    ("view", "SELECT * FROM demo.leaky", "refused"),
    ("query-fn", "SELECT * FROM query('SELECT * FROM secret.payroll')", "refused"),
    ("pg-class", "SELECT relname FROM pg_catalog.pg_class", "refused"),
    ("info-tables", "SELECT table_schema, table_name FROM information_schema.tables", "listing"),
    (
        "duckdb-columns",
        "SELECT schema_name, table_name, column_name FROM duckdb_columns()",
        "listing",
    ),
    ("show-all", "SHOW ALL TABLES", "listing"),
]
IDS = [a[0] for a in ATTACKS]


def _judge(lab: Lab, sql: str, expect: str, outcome: Outcome, channel: str) -> None:
    lab.assert_no_leak(outcome.text(), echo=sql)
    if expect == "refused":
        assert not outcome.ok, f"{channel}: {sql} was answered: {outcome.describe()}"
        assert outcome.code == "permission_denied", f"{channel}: {outcome.describe()}"
    else:
        assert outcome.ok, f"{channel}: {sql} failed: {outcome.describe()}"
        assert "demo" in outcome.text(), f"{channel}: {sql} showed no demo table"
    lab.assert_unchanged(f"{channel}: {sql}")


@pytest.mark.parametrize(("name", "sql", "expect"), ATTACKS, ids=IDS)
def test_flight_sql_statement(
    lab: Lab, flightsql: Callable[[str], Any], name: str, sql: str, expect: str
) -> None:
    _judge(lab, sql, expect, run_flightsql(flightsql("limited"), sql), "Flight SQL")


@pytest.mark.parametrize(("name", "sql", "expect"), ATTACKS, ids=IDS)
def test_flight_sql_prepared(
    lab: Lab, flightsql: Callable[[str], Any], name: str, sql: str, expect: str
) -> None:
    # A parameter makes ADBC prepare the statement; the rows are the same.
    prepared = f"SELECT * FROM ({sql}) WHERE ? = 1"
    outcome = run_flightsql(flightsql("limited"), prepared, params=(1,))
    _judge(lab, prepared, expect, outcome, "Flight SQL prepared")


@pytest.mark.parametrize(("name", "sql", "expect"), ATTACKS, ids=IDS)
def test_export(lab: Lab, name: str, sql: str, expect: str) -> None:
    with lab.server.http(lab.tokens["limited"]) as http:
        r = http.post("/api/v1/exports", json={"sql": sql, "format": "json"})
        if r.status_code != 202:
            body = r.json()
            outcome = Outcome(error=body.get("detail"), error_type=f"HTTP {r.status_code}")
        else:
            job = wait_job(http, r.json()["job_id"], timeout=60)
            if job["state"] != "succeeded":
                err = job.get("error") or {}
                outcome = Outcome(
                    error=f"[{err.get('code')}] {err.get('message')}", error_type="job"
                )
            else:
                artefact = job["result"]["artefact_id"]
                content = http.get(f"/api/v1/artefacts/{artefact}/content")
                assert content.status_code == 200, content.text
                outcome = Outcome(table=pa.table({"json": [content.text]}))
    _judge(lab, sql, expect, outcome, "export")


@pytest.mark.parametrize(("name", "sql", "expect"), ATTACKS, ids=IDS)
def test_cli(lab: Lab, name: str, sql: str, expect: str) -> None:
    _judge(lab, sql, expect, run_cli(lab.server, lab.tokens["limited"], sql), "CLI")
