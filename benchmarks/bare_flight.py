"""The transport ceiling: a bare pyarrow.flight server over a table already in memory.

    python -m benchmarks.bare_flight --db ref.duckdb --sql "SELECT * FROM t" --batch-rows 65536

Loads the result once into an Arrow table (cut into `--batch-rows` batches, the same
size agentdata streams), prints `READY <port>`, then answers every GetFlightInfo with
one ticket and every DoGet with `RecordBatchStream` over that table: no SQL, no auth,
no Python per batch. Whatever agentdata adds on top of this is our overhead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.flight as fl


class BareServer(fl.FlightServerBase):
    def __init__(self, location: str, table: pa.Table) -> None:
        super().__init__(location)
        self.table = table

    def get_flight_info(
        self, context: fl.ServerCallContext, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo:
        return fl.FlightInfo(
            self.table.schema,
            descriptor,
            [fl.FlightEndpoint(b"table", [])],
            self.table.num_rows,
            self.table.nbytes,
        )

    def list_actions(self, context: fl.ServerCallContext) -> list[tuple[str, str]]:
        return []  # clients open their connection with it

    def do_get(self, context: fl.ServerCallContext, ticket: fl.Ticket) -> fl.FlightDataStream:
        return fl.RecordBatchStream(self.table)


def start(
    db: str, sql: str, batch_rows: int, timeout: float = 600
) -> tuple[subprocess.Popen[str], int]:
    """Start the bare server in a subprocess; returns (process, port) once it listens."""
    args = ["--db", db, "--sql", sql, "--batch-rows", str(batch_rows)]
    return spawn("benchmarks.bare_flight", args, timeout)


def spawn(module: str, args: list[str], timeout: float) -> tuple[subprocess.Popen[str], int]:
    """Run `python -m module args` and wait for the `READY <port>` line it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{module} exited with {proc.wait()}")
        if line.startswith("READY "):
            return proc, int(line.split()[1])
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def main() -> int:
    import duckdb

    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--sql", required=True)
    p.add_argument("--batch-rows", type=int, default=65_536)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    con = duckdb.connect(a.db, read_only=True)
    # DuckDB's own reader with agentdata's batch size: both servers send the same batches.
    table = con.sql(a.sql).to_arrow_reader(a.batch_rows).read_all()
    con.close()
    server = BareServer(f"grpc://127.0.0.1:{a.port}", table)
    print(f"READY {server.port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
