"""Record batches cut to a size: the one place a streamed batch is sliced by bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa


def slice_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """`batch` as zero-copy slices of roughly `max_bytes` each (a single row is never cut)."""
    size = batch.nbytes
    if size <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    pieces = -(-size // max_bytes)
    step = max(1, -(-batch.num_rows // pieces))
    for start in range(0, batch.num_rows, step):
        yield batch.slice(start, step)
