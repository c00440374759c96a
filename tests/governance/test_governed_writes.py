"""A writer with row filters writes only rows its filter admits (real server).

The `writer` token sees sales.w filtered to region 'EU' (and sales.people filtered and
masked). An UPDATE or DELETE aimed outside the filter changes nothing; an INSERT, an
UPDATE that would move a row outside it, or an upload of such rows is refused and
writes nothing; nothing it writes may read raw rows or masked values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.governance.conftest import GovLab
from tests.security.conftest import run_execute

W_ROWS = [(1, "EU", "eu-one"), (2, "US", "us-two")]


def _w(gov: GovLab) -> list[tuple]:
    outcome = gov.run("admin", "SELECT id, region, note FROM sales.w ORDER BY id")
    assert outcome.table is not None, outcome.describe()
    return [tuple(r.values()) for r in outcome.table.to_pylist()]


@pytest.fixture
def fresh_w(gov: GovLab) -> Iterator[None]:
    """sales.w as set up, before and after each test."""
    gov.admin("DELETE FROM sales.w")
    gov.admin("INSERT INTO sales.w VALUES (1, 'EU', 'eu-one'), (2, 'US', 'us-two')")
    yield
    gov.admin("DELETE FROM sales.w")
    gov.admin("INSERT INTO sales.w VALUES (1, 'EU', 'eu-one'), (2, 'US', 'us-two')")


def _rows_changed(gov: GovLab, sql: str) -> int:
    outcome = run_execute(gov.server, gov.tokens["writer"], sql, client=gov.client)
    assert outcome.ok, outcome.describe()
    assert outcome.table is not None
    return int(json.loads(outcome.table.column(0)[0].as_py())["rows"])


def _refused(gov: GovLab, sql: str) -> str:
    outcome = run_execute(gov.server, gov.tokens["writer"], sql, client=gov.client)
    assert not outcome.ok, f"{sql} was not refused"
    gov.assert_no_leak(outcome.text(), echo=sql)
    return outcome.code or ""


def test_update_and_delete_outside_the_filter_change_nothing(gov: GovLab, fresh_w: None) -> None:
    assert _rows_changed(gov, "UPDATE sales.w SET note = 'hacked' WHERE id = 2") == 0
    assert _rows_changed(gov, "DELETE FROM sales.w WHERE region = 'US'") == 0
    assert _rows_changed(gov, "DELETE FROM sales.w WHERE id = 2 OR id = 2") == 0
    assert _w(gov) == W_ROWS
    # Inside the filter they work.
    assert _rows_changed(gov, "UPDATE sales.w SET note = 'changed'") == 1
    assert _w(gov) == [(1, "EU", "changed"), (2, "US", "us-two")]
    assert _rows_changed(gov, "DELETE FROM sales.w") == 1
    assert _w(gov) == [(2, "US", "us-two")]


def test_insert_outside_the_filter_is_refused(gov: GovLab, fresh_w: None) -> None:
    assert _refused(gov, "INSERT INTO sales.w VALUES (3, 'US', 'x')") == "permission_denied"
    mixed = "INSERT INTO sales.w VALUES (4, 'EU', 'ok'), (5, 'US', 'x')"
    assert _refused(gov, mixed) == "permission_denied"
    assert _refused(gov, "INSERT INTO sales.w (id, note) VALUES (6, 'no region')")
    assert _w(gov) == W_ROWS  # all or nothing
    assert _rows_changed(gov, "INSERT INTO sales.w VALUES (7, 'EU', 'fine')") == 1
    assert _w(gov) == [*W_ROWS, (7, "EU", "fine")]


def test_update_may_not_move_a_row_out_of_the_filter(gov: GovLab, fresh_w: None) -> None:
    assert _refused(gov, "UPDATE sales.w SET region = 'US' WHERE id = 1") == "permission_denied"
    assert _w(gov) == W_ROWS


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM sales.people WHERE ssn = '999-88-7773'",
        "UPDATE sales.w SET note = (SELECT max(name) FROM sales.people)",
        "CREATE TABLE sales.copy AS SELECT * FROM sales.people",
        "INSERT INTO sales.w SELECT id, 'EU', ssn FROM sales.people",
        "INSERT INTO sales.w SELECT 9, 'EU', name FROM sales.people_v",
        "DROP TABLE sales.w",
        "TRUNCATE sales.w",
        "ALTER TABLE sales.w ADD COLUMN extra INTEGER",
        "DELETE FROM sales.w RETURNING *",
        "INSERT OR REPLACE INTO sales.w VALUES (2, 'EU', 'x')",
        "DROP SCHEMA sales CASCADE",
    ],
)
def test_writes_that_would_reach_around_the_filter_are_refused(
    gov: GovLab, fresh_w: None, sql: str
) -> None:
    before = gov.run("admin", "SELECT count(*) FROM sales.people").table
    assert _refused(gov, sql) in ("permission_denied", "invalid_argument")
    assert _w(gov) == W_ROWS
    assert gov.run("admin", "SELECT count(*) FROM sales.people").table == before


def test_upload_outside_the_filter_is_refused(gov: GovLab, fresh_w: None) -> None:
    opts = gov.server.options(gov.tokens["writer"])

    def put(rows: list[tuple[int, str, str]], mode: str = "append") -> None:
        table = pa.table(
            {
                "id": pa.array([r[0] for r in rows], pa.int32()),
                "region": [r[1] for r in rows],
                "note": [r[2] for r in rows],
            }
        )
        doc = json.dumps({"table": "sales.w", "mode": mode}).encode()
        writer, reader = gov.client.do_put(fl.FlightDescriptor.for_command(doc), table.schema, opts)
        writer.write_table(table)
        writer.done_writing()
        reader.read()
        writer.close()

    with pytest.raises(fl.FlightError) as refused:
        put([(3, "EU", "ok"), (4, "US", "bad")])
    assert "[permission_denied]" in str(refused.value)
    with pytest.raises(fl.FlightError):
        put([(5, "EU", "ok")], mode="replace")  # would drop the US row
    assert _w(gov) == W_ROWS
    put([(6, "EU", "ok")])
    assert _w(gov) == [*W_ROWS, (6, "EU", "ok")]
