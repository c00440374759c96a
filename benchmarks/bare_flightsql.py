"""The ADBC floor: the least a pyarrow Flight SQL server can do for a prepared query.

    python -m benchmarks.bare_flightsql --db ref.duckdb --sql "SELECT * FROM t WHERE id = 1"

Loads one result into memory, prints `READY <port>`, then answers exactly the calls
the ADBC Flight SQL driver makes for `cursor.execute(sql, params)`:
CreatePreparedStatement (once), DoPut of the parameters (read and ignored),
GetFlightInfo and DoGet (that one in-memory result, whatever was asked). No SQL, no
auth, no lookup: the time a point query takes against it is the ADBC client's and
the transport's own, the floor under any Flight SQL server written in Python.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as fl

from benchmarks.bare_flight import spawn
from flight_server.flightsql.messages import pack, unpack
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from flight_server.flightsql.sqlinfo import sql_info_batch

HANDLE = b"bare-prepared"
_NO_INFO = sql_info_batch({}, [])


class BareFlightSqlServer(fl.FlightServerBase):
    def __init__(self, location: str, table: pa.Table) -> None:
        super().__init__(location)
        self.table = table

    def do_action(self, context: fl.ServerCallContext, action: fl.Action) -> Iterator[fl.Result]:
        if action.type == "CreatePreparedStatement":
            result = pb.ActionCreatePreparedStatementResult(
                prepared_statement_handle=HANDLE,
                dataset_schema=self.table.schema.serialize().to_pybytes(),
                parameter_schema=pa.schema([pa.field("1", pa.int64())]).serialize().to_pybytes(),
            )
            return iter([fl.Result(pack(result))])
        return iter([])  # ClosePreparedStatement and anything else: nothing to say

    def do_put(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        reader.read_all()
        reply = pb.DoPutPreparedStatementResult(prepared_statement_handle=HANDLE)
        writer.write(pa.py_buffer(reply.SerializeToString()))

    def get_flight_info(
        self, context: fl.ServerCallContext, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo:
        if isinstance(unpack(descriptor.command), pb.CommandGetSqlInfo):
            # The driver asks what the server is when it connects: nothing, here.
            info = [fl.FlightEndpoint(b"info", [])]
            return fl.FlightInfo(_NO_INFO.schema, descriptor, info, -1, -1)
        ticket = pack(pb.TicketStatementQuery(statement_handle=HANDLE))
        return fl.FlightInfo(self.table.schema, descriptor, [fl.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(self, context: fl.ServerCallContext, ticket: fl.Ticket) -> fl.FlightDataStream:
        if ticket.ticket == b"info":
            return fl.RecordBatchStream(pa.Table.from_batches([_NO_INFO]))
        return fl.RecordBatchStream(self.table)


def start(db: str, sql: str, timeout: float = 120) -> tuple[subprocess.Popen[str], int]:
    """Start the bare server in a subprocess; returns (process, port) once it listens."""
    return spawn("benchmarks.bare_flightsql", ["--db", db, "--sql", sql], timeout)


def main() -> int:
    import duckdb

    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--sql", required=True)
    a = p.parse_args()
    con = duckdb.connect(a.db, read_only=True)
    table = con.sql(a.sql).to_arrow_table()
    con.close()
    server = BareFlightSqlServer("grpc://127.0.0.1:0", table)
    print(f"READY {server.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
