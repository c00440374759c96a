"""Reads cannot write, on any channel: `EXPLAIN ANALYZE <write>` (and the same write
behind JSON options, comments, CTEs or `query()`) is refused with [permission_denied]
to readers, limited or not, and to writers too (only admins may profile a write),
over plain Flight, Flight SQL statements and prepared statements, exports and the
`agentdata sql` CLI. After every attempt the database is exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest

from tests.security.conftest import Lab, Outcome, run_cli, run_flightsql
from tests.tasks.support import wait_job

DENIED = frozenset({"permission_denied"})
#: A wrapper DuckDB cannot even parse (`query()` takes one SELECT) may be refused as
#: bad SQL instead; what matters is that nothing runs.
DENIED_OR_INVALID = frozenset({"permission_denied", "invalid_argument"})


@dataclass(frozen=True)
class Attack:
    id: str
    sql: str
    codes: frozenset[str] = DENIED


ATTACKS = [
    Attack("drop-schema", "EXPLAIN ANALYZE DROP SCHEMA secret CASCADE"),
    Attack("insert", "EXPLAIN ANALYZE INSERT INTO demo.x VALUES (99, 'pwned')"),
    Attack("insert-select", "EXPLAIN ANALYZE INSERT INTO demo.x SELECT * FROM demo.x"),
    Attack("update", "EXPLAIN ANALYZE UPDATE demo.x SET note = 'pwned'"),
    Attack("delete", "EXPLAIN ANALYZE DELETE FROM demo.x"),
    Attack("create-table", "EXPLAIN ANALYZE CREATE TABLE demo.pwn_t AS SELECT 1 AS x"),
    Attack("replace-table", "EXPLAIN ANALYZE CREATE OR REPLACE TABLE demo.x AS SELECT 1 AS id"),
    Attack("alter-add", "EXPLAIN ANALYZE ALTER TABLE demo.x ADD COLUMN pwn INTEGER"),
    Attack("alter-rename", "EXPLAIN ANALYZE ALTER TABLE demo.x RENAME TO pwn_x"),
    Attack("create-view", "EXPLAIN ANALYZE CREATE VIEW demo.pwn_v AS SELECT 1 AS x"),
    Attack("drop-view", "EXPLAIN ANALYZE DROP VIEW demo.leaky"),
    Attack("create-macro", "EXPLAIN ANALYZE CREATE MACRO demo.pwn_m(a) AS a + 1"),
    Attack("create-schema", "EXPLAIN ANALYZE CREATE SCHEMA pwn_s"),
    Attack("create-sequence", "EXPLAIN ANALYZE CREATE SEQUENCE demo.pwn_seq"),
    Attack(
        "merge",
        "EXPLAIN ANALYZE MERGE INTO demo.x AS t USING (SELECT 1 AS id) AS s "
        "ON t.id = s.id WHEN MATCHED THEN DELETE",
    ),
    Attack("json-delete", "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM demo.x"),
    Attack(
        "json-update-secret",
        "EXPLAIN (FORMAT json, ANALYZE) UPDATE secret.payroll SET salary_zq = 0",
    ),
    Attack(
        "cte-insert",
        "EXPLAIN ANALYZE WITH src AS (SELECT 100 AS id, 'cte' AS note) "
        "INSERT INTO demo.x SELECT * FROM src",
    ),
    Attack("comments-case", "/* x */ explain /* y */ analyze\n\tdrop  table demo.x"),
    Attack(
        "query-wrapper",
        "SELECT * FROM query('EXPLAIN ANALYZE DROP TABLE demo.x')",
        DENIED_OR_INVALID,
    ),
    Attack(
        "cte-query-wrapper",
        "WITH w AS (SELECT * FROM query('EXPLAIN ANALYZE DELETE FROM demo.x')) SELECT * FROM w",
        DENIED_OR_INVALID,
    ),
]
BY_ID = {a.id: a for a in ATTACKS}
#: A plain write behind a CTE: refused to readers (a writer may run it, so not here).
CTE_WRITE = Attack(
    "cte-plain-insert",
    "WITH src AS (SELECT 7 AS id, 'cte' AS note) INSERT INTO demo.x SELECT * FROM src",
)

#: With a bound parameter, so ADBC goes through CreatePreparedStatement.
PREPARED = [
    Attack("delete", "EXPLAIN ANALYZE DELETE FROM demo.x WHERE id = ?"),
    Attack("insert", "EXPLAIN ANALYZE INSERT INTO demo.x VALUES (?, 'pwned')"),
    Attack("update-secret", "EXPLAIN ANALYZE UPDATE secret.payroll SET salary_zq = 0 WHERE id = ?"),
    Attack("json-delete", "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM demo.x WHERE id > ?"),
    Attack("plain-delete", "DELETE FROM demo.x WHERE id = ?"),
]

#: The unrestricted reader and the Flight SQL channel take the same path as the limited
#: reader over Flight; a cross-section of the attacks keeps the suite quick.
READER_PICKS = [
    "drop-schema",
    "insert",
    "update",
    "delete",
    "create-table",
    "replace-table",
    "alter-rename",
    "create-view",
    "create-macro",
    "create-schema",
    "json-update-secret",
    "cte-insert",
    "comments-case",
    "query-wrapper",
]
WRITER_PICKS = [
    "drop-schema",
    "insert",
    "update",
    "delete",
    "create-table",
    "alter-add",
    "create-macro",
    "json-delete",
    "cte-insert",
    "query-wrapper",
]
LIMITED_WRITER_PICKS = ["drop-schema", "insert", "create-table", "create-schema"]
EXPORT_PICKS = [
    "drop-schema",
    "insert",
    "update",
    "create-table",
    "alter-add",
    "create-macro",
    "create-schema",
    "json-delete",
    "cte-insert",
    "query-wrapper",
]
CLI_PICKS = ["drop-schema", "insert", "json-delete"]


def _judge(lab: Lab, who: str, attack: Attack, outcome: Outcome, channel: str) -> None:
    # The database first: a refusal that comes after the write ran is no refusal.
    lab.assert_unchanged(f"{who} over {channel}: {attack.sql!r}")
    assert outcome.code in attack.codes, (
        f"{who} over {channel}: {attack.sql!r} should be refused with "
        f"{sorted(attack.codes)}, but {outcome.describe()}"
    )
    if channel == "Flight" and outcome.code == "permission_denied":
        # The status code too, not just the text: Flight clients branch on the class.
        assert outcome.error_type == "FlightUnauthorizedError", outcome.describe()
    lab.assert_no_leak(outcome.text(), echo=attack.sql, secrets=who == "limited")


def _params(attacks: list[Attack], tokens: list[str]) -> list[Any]:
    return [pytest.param(who, a, id=f"{who}-{a.id}") for who in tokens for a in attacks]


# -- the harness can see what the attacks would do --------------------------------


def test_fingerprint_sees_every_kind_of_write_and_restore_undoes_it(lab: Lab) -> None:
    for sql, what in [
        ("INSERT INTO demo.x VALUES (42, 'admin')", 'contents "demo"."x"'),
        ("UPDATE demo.x SET note = 'changed' WHERE id = 1", 'contents "demo"."x"'),
        ("DROP SCHEMA secret CASCADE", 'schema "secret"'),
        ("CREATE MACRO demo.fp_m(a) AS a", 'macro "demo"."fp_m"'),
        ("CREATE VIEW demo.fp_v AS SELECT 1 AS x", 'view "demo"."fp_v"'),
        ("CREATE SEQUENCE demo.fp_seq", 'sequence "demo"."fp_seq"'),
        ("CREATE INDEX fp_idx ON demo.x (id)", 'index "demo"."fp_idx"'),
        ("ALTER TABLE demo.x ADD COLUMN fp INTEGER", 'table "demo"."x"'),
        ("DELETE FROM demo.orders WHERE id <= 5", 'contents "demo"."orders"'),
    ]:
        lab.admin(sql)
        diff = lab.damage()
        assert diff is not None and what in diff, (sql, diff)
        assert lab.damage() is None, f"not restored after {sql!r}"


# -- plain Flight (GetFlightInfo + DoGet) ------------------------------------------


@pytest.mark.parametrize(("who", "attack"), _params([*ATTACKS, CTE_WRITE], ["limited", "reader"]))
def test_reader_cannot_write_over_flight(lab: Lab, who: str, attack: Attack) -> None:
    _judge(lab, who, attack, lab.run(who, attack.sql), "Flight")


@pytest.mark.parametrize(
    ("who", "attack"),
    [
        *_params([BY_ID[i] for i in WRITER_PICKS], ["writer"]),
        *_params([BY_ID[i] for i in LIMITED_WRITER_PICKS], ["limited_writer"]),
    ],
)
def test_explain_analyze_of_a_write_is_refused_to_writers_too(
    lab: Lab, who: str, attack: Attack
) -> None:
    _judge(lab, who, attack, lab.run(who, attack.sql), "Flight")


@pytest.mark.parametrize(
    ("who", "attack"),
    _params([BY_ID[i] for i in ("drop-schema", "insert", "create-table")], ["writer", "limited"]),
)
def test_explain_analyze_of_a_write_is_refused_by_the_execute_action(
    lab: Lab, who: str, attack: Attack
) -> None:
    _judge(lab, who, attack, lab.execute(who, attack.sql), "the execute action")


# -- Flight SQL: statements and prepared statements --------------------------------


@pytest.mark.parametrize(
    ("who", "attack"), _params([BY_ID[i] for i in READER_PICKS] + [CTE_WRITE], ["limited"])
)
def test_reader_cannot_write_over_flight_sql(
    lab: Lab, flightsql: Callable[[str], Any], who: str, attack: Attack
) -> None:
    _judge(lab, who, attack, run_flightsql(flightsql(who), attack.sql), "Flight SQL")


@pytest.mark.parametrize(("who", "attack"), _params(PREPARED, ["limited", "reader"]))
def test_reader_cannot_write_through_a_prepared_statement(
    lab: Lab, flightsql: Callable[[str], Any], who: str, attack: Attack
) -> None:
    outcome = run_flightsql(flightsql(who), attack.sql, params=(1,))
    _judge(lab, who, attack, outcome, "a Flight SQL prepared statement")


# -- exports ------------------------------------------------------------------------


def _export(lab: Lab, who: str, sql: str) -> tuple[Outcome, int]:
    """POST /api/v1/exports; a refusal at once, or the job's end. Also: artefacts left."""
    with lab.server.http(lab.tokens[who]) as http:
        r = http.post("/api/v1/exports", json={"sql": sql, "format": "csv"})
    if r.status_code != 202:
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text}
        error = f"[{body.get('code')}] {body.get('detail')}"
        return Outcome(error=error, error_type=f"HTTP {r.status_code}"), 0
    with lab.server.http() as admin:
        job = wait_job(admin, r.json()["job_id"], timeout=60)
        artefacts = admin.get("/api/v1/artefacts", params={"job_id": job["id"]}).json()["total"]
    if job["state"] == "failed":
        err = job["error"] or {}
        return Outcome(
            error=f"[{err.get('code')}] {err.get('message')}", error_type="job failed"
        ), artefacts
    return Outcome(table=pa.table({"job_state": [job["state"]]})), artefacts


