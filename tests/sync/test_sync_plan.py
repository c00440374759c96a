"""The planner and the batch reshaping, as pure functions (the end-to-end runs that use
them are in test_sync_celery.py and test_sync_embedded.py)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from agentdata.errors import InvalidArgument
from agentdata.syncs import parse_spec
from workers.sync.extract import Since, SourceConstraints, build_query
from workers.sync.load import reshaper
from workers.sync.plan import (
    IncompatibleSchema,
    TargetTable,
    lower_bound,
    parse_duration,
    plan_run,
)
from workers.sync.types import SourceColumn, TargetColumn, arrow_type_of, map_columns

UTC = dt.UTC


def spec(**fields: Any) -> Any:
    base = {"name": "orders", "source": "DB.S.ORDERS", "target": "sales.orders"}
    return parse_spec({**base, **fields})


def source(*columns: tuple[str, str]) -> list[TargetColumn]:
    return map_columns([SourceColumn.parse(name, type_text) for name, type_text in columns])


ORDERS = source(("ID", "NUMBER(38,0)"), ("STATUS", "VARCHAR"), ("UPDATED_AT", "TIMESTAMP_NTZ"))
ORDERS_TABLE = TargetTable(
    "sales.orders",
    exists=True,
    columns={"ID": "DECIMAL(38,0)", "STATUS": "VARCHAR", "UPDATED_AT": "TIMESTAMP"},
)
MISSING = TargetTable("sales.orders", exists=False)
INCREMENTAL = {"mode": "incremental", "cursor": "updated_at", "primary_key": ["id"]}


def test_full_mode_replaces_whatever_exists() -> None:
    for table in (MISSING, ORDERS_TABLE):
        plan = plan_run(spec(), ORDERS, table, run=3)
        assert (plan.mode, plan.put_mode, plan.since, plan.reconcile) == (
            "full",
            "replace",
            None,
            False,
        )
        assert plan.command("sales.orders", "q1") == {
            "table": "sales.orders",
            "mode": "replace",
            "evolve": False,
            "primary_key": [],
            "not_null": [],
            "on_duplicate_key": "fold",
            "snapshot": "q1",
        }


def test_incremental_first_run_is_a_full_load() -> None:
    plan = plan_run(spec(**INCREMENTAL, lookback="1 hour"), ORDERS, MISSING, run=1)
    assert (plan.mode, plan.put_mode) == ("full", "replace")
    assert plan.resync_reason and "does not exist" in plan.resync_reason


def test_incremental_reads_from_the_watermark_minus_lookback_and_merges_on_the_key() -> None:
    watermark = dt.datetime(2024, 5, 1, 12, 0)
    plan = plan_run(
        spec(**INCREMENTAL, lookback="1 hour"), ORDERS, ORDERS_TABLE, run=2, watermark=watermark
    )
    assert (plan.mode, plan.put_mode, plan.key) == ("incremental", "upsert", ("ID",))
    assert plan.since is not None
    # Unquoted spellings resolve to the source's exact names.
    assert (plan.since.column, plan.since.value) == ("UPDATED_AT", dt.datetime(2024, 5, 1, 11, 0))
    assert plan.command("sales.orders", None) == {
        "table": "sales.orders",
        "mode": "upsert",
        "evolve": True,
        "key": ["ID"],
        "primary_key": ["ID"],
        "not_null": [],
        "on_duplicate_key": "fold",
        "latest_by": "UPDATED_AT",  # one row per key: the latest by the cursor
    }
    # NULL cursors default to `include` with a key: read on every run, merged.
    assert plan.since.nulls and plan.null_cursor is not None
    assert plan.null_cursor.policy == "include"


def test_an_empty_table_reads_the_whole_source() -> None:
    plan = plan_run(spec(**INCREMENTAL), ORDERS, ORDERS_TABLE, run=2, watermark=None)
    assert (plan.put_mode, plan.since) == ("upsert", None)


def test_without_a_key_rows_are_appended_strictly_after_the_watermark() -> None:
    plan = plan_run(
        spec(mode="incremental", cursor="UPDATED_AT", lookback="5m"),
        ORDERS,
        ORDERS_TABLE,
        run=2,
        watermark=dt.datetime(2024, 1, 1),
    )
    assert plan.put_mode == "append"
    assert plan.since is not None and plan.after is not None
    assert plan.since.value == plan.after.value == dt.datetime(2024, 1, 1)
    assert any("lookback ignored" in n for n in plan.notes)


def test_reconcile_runs_every_nth_run_of_incremental_syncs() -> None:
    s = spec(**INCREMENTAL, deletes="reconcile", reconcile_every=3)
    runs = [
        plan_run(s, ORDERS, ORDERS_TABLE, run=n, watermark=dt.datetime(2024, 1, 1)).reconcile
        for n in range(1, 8)
    ]
    assert runs == [False, False, True, False, False, True, False]
    # A full load swaps the table: nothing to reconcile.
    full = spec(deletes="reconcile", primary_key=["ID"])
    assert not plan_run(full, ORDERS, ORDERS_TABLE, run=3).reconcile


def test_unknown_cursor_or_key_is_named() -> None:
    with pytest.raises(
        InvalidArgument, match="column 'changed' not found.*columns: ID, STATUS, UPDATED_AT"
    ):
        plan_run(spec(mode="incremental", cursor="changed"), ORDERS, ORDERS_TABLE, run=2)
    with pytest.raises(InvalidArgument, match="column 'nope' not found"):
        plan_run(spec(**{**INCREMENTAL, "primary_key": ["nope"]}), ORDERS, ORDERS_TABLE, run=2)


def test_schema_changes_added_widened_narrowed_and_dropped() -> None:
    table = TargetTable(
        "sales.orders",
        exists=True,
        columns={"ID": "DECIMAL(38,0)", "QTY": "INTEGER", "BIG": "BIGINT", "GONE": "VARCHAR"},
    )
    changed = source(
        ("ID", "NUMBER(38,0)"),
        ("QTY", "NUMBER(18,0)"),  # INTEGER -> BIGINT: widened
        ("BIG", "NUMBER(4,0)"),  # BIGINT <- SMALLINT: loaded into the wider column
        ("NEW", "VARCHAR"),  # added
    )  # GONE: dropped at the source
    full = plan_run(spec(), changed, table, run=2)
    assert full.changes == {"added": ["NEW"], "widened": ["QTY"], "missing": ["GONE"]}
    assert full.casts == {"BIG": pa.int64()}
    assert full.layout == ("ID", "QTY", "BIG", "GONE", "NEW")  # table order, then the new
    assert full.keep == {"GONE": pa.string()}
    incremental = plan_run(
        spec(mode="incremental", cursor="ID", primary_key=["ID"]),
        changed,
        table,
        run=2,
        watermark=Decimal(10),
    )
    assert incremental.casts == {"BIG": pa.int64()} and incremental.put_mode == "upsert"


def test_incompatible_change_fails_naming_the_column_or_resyncs() -> None:
    changed = source(("ID", "NUMBER(38,0)"), ("STATUS", "NUMBER(9,0)"), ("UPDATED_AT", "DATE"))
    for mode in ({}, INCREMENTAL):
        with pytest.raises(IncompatibleSchema) as info:
            plan_run(spec(**mode), changed, ORDERS_TABLE, run=2, watermark=dt.datetime(2024, 1, 1))
        assert "incompatible schema change on sales.orders.STATUS: VARCHAR -> INTEGER" in str(
            info.value
        )
    plan = plan_run(
        spec(**INCREMENTAL, on_incompatible="resync"),
        changed,
        ORDERS_TABLE,
        run=2,
        watermark=dt.datetime(2024, 1, 1),
    )
    assert (plan.mode, plan.put_mode, plan.keep, plan.layout) == ("full", "replace", {}, ())
    assert plan.resync_reason is not None and "STATUS" in plan.resync_reason


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1 hour", 3600),
        ("15m", 900),
        ("2 days", 172800),
        ("90", 90),
        ("1.5h", 5400),
        ("01:30:00", 5400),
        ("1 week", 604800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_lower_bound_in_the_cursors_own_type() -> None:
    ts = dt.datetime(2024, 3, 1, 0, 30, tzinfo=UTC)
    assert lower_bound(ts, "1 hour", cursor="T") == dt.datetime(2024, 2, 29, 23, 30, tzinfo=UTC)
    assert lower_bound(dt.date(2024, 3, 1), "1 day", cursor="D") == dt.date(2024, 2, 29)
    assert lower_bound(dt.date(2024, 3, 1), "1 hour", cursor="D") == dt.date(2024, 2, 29)
    assert lower_bound(1000, 10, cursor="N") == 990
    assert lower_bound(Decimal("10.5"), "0.5", cursor="N") == Decimal("10.0")
    assert lower_bound("abc", None, cursor="S") == "abc"
    with pytest.raises(InvalidArgument, match="lookback must be a number"):
        lower_bound(1000, "1 hour", cursor="N")
    with pytest.raises(InvalidArgument, match="not a duration"):
        lower_bound(ts, "soon", cursor="T")
    with pytest.raises(InvalidArgument, match="time or numeric cursor"):
        lower_bound("abc", "1 hour", cursor="S")


def test_reshaper_casts_keeps_dropped_columns_and_filters() -> None:
    schema = pa.schema([("ID", pa.int64()), ("BIG", pa.int16()), ("NEW", pa.string())])
    batch = pa.record_batch(
        [pa.array([1, 2, 3]), pa.array([7, 8, None], pa.int16()), pa.array(["a", "b", "c"])],
        schema=schema,
    )
    transform = reshaper(
        schema,
        casts={"BIG": pa.int64()},
        layout=("ID", "BIG", "GONE", "NEW"),
        keep={"GONE": pa.json_(pa.string())},
        after=("ID", 1),
    )
    assert transform is not None
    out = transform(batch)
    assert out.schema.names == ["ID", "BIG", "GONE", "NEW"]
    assert out.schema.field("BIG").type == pa.int64()
    assert out.schema.field("GONE").type == pa.json_(pa.string())
    assert out.column("ID").to_pylist() == [2, 3]
    assert out.column("BIG").to_pylist() == [8, None]
    assert out.column("GONE").null_count == 2
    assert reshaper(schema) is None


def test_arrow_types_for_the_mapped_duckdb_types() -> None:
    assert arrow_type_of("DECIMAL(12,2)") == pa.decimal128(12, 2)
    assert arrow_type_of("TIMESTAMP WITH TIME ZONE") == pa.timestamp("us", tz="UTC")
    assert arrow_type_of("JSON") == pa.json_(pa.string())
    assert arrow_type_of("INT4") == pa.int32()
    assert arrow_type_of("UUID", pa.string()) == pa.string()


# -- keys, NULL cursors, constraints, column types ------------------------------------------


def test_the_source_tables_primary_key_is_the_key_when_the_spec_names_none() -> None:
    declared = SourceConstraints(primary_key=("ID",), not_null=frozenset({"ID", "STATUS"}))
    plan = plan_run(
        spec(mode="incremental", cursor="UPDATED_AT"),
        ORDERS,
        ORDERS_TABLE,
        run=2,
        watermark=dt.datetime(2024, 1, 1),
        declared=declared,
    )
    assert (plan.put_mode, plan.key, plan.key_from) == ("upsert", ("ID",), "source")
    command = plan.command("sales.orders", None)
    assert command["primary_key"] == ["ID"] and command["not_null"] == ["ID", "STATUS"]
    # The spec's own key wins over the source's.
    mine = plan_run(spec(primary_key=["status"]), ORDERS, MISSING, run=1, declared=declared)
    assert (mine.key, mine.key_from) == (("STATUS",), "spec")


def test_null_cursor_policies_and_their_defaults() -> None:
    at = dt.datetime(2024, 1, 1)
    appended = plan_run(
        spec(mode="incremental", cursor="UPDATED_AT"), ORDERS, ORDERS_TABLE, run=2, watermark=at
    )
    assert appended.null_cursor is not None and appended.null_cursor.policy == "error"
    skip = plan_run(
        spec(**INCREMENTAL, null_cursor="skip"), ORDERS, ORDERS_TABLE, run=2, watermark=at
    )
    assert skip.since is not None and not skip.since.nulls and skip.skip_nulls_of == "UPDATED_AT"
    first = plan_run(spec(**INCREMENTAL, null_cursor="skip"), ORDERS, MISSING, run=1)
    assert first.mode == "full" and first.skip_nulls_of == "UPDATED_AT"
    with pytest.raises(InvalidArgument, match="null_cursor: include .* needs a key"):
        plan_run(
            spec(mode="incremental", cursor="UPDATED_AT", null_cursor="include"),
            ORDERS,
            ORDERS_TABLE,
            run=2,
        )
    # A cursor Snowflake declares NOT NULL has nothing to count or filter.
    declared = SourceConstraints(not_null=frozenset({"UPDATED_AT"}))
    strict = plan_run(
        spec(**INCREMENTAL, null_cursor="skip"), ORDERS, ORDERS_TABLE, run=2, declared=declared
    )
    assert strict.null_cursor is not None and not strict.null_cursor.nullable
    assert strict.skip_nulls_of is None


def test_the_extraction_query_reads_null_cursors_or_leaves_them_out() -> None:
    assert build_query("DB.S.T", since=Since("C", 5, nulls=True)) == (
        'SELECT * FROM DB.S.T WHERE ("C" >= ? OR "C" IS NULL)',
        [5],
    )
    assert build_query("DB.S.T", not_null="C") == ('SELECT * FROM DB.S.T WHERE "C" IS NOT NULL', [])
    assert build_query("DB.S.T", since=Since("C", 5), not_null="C") == (
        'SELECT * FROM DB.S.T WHERE "C" >= ? AND "C" IS NOT NULL',
        [5],
    )


def test_column_types_load_numbers_as_another_numeric_type() -> None:
    columns = [SourceColumn.parse("ID", "NUMBER(38,0)"), SourceColumn.parse("NAME", "VARCHAR")]
    targets = map_columns(columns, {"ID": "BIGINT"})
    assert (targets[0].duckdb_type, targets[0].arrow_type) == ("BIGINT", pa.int64())
    with pytest.raises(InvalidArgument, match="only NUMBER columns"):
        map_columns(columns, {"NAME": "BIGINT"})
    with pytest.raises(InvalidArgument, match="which the source does not have"):
        map_columns(columns, {"GONE": "BIGINT"})
    with pytest.raises(InvalidArgument, match="column_types: ID: 'TEXT' is not one of"):
        spec(column_types={"ID": "TEXT"})
    assert spec(column_types={"id": "decimal(12, 2)"}).column_types == {"id": "DECIMAL(12,2)"}
