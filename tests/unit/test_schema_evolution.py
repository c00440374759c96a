"""The one schema-evolution rule, used by DoPut with `evolve` and by the sync planner.

The cases are the union of what the two copies of the rule used to judge (the loader's
and the planner's), with their one disagreement settled: a narrower load into a wider
column (BIGINT <- INTEGER) is loaded as is, as the planner always did, not refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from agentdata.core import Core
from agentdata.errors import InvalidArgument
from agentdata.ingest import IngestMode, IngestRequest, ingest
from agentdata.schema_evolution import (
    INCOMPATIBLE_REASON,
    TypeChange,
    normalize_duckdb_type,
    plan,
    type_change,
)
from agentdata.settings import Settings

SAME, WIDENING, NARROWING, INCOMPATIBLE = (
    TypeChange.SAME,
    TypeChange.WIDENING,
    TypeChange.NARROWING,
    TypeChange.INCOMPATIBLE,
)

CASES = [
    ("INTEGER", "INTEGER", SAME),
    ("INT4", "INTEGER", SAME),
    ("varchar", "VARCHAR", SAME),
    ("TEXT", "VARCHAR", SAME),
    ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", SAME),
    ("DECIMAL(18,2)", "NUMERIC(18,2)", SAME),
    # integers
    ("TINYINT", "SMALLINT", WIDENING),
    ("INTEGER", "BIGINT", WIDENING),
    ("BIGINT", "HUGEINT", WIDENING),
    ("BIGINT", "INTEGER", NARROWING),
    ("UINTEGER", "BIGINT", WIDENING),
    ("UTINYINT", "USMALLINT", WIDENING),
    ("UTINYINT", "TINYINT", INCOMPATIBLE),  # 255 does not fit, -1 does not either
    ("UBIGINT", "BIGINT", INCOMPATIBLE),
    ("INTEGER", "UBIGINT", INCOMPATIBLE),  # no negative value fits an unsigned type
    # decimals
    ("INTEGER", "DECIMAL(12,2)", WIDENING),
    ("BIGINT", "DECIMAL(19,0)", WIDENING),
    ("BIGINT", "DECIMAL(20,1)", WIDENING),
    ("BIGINT", "DECIMAL(18,0)", NARROWING),
    ("INTEGER", "DECIMAL(12,4)", INCOMPATIBLE),
    ("UINTEGER", "DECIMAL(10,0)", WIDENING),
    ("DECIMAL(9,0)", "INTEGER", WIDENING),
    ("DECIMAL(38,0)", "BIGINT", NARROWING),
    ("HUGEINT", "DECIMAL(38,0)", NARROWING),
    ("DECIMAL(10,2)", "DECIMAL(18,2)", WIDENING),
    ("DECIMAL(10,2)", "DECIMAL(12,4)", WIDENING),
    ("DECIMAL(10,2)", "DECIMAL(10,3)", INCOMPATIBLE),
    ("DECIMAL(18,2)", "DECIMAL(10,2)", NARROWING),
    # floating
    ("FLOAT", "DOUBLE", WIDENING),
    ("DOUBLE", "FLOAT", NARROWING),
    ("INTEGER", "DOUBLE", WIDENING),
    ("USMALLINT", "DOUBLE", WIDENING),
    ("DOUBLE", "INTEGER", NARROWING),
    ("BIGINT", "DOUBLE", INCOMPATIBLE),
    ("DECIMAL(10,2)", "DOUBLE", INCOMPATIBLE),
    # time and text
    ("TIMESTAMP_MS", "TIMESTAMP", WIDENING),
    ("TIMESTAMP_S", "TIMESTAMP", WIDENING),
    ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", INCOMPATIBLE),
    ("DATE", "TIMESTAMP", INCOMPATIBLE),
    ("VARCHAR(10)", "VARCHAR(20)", WIDENING),
    ("VARCHAR(10)", "VARCHAR", WIDENING),
    ("VARCHAR", "VARCHAR(10)", NARROWING),
    ("VARCHAR(20)", "VARCHAR(10)", NARROWING),
    ("VARCHAR", "DOUBLE", INCOMPATIBLE),
    ("BIGINT", "VARCHAR", INCOMPATIBLE),
    ("VARCHAR", "JSON", INCOMPATIBLE),
    ("BLOB", "VARCHAR", INCOMPATIBLE),
]


@pytest.mark.parametrize(("old", "new", "change"), CASES)
def test_type_change(old: str, new: str, change: TypeChange) -> None:
    assert type_change(old, new) is change


@pytest.mark.parametrize(
    ("old", "new"), [(old, new) for old, new, change in CASES if change is WIDENING]
)
def test_every_widening_keeps_every_value_in_duckdb(old: str, new: str) -> None:
    """What the rule calls a widening, DuckDB carries out without losing a value: the
    extremes of the old type survive `ALTER COLUMN ... TYPE` unchanged."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (v {old})")
    for literal in _extremes(old):
        con.execute(f"INSERT INTO t VALUES (({literal})::{old})")
    before = con.execute("SELECT v::VARCHAR FROM t ORDER BY v").fetchall()
    con.execute(f"ALTER TABLE t ALTER COLUMN v TYPE {new}")
    after = con.execute(f"SELECT v::{old}::VARCHAR FROM t ORDER BY v").fetchall()
    assert after == before