@pytest.mark.parametrize(
    ("who", "attack"),
    [*_params([BY_ID[i] for i in EXPORT_PICKS], ["reader"]), *_params([CTE_WRITE], ["reader"])],
)
def test_reader_cannot_write_through_an_export(lab: Lab, who: str, attack: Attack) -> None:
    outcome, artefacts = _export(lab, who, attack.sql)
    _judge(lab, who, attack, outcome, "an export")
    assert artefacts == 0, "a refused export left an artefact"


# -- the CLI ------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "attack"), _params([BY_ID[i] for i in CLI_PICKS], ["reader"]))
def test_reader_cannot_write_through_the_cli(lab: Lab, who: str, attack: Attack) -> None:
    outcome = run_cli(lab.server, lab.tokens[who], attack.sql)
    _judge(lab, who, attack, outcome, "the CLI")
    lab.assert_no_leak(outcome.text(), echo=attack.sql, secrets=False)


# -- what readers may still do ------------------------------------------------------


@pytest.mark.parametrize("who", ["limited", "reader"])
@pytest.mark.parametrize(
    "sql",
    ["EXPLAIN SELECT * FROM demo.orders WHERE id = 1", "EXPLAIN SELECT count(*) FROM demo.x"],
)
def test_plain_explain_of_a_read_works_for_readers(
    lab: Lab, flightsql: Callable[[str], Any], who: str, sql: str
) -> None:
    for channel, outcome in [
        ("Flight", lab.run(who, sql)),
        ("Flight SQL", run_flightsql(flightsql(who), sql)),
    ]:
        assert outcome.ok and outcome.table is not None and outcome.table.num_rows > 0, (
            channel,
            outcome.describe(),
        )
        lab.assert_no_leak(outcome.text(), echo=sql, secrets=who == "limited")
    lab.assert_unchanged(f"{who}: {sql}")
