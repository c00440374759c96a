"""Parameter values bound through DoPut: Arrow batches -> one value set per row.

Clients send a prepared statement's parameters as record batches, one row per
execution and one column per placeholder, in placeholder order (ADBC names them
"0", "1", ...; with bind-by-name, the column names are the `$name`s).
"""

from __future__ import annotations

import pyarrow as pa

from agentdata.errors import InvalidArgument, PayloadTooLarge
from flight_server.flightsql.prepared import ParamSet

#: Upper bound on parameter sets in one DoPut (each one is a statement execution).
MAX_PARAMETER_SETS = 100_000


def read_parameter_sets(
    reader: pa.RecordBatchReader, parameter_names: list[str]
) -> list[ParamSet] | None:
    """The bound rows as value sets for DuckDB; None when the stream binds nothing."""
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
    columns = [c.to_pylist() for c in table.columns]
    if all(n.isdigit() for n in parameter_names):
        # Positional (`?`, `$1`): by column order, whatever the columns are called.
        return [list(values) for values in zip(*columns, strict=True)]
    missing = sorted(set(parameter_names) - set(table.column_names))
    if missing:
        raise InvalidArgument(f"no value bound for parameter(s): {', '.join(missing)}")
    by_name = dict(zip(table.column_names, columns, strict=True))
    return [{n: by_name[n][i] for n in parameter_names} for i in range(table.num_rows)]
