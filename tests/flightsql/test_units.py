"""The Flight SQL building blocks, in-process (no server)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

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
from flight_server.flightsql.service import MAX_MESSAGE_BYTES, _fit

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


def test_fit_slices_big_batches_without_copying() -> None:
    big = pa.record_batch({"s": pa.array(["x" * 1000] * 20_000)})  # ~20 MB
    pieces = list(_fit(big))
    assert len(pieces) == 3
    assert all(p.nbytes <= MAX_MESSAGE_BYTES for p in pieces)
    assert sum(p.num_rows for p in pieces) == 20_000
    small = pa.record_batch({"i": [1, 2]})
    assert list(_fit(small)) == [small]


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