_INTEGER_RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
    "UBIGINT": (0, 2**64 - 1),
}


def _extremes(type_text: str) -> tuple[str, str]:
    """Literals for the least and greatest values of `type_text`."""
    base = normalize_duckdb_type(type_text)
    if base in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[base]
        return str(low), str(high)
    if base.startswith("DECIMAL("):
        precision, scale = (int(x) for x in base[8:-1].split(","))
        digits = "9" * (precision - scale) + ("." + "9" * scale if scale else "")
        return f"-{digits}", digits
    if base.startswith("VARCHAR"):
        return "'x'", "'xxxxxxxxxx'"
    if base.startswith("TIMESTAMP"):
        return "'1970-01-01 00:00:00.001'", "'2262-01-01 00:00:01'"
    if base == "FLOAT":
        return "-3.4e38", "3.4e38"
    raise AssertionError(f"no extremes for {type_text}: add them")


def test_normalize_duckdb_type() -> None:
    assert normalize_duckdb_type("timestamp with time zone") == "TIMESTAMPTZ"
    assert normalize_duckdb_type("INT8") == "BIGINT"
    assert normalize_duckdb_type("numeric") == "DECIMAL(18,3)"
    assert normalize_duckdb_type("DECIMAL( 10 , 2 )") == "DECIMAL(10,2)"
    assert normalize_duckdb_type("varchar") == "VARCHAR"


def test_plan_reports_added_widened_narrowed_missing_incompatible() -> None:
    p = plan(
        {"ID": "INTEGER", "name": "VARCHAR", "dropped": "DATE", "n": "VARCHAR", "big": "BIGINT"},
        {"id": "BIGINT", "NAME": "VARCHAR", "extra": "DOUBLE", "n": "INTEGER", "big": "INTEGER"},
    )
    assert p.added == [("extra", "DOUBLE")]
    assert p.widened == [("ID", "INTEGER", "BIGINT")]
    assert p.narrowed == [("big", "BIGINT", "INTEGER")]
    assert p.missing == ["dropped"]
    assert p.incompatible == [("n", "VARCHAR", "INTEGER")]
    assert p.summary() == {"added": ["extra"], "widened": ["ID"], "missing": ["dropped"]}


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    core = Core.open(Settings(data_dir=tmp_path / "data", demo=False))
    yield core
    core.close()


def _load(core: Core, data: pa.Table, **request: Any) -> dict[str, list[str]]:
    admin = core.tokens.verify(core.settings.resolved_admin_token())
    result = ingest(core.engine, admin, IngestRequest(**request), data.to_reader())
    return result.schema_changes


def test_the_loader_applies_the_rule_narrowing_widening_and_refusing(core: Core) -> None:
    """DoPut's loader on a real engine: a narrower column loads into the wider one, an
    exact INTEGER -> DOUBLE widens, and an incompatible change writes nothing and says
    why in its detail (what a sync branches on)."""
    first = pa.table({"id": pa.array([1], pa.int64()), "x": pa.array([1], pa.int32())})
    _load(core, first, table="ev.t", mode=IngestMode.REPLACE)
    second = pa.table({"id": pa.array([2], pa.int32()), "x": pa.array([2.5], pa.float64())})
    changes = _load(core, second, table="ev.t", evolve=True)
    assert changes == {"added": [], "widened": ["x"], "missing": []}
    admin = core.tokens.verify(core.settings.resolved_admin_token())
    types = core.engine.query_table(admin, "DESCRIBE ev.t").to_pydict()
    assert dict(zip(types["column_name"], types["column_type"], strict=True)) == {
        "id": "BIGINT",  # kept: the INTEGER values were loaded into it
        "x": "DOUBLE",
    }
    bad = pa.table({"id": pa.array([3], pa.int64()), "x": pa.array(["text"])})
    with pytest.raises(InvalidArgument) as refused:
        _load(core, bad, table="ev.t", evolve=True)
    assert refused.value.detail == {
        "reason": INCOMPATIBLE_REASON,
        "column": "x",
        "old_type": "DOUBLE",
        "new_type": "VARCHAR",
    }
    rows = core.engine.query_table(admin, "SELECT id, x FROM ev.t ORDER BY id").to_pydict()
    assert rows == {"id": [1, 2], "x": [1.0, 2.5]}
