"""Widening rules used by loads with `evolve`."""

from __future__ import annotations

import pytest

from agentdata.schema_evolution import Change, classify, plan


@pytest.mark.parametrize(
    ("old", "new", "change"),
    [
        ("INTEGER", "INTEGER", Change.SAME),
        ("INTEGER", "BIGINT", Change.WIDEN),
        ("BIGINT", "HUGEINT", Change.WIDEN),
        ("BIGINT", "INTEGER", Change.INCOMPATIBLE),
        ("UINTEGER", "BIGINT", Change.WIDEN),
        ("UBIGINT", "BIGINT", Change.INCOMPATIBLE),
        ("INTEGER", "UBIGINT", Change.INCOMPATIBLE),
        ("INTEGER", "DECIMAL(12,2)", Change.WIDEN),
        ("BIGINT", "DECIMAL(18,0)", Change.INCOMPATIBLE),
        ("DECIMAL(10,2)", "DECIMAL(18,2)", Change.WIDEN),
        ("DECIMAL(10,2)", "DECIMAL(12,4)", Change.WIDEN),
        ("DECIMAL(10,2)", "DECIMAL(10,3)", Change.INCOMPATIBLE),
        ("DECIMAL(18,2)", "DECIMAL(10,2)", Change.INCOMPATIBLE),
        ("FLOAT", "DOUBLE", Change.WIDEN),
        ("INTEGER", "DOUBLE", Change.WIDEN),
        ("BIGINT", "DOUBLE", Change.INCOMPATIBLE),
        ("DOUBLE", "FLOAT", Change.INCOMPATIBLE),
        ("VARCHAR", "DOUBLE", Change.INCOMPATIBLE),
        ("TIMESTAMP_MS", "TIMESTAMP", Change.WIDEN),
        ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", Change.INCOMPATIBLE),
        ("varchar", "VARCHAR", Change.SAME),
    ],
)
def test_classify(old: str, new: str, change: Change) -> None:
    assert classify(old, new) is change


def test_plan_reports_added_widened_missing_incompatible() -> None:
    p = plan(
        {"ID": "INTEGER", "name": "VARCHAR", "dropped": "DATE", "n": "VARCHAR"},
        {"id": "BIGINT", "NAME": "VARCHAR", "extra": "DOUBLE", "n": "INTEGER"},
    )
    assert p.added == [("extra", "DOUBLE")]
    assert p.widened == [("ID", "INTEGER", "BIGINT")]
    assert p.missing == ["dropped"]
    assert p.incompatible == [("n", "VARCHAR", "INTEGER")]
