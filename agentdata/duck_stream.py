"""One checked statement run as an Arrow stream, parsed once.

DuckDB 2.0's relation API (`cur.sql(text).to_arrow_reader()`) parses and binds the
text to build a relation, then renders the relation back to SQL, which is parsed,
bound and planned again to run it. On a point query that first pass is about half of
DuckDB's time (measured: 0.77 ms through the relation, 0.51 ms submitted once).
`arrow_stream` submits the text once, through the call the relation API itself ends
in (`duckdb._seam.submit`, pinned with duckdb in the lock file), and reads the column
types (for JSON tagging) from the result's description. Where that call is missing
(another duckdb build), it takes the relation path: slower, the same result.

A row cap wraps the statement as the relation API's `limit` does: a subquery, so
DuckDB plans a top-N for an ORDER BY instead of a full sort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from agentdata.json_columns import as_json_extension

try:  # DuckDB's own seam between its relation layer and the engine (duckdb 2.0).
    from duckdb import _seam
except ImportError:  # pragma: no cover - another duckdb build
    _seam = None  # type: ignore[assignment]

Params = Sequence[Any] | Mapping[str, Any] | None


def arrow_stream(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Params = None,
    *,
    batch_rows: int,
    limit: int | None = None,
) -> pa.RecordBatchReader:
    """Run `sql` on `cur` and stream its result in batches of `batch_rows` rows (at
    most `limit` rows, if given), JSON columns tagged `arrow.json`. Raises what DuckDB
    raises (the caller translates)."""
    if _seam is None:
        rel = cur.sql(sql, params=params)
        if limit is not None:
            rel = rel.limit(limit)
        return as_json_extension(rel.to_arrow_reader(batch_rows), rel.types)
    if limit is not None:
        # New lines around the text: a trailing `-- comment` must not swallow the `)`.
        sql = f'SELECT * FROM (\n{sql}\n) AS "agentdata_result" LIMIT {int(limit)}'
    values = dict(params) if isinstance(params, Mapping) else list(params) if params else None
    result = _seam.submit(cur, sql, values, "stream", batch_rows)
    types = [column[1] for column in result.description or ()]
    return as_json_extension(result.arrow_reader(), types)
