"""The Flight SQL building blocks, in-process (no server)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from agentdata.batches import slice_by_bytes
from agentdata.core import Core
from agentdata.engine import StreamOptions
from agentdata.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from agentdata.settings import Settings
from agentdata.sqlguard import Kind
from agentdata.tokens import Principal, Role
from flight_server.flightsql import schemas, sqlinfo, xdbc
from flight_server.flightsql.catalog import like
from flight_server.flightsql.messages import is_flight_sql, pack, unpack
from flight_server.flightsql.params import read_parameter_sets
from flight_server.flightsql.prepared import PreparedStatements
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from flight_server.flightsql.service import MAX_MESSAGE_BYTES

READER = Principal(token_id="r", name="r", role=Role.READER)
WRITER = Principal(token_id="w", name="w", role=Role.WRITER)
CUSTOMERS_ONLY = Principal(token_id="c", name="c", role=Role.READER, tables=("demo.customers",))


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    core = Core.open(Settings(data_dir=tmp_path_factory.mktemp("core"), demo_rows=1000))
    yield core
    core.close()


def test_messages_round_trip_and_plain_sql_is_not_flight_sql() -> None:
    data = pack(pb.CommandStatementQuery(query="SELECT 1"))
    assert is_flight_sql(data)
    assert unpack(data) == pb.CommandStatementQuery(query="SELECT 1")
    assert not is_flight_sql(b"SELECT 1")
    assert not is_flight_sql(b"\nSELECT 1")
    assert not is_flight_sql(b'{"sql": "SELECT 1"}')
    with pytest.raises(InvalidArgument):
        unpack(b"SELECT 1")


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        (None, ["anything"], []),
        ("%", ["", "x"], []),
        ("de_o", ["demo", "dexo"], ["deo", "demos"]),
        ("%ord%", ["orders", "records", "ord"], ["odr"]),
        ("a\\_b", ["a_b"], ["axb"]),
        ("a\\%", ["a%"], ["ab"]),
        ("Demo", ["Demo"], ["demo"]),
    ],
)
def test_like_patterns(pattern: str | None, yes: list[str], no: list[str]) -> None:
    match = like(pattern)
    assert all(match(n) for n in yes)
    assert not any(match(n) for n in no)


def test_sql_info_batch_has_the_spec_schema() -> None:
    info = {0: "agentdata", 3: True, 8: sqlinfo.Int32(0), 100: 5, 508: ["SELECT"], 517: {1: [2]}}
    batch = sqlinfo.sql_info_batch(info, [])
    assert batch.schema == schemas.SQL_INFO
    assert dict(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)) == {
        0: "agentdata",
        3: True,
        8: 0,
        100: 5,
        508: ["SELECT"],
        517: [(1, [2])],
    }
    # Union members: string 0, bool 1, int32 bitmask 3, bigint 2, list 4, map 5.
    assert batch.column(1).type_codes.to_pylist() == [0, 1, 3, 2, 4, 5]
    only = sqlinfo.sql_info_batch(info, [3, 999])
    assert only.column(0).to_pylist() == [3]


def test_xdbc_type_info_schema_and_order() -> None:
    table = xdbc.type_info(None)
    assert table.schema == schemas.XDBC_TYPE_INFO
    types, names = table.column("data_type").to_pylist(), table.column("type_name").to_pylist()
    keys = list(zip(types, names, strict=True))
    assert keys == sorted(keys)
    assert xdbc.type_info(pb.XDBC_DATE).column("type_name").to_pylist() == ["DATE"]
    assert xdbc.type_info(12345).num_rows == 0


def test_big_batches_are_sliced_without_copying() -> None:
    big = pa.record_batch({"s": pa.array(["x" * 1000] * 20_000)})  # ~20 MB
    pieces = list(slice_by_bytes(big, MAX_MESSAGE_BYTES))
    assert len(pieces) == 3
    assert all(p.nbytes <= MAX_MESSAGE_BYTES for p in pieces)
    assert sum(p.num_rows for p in pieces) == 20_000
    data = big.column(0).buffers()[2].address  # zero-copy: every slice shares the buffer
    assert all(p.column(0).buffers()[2].address == data for p in pieces)
    small = pa.record_batch({"i": [1, 2]})
    assert list(slice_by_bytes(small, MAX_MESSAGE_BYTES)) == [small]


def test_a_call_can_lower_the_batch_size_and_batches_are_sliced_once(core: Core) -> None:
    sql = "SELECT repeat('x', 1000) AS s FROM range(20000)"  # ~20 MB of strings
    limit = 1024 * 1024
    options = StreamOptions(max_batch_bytes=limit)
    batches = list(core.engine.open_stream(READER, sql, options))
    assert sum(b.num_rows for b in batches) == 20_000
    assert len(batches) > 10 and all(b.nbytes <= limit for b in batches)
    # Without the call's own cap, the engine's (16 MiB by default) applies.
    default = list(core.engine.open_stream(READER, sql, StreamOptions()))
    assert max(b.nbytes for b in default) > limit


def _reader(**columns: list) -> pa.RecordBatchReader:
    table = pa.table(columns)
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


def test_parameter_sets() -> None:
    assert read_parameter_sets(_reader(a=[1, 2], b=["x", None]), ["1", "2"]) == [
        [1, "x"],
        [2, None],
    ]
    # Named placeholders are bound by column name, in any column order.
    assert read_parameter_sets(_reader(b=[1], a=[2]), ["a", "b"]) == [{"a": 2, "b": 1}]
    assert read_parameter_sets(_reader(a=[]), ["1"]) is None
    with pytest.raises(InvalidArgument, match="2 parameter"):
        read_parameter_sets(_reader(a=[1]), ["1", "2"])


def test_prepared_statements_are_bound_to_their_token() -> None:
    store = PreparedStatements(idle_ttl_s=60, max_per_token=2)
    schema = pa.schema([])

    def create(principal: Principal) -> bytes:
        return store.create(
            principal,
            sql="SELECT 1",
            kind=Kind.READ,
            parameter_names=[],
            dataset_schema=schema,
            parameter_schema=schema,
        ).handle

    handle = create(READER)
    assert store.get(READER, handle).sql == "SELECT 1"
    with pytest.raises(PermissionDenied):
        store.get(WRITER, handle)
    with pytest.raises(PermissionDenied):
        store.close(WRITER, handle)
    create(READER)
    with pytest.raises(ResourceExhausted):
        create(READER)
    create(WRITER)  # the limit is per token
    store.close(READER, handle)
    store.close(READER, handle)  # closing twice is fine
    with pytest.raises(NotFound):
        store.get(READER, handle)
    other = create(READER)
    store.get(READER, other).last_used -= 61  # idle for longer than the TTL
    with pytest.raises(NotFound, match="expired"):
        store.get(READER, other)


def test_engine_checks_parameterized_statements(core: Core) -> None:
    engine = core.engine
    assert engine.parameter_names("SELECT * FROM demo.customers WHERE id = ? AND name = ?") == [
        "1",
        "2",
    ]
    assert engine.parameter_names("SELECT $b, $a") == ["a", "b"]
    stmt = engine.check(CUSTOMERS_ONLY, "SELECT * FROM demo.customers WHERE id = ?")
    assert stmt.tables == frozenset({"demo.customers"})
    with pytest.raises(PermissionDenied, match="demo.orders"):
        engine.check(CUSTOMERS_ONLY, "SELECT * FROM demo.orders WHERE id = ?")
    with pytest.raises(PermissionDenied, match="table function"):
        engine.check(READER, "SELECT * FROM query_table(?)")
    with pytest.raises(PermissionDenied, match="may only read"):
        engine.check(READER, "DELETE FROM demo.customers WHERE id = ?")
    _, schema = engine.schema_of(READER, "SELECT id, ? AS tag FROM demo.customers", ["x"])
    assert schema.names == ["id", "tag"]
    assert schema.field("tag").type == pa.string()
    stream = engine.open_stream(
        CUSTOMERS_ONLY,
        "SELECT name FROM demo.customers WHERE id = $1",
        StreamOptions(params=[3]),
    )
    assert stream.to_reader().read_all().to_pylist() == [{"name": "Customer 3"}]


def test_engine_write_with_parameter_sets_is_all_or_nothing(core: Core) -> None:
    engine = core.engine
    engine.execute_write(WRITER, "CREATE TABLE main.kv (k INTEGER PRIMARY KEY, v VARCHAR)")
    rows = engine.execute_write(
        WRITER, "INSERT INTO main.kv VALUES (?, ?)", param_sets=[[1, "a"], [2, "b"]]
    )
    assert rows == 2
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        engine.execute_write(
            WRITER, "INSERT INTO main.kv VALUES (?, ?)", param_sets=[[3, "c"], [1, "dup"]]
        )
    assert engine.query_table(READER, "SELECT k FROM main.kv ORDER BY k").column(0).to_pylist() == [
        1,
        2,
    ]


def test_engine_runs_a_parameter_batch_set_based(core: Core) -> None:
    from agentdata.param_batches import ParameterBatch

    engine = core.engine
    engine.execute_write(WRITER, "CREATE TABLE main.batch (k INTEGER PRIMARY KEY, v VARCHAR)")
    batch = ParameterBatch(pa.table({"0": [1, 2, 3], "1": ["a", None, "c"]}), ["1", "2"])
    outcome = engine.run_write(
        WRITER, "INSERT INTO main.batch VALUES (?, upper(?)) RETURNING k, v", param_sets=batch
    )
    assert outcome.rows == 3
    assert outcome.result().to_pylist() == [
        {"k": 1, "v": "A"},
        {"k": 2, "v": None},
        {"k": 3, "v": "C"},
    ]
    # All or nothing, as row by row: a repeated key lands none of the batch.
    dup = ParameterBatch(pa.table({"0": [4, 1], "1": ["d", "x"]}), ["1", "2"])
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        engine.execute_write(WRITER, "INSERT INTO main.batch VALUES (?, ?)", param_sets=dup)
    # By name; and UPDATE, set-based when no row meets two sets.
    named = ParameterBatch(pa.table({"v": ["z"], "k": [5]}), ["k", "v"])
    assert (
        engine.execute_write(WRITER, "INSERT INTO main.batch VALUES ($k, $v)", param_sets=named)
        == 1
    )
    update = ParameterBatch(pa.table({"0": ["y", "w"], "1": [1, 5]}), ["1", "2"])
    assert (
        engine.execute_write(WRITER, "UPDATE main.batch SET v = ? WHERE k = ?", param_sets=update)
        == 2
    )
    got = engine.query_table(READER, "SELECT k, v FROM main.batch ORDER BY k").to_pylist()
    assert got == [
        {"k": 1, "v": "y"},
        {"k": 2, "v": None},
        {"k": 3, "v": "C"},
        {"k": 5, "v": "w"},
    ]
    # Two sets on one row: row by row, so the later one wins and both count, as a
    # client running them one by one would see.
    twice = ParameterBatch(pa.table({"0": ["p", "q", "r"], "1": [3, 3, 5]}), ["1", "2"])
    assert (
        engine.execute_write(WRITER, "UPDATE main.batch SET v = ? WHERE k = ?", param_sets=twice)
        == 3
    )
    got = engine.query_table(READER, "SELECT k, v FROM main.batch WHERE k IN (3, 5) ORDER BY k")
    assert got.to_pylist() == [{"k": 3, "v": "q"}, {"k": 5, "v": "r"}]
    # RETURNING through the set-based form: one row per updated row.
    back = ParameterBatch(pa.table({"0": ["C", "w"], "1": [3, 5]}), ["1", "2"])
    outcome = engine.run_write(
        WRITER, "UPDATE main.batch SET v = ? WHERE k = ? RETURNING k, v", param_sets=back
    )
    assert sorted(outcome.result().to_pylist(), key=lambda r: r["k"]) == [
        {"k": 3, "v": "C"},
        {"k": 5, "v": "w"},
    ]
    # DELETE: a row goes if any set matches it, counted once (as row by row); a batch
    # column named like a table column does not hide the table's.
    gone = ParameterBatch(pa.table({"k": [1, 1, 3, 9]}), ["k"])
    assert engine.execute_write(WRITER, "DELETE FROM main.batch WHERE k = $k", param_sets=gone) == 2
    # The temporary view of the batch is gone with the statement.
    tables = engine.query_table(WRITER, "SELECT table_name FROM duckdb_tables()").column(0)
    assert not [t for t in tables.to_pylist() if t.startswith("__agentdata_params")]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t VALUES (?, ?)", 'INSERT INTO t SELECT __p."p0", __p."p1" FROM v AS __p'),
        (
            "DELETE FROM s.t WHERE id = ? AND kind <> $2 RETURNING id;",
            'DELETE FROM s.t WHERE EXISTS (SELECT 1 FROM v AS __p WHERE (id = __p."p0" '
            'AND kind <> __p."p1"\n)) RETURNING id',
        ),
        ("DELETE FROM t WHERE id IN (SELECT k FROM u WHERE k > ?)", None),
        ("DELETE FROM t USING u WHERE t.id = u.id AND u.k = ?", None),
        (
            "insert into s.t (a, b) values ($2, lower($1)) returning a;",
            'insert into s.t (a, b) SELECT __p."p1", lower(__p."p0") FROM v AS __p returning a',
        ),
        ("INSERT INTO t VALUES ('?', ?)", "INSERT INTO t SELECT '?', __p.\"p0\" FROM v AS __p"),
        ("INSERT INTO t VALUES (?, ?), (?, ?)", None),
        ("INSERT INTO t VALUES (?) ON CONFLICT DO NOTHING", None),
        ("INSERT OR REPLACE INTO t VALUES (?)", None),
        ("INSERT INTO t VALUES (?, DEFAULT)", None),
        ("INSERT INTO t VALUES ((SELECT max(k) FROM t) + ?)", None),
        ("INSERT INTO t SELECT ?", None),
        (
            "UPDATE s.t SET a = upper(?) WHERE b = ? RETURNING a;",
            'UPDATE s.t SET a = upper(__p."p0") FROM v AS __p WHERE (b = __p."p1"\n) RETURNING a',
        ),
        (
            "UPDATE t AS x SET a = $2, c = c + 1 WHERE x.b = $1",
            'UPDATE t AS x SET a = __p."p1", c = c + 1 FROM v AS __p WHERE (x.b = __p."p0"\n)',
        ),
        # The WHERE reads a column the sets change: a set could move rows into a later
        # set's match.
        ("UPDATE t SET a = ? WHERE a = ?", None),
        ('UPDATE t SET "A" = ? WHERE b = ? OR a > 0', None),
        ("UPDATE t SET a = ?", None),
        ("UPDATE t SET a = ? FROM u WHERE t.b = u.b AND u.c = ?", None),
        ("UPDATE t SET a = (SELECT max(b) FROM t) + ? WHERE b = ?", None),
        ("UPDATE t SET (a, b) = (?, ?) WHERE c = 1", None),
    ],
)
def test_set_based_rewrite(sql: str, expected: str | None) -> None:
    from agentdata.param_batches import set_based

    plan = set_based(sql, "v", {"1": "p0", "2": "p1"})
    assert (plan.sql if plan else None) == expected
    if plan is not None:
        # Only an UPDATE can meet itself on one row.
        assert (plan.conflicts is not None) == sql.upper().startswith("UPDATE")
