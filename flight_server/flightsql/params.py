"""Parameter values bound through DoPut: Arrow batches -> a batch of parameter sets.

Clients send a prepared statement's parameters as record batches, one row per
execution and one column per placeholder, in placeholder order (ADBC names them
"0", "1", ...; with bind-by-name, the column names are the `$name`s). An update
runs the whole batch at once (`agentdata.param_batches`: one set-based INSERT, UPDATE
or DELETE where the statement allows it); a query takes one row.
"""

from __future__ import annotations

import pyarrow as pa

from agentdata.errors import InvalidArgument, PayloadTooLarge
from agentdata.param_batches import ParameterBatch
from flight_server.flightsql.prepared import ParamSet

#: Upper bound on parameter sets in one DoPut (a statement that cannot run them
#: set-based runs them one by one, up to `agentdata.param_batches.MAX_ROW_BY_ROW`).
MAX_PARAMETER_SETS = 1_000_000


def read_parameter_batch(
    reader: pa.RecordBatchReader, parameter_names: list[str]
) -> ParameterBatch | None:
    """The bound rows, checked against the statement's placeholders; None when the
    stream binds nothing."""
    batches = []
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if rows > MAX_PARAMETER_SETS:
            raise PayloadTooLarge(
                f"more than {MAX_PARAMETER_SETS} parameter sets in one call; "
                "load bulk data with ingest (adbc_ingest) instead"
            )
        batches.append(batch)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if table.num_columns == 0 or table.num_rows == 0:
        return None
    if len(parameter_names) != table.num_columns:
        raise InvalidArgument(
            f"the statement has {len(parameter_names)} parameter(s), "
            f"{table.num_columns} value(s) were bound"
        )
    if not all(n.isdigit() for n in parameter_names):
        missing = sorted(set(parameter_names) - set(table.column_names))
        if missing:
            raise InvalidArgument(f"no value bound for parameter(s): {', '.join(missing)}")
    return ParameterBatch(table, parameter_names)


def read_parameter_sets(
    reader: pa.RecordBatchReader, parameter_names: list[str]
) -> list[ParamSet] | None:
    """The bound rows as value sets for DuckDB; None when the stream binds nothing."""
    batch = read_parameter_batch(reader, parameter_names)
    return None if batch is None else batch.sets()
