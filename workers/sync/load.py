"""The load stage of a sync: the extractor's batches streamed into the server's DoPut.

    result = load(client, {"table": "sales.orders", "mode": "upsert", "key": ["ID"],
                           "evolve": True, "snapshot": query_id},
                  extraction, schema, progress=counter)
    result["rows"], result["deleted"], result["schema_changes"]

Batches go to the server as they arrive from Snowflake, one at a time: the worker
holds the connector's current chunk and the batch being sent, never the table. The
server stages the stream and applies it in one transaction when it ends (see
`agentdata.ingest`), so a load either lands whole or not at all.

Every upload asks the server for an end marker (`"end_marker": true`): after the last
batch the loader sends `{"end": <rows sent>}` as app metadata, and only an upload that
ends with it, with the right count, is applied. Stopping without writing anything (the
job was cancelled, the sync lock was lost, the source failed mid-stream, the worker
died) is simply not sending it: the connection is closed and the server discards what
it staged. A cancelled call alone would not do, since gRPC may show it to the server
as a clean end of stream.

Errors keep their step: a failure while pulling the next batch is the extractor's
(`extract`), one while sending or committing is the server's (`load`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as fl

from agentdata.errors import AgentdataError, InternalError
from workers.client import ServerClient, error_from_flight

log = logging.getLogger("agentdata.worker.sync")

Transform = Callable[[pa.RecordBatch], pa.RecordBatch]


class StepFailed(Exception):
    """An error and the step of the sync it happened in (extract, plan, load, ...)."""

    def __init__(self, step: str, error: AgentdataError) -> None:
        super().__init__(f"{step}: {error.message}")
        self.step = step
        self.error = error


@dataclass
class LoadCounter:
    """Rows and bytes sent to the server so far (read by the progress reporter)."""

    rows: int = 0
    bytes: int = 0
    batches: int = 0
    #: Seconds spent waiting for the source's next batch, sending batches, and between
    #: the end of the upload and the server's answer (staging the rest and committing).
    source_s: float = 0.0
    send_s: float = 0.0
    commit_s: float = 0.0
    #: Rows sent whose cursor is NULL (a sync's `null_cursor: include`).
    null_cursor_rows: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def timings(self) -> dict[str, float]:
        return {
            "source": round(self.source_s, 3),
            "send": round(self.send_s, 3),
            "commit": round(self.commit_s, 3),
        }

    def add(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self.rows += batch.num_rows
            self.bytes += batch.nbytes
            self.batches += 1


def load(
    client: ServerClient,
    command: dict[str, Any],
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    *,
    transform: Transform | None = None,
    counter: LoadCounter | None = None,
    should_stop: Callable[[], AgentdataError | None] = lambda: None,
    max_rows_per_s: float = 0.0,
    count_nulls: str | None = None,
) -> dict[str, Any]:
    """Stream `batches` (of `schema`) into the server with DoPut `command`; returns the
    server's PutResult (`rows`, `created`, `deleted`, `schema_changes`,
    `duplicates_folded`, `constraints`).

    `transform` reshapes each batch (casts, kept columns) and must map `schema` to the
    schema it produces. `should_stop` is polled between batches; an error it returns
    (e.g. `Cancelled`) abandons the upload and is raised. `max_rows_per_s` throttles.
    `count_nulls` names a column whose NULLs are counted (`counter.null_cursor_rows`).
    """
    counter = counter if counter is not None else LoadCounter()
    out_schema = transform(_empty(schema)).schema if transform is not None else schema
    # A Flight client of its own: closing it is how an unfinished upload is abandoned.
    upload = client.clone()
    started = time.monotonic()
    finished = False
    sent = 0
    try:
        try:
            writer, results = upload.open_put({**command, "end_marker": True}, out_schema)
        except AgentdataError as e:
            raise StepFailed("load", e) from None
        while True:
            stop = should_stop()
            if stop is not None:
                raise StepFailed("load", stop)
            waited = time.monotonic()
            try:
                batch = next(batches, None)
            except AgentdataError as e:
                raise StepFailed("extract", e) from None
            finally:
                counter.source_s += time.monotonic() - waited
            if batch is None:
                break
            if transform is not None:
                batch = transform(batch)
            if batch.num_rows == 0:
                continue
            sending = time.monotonic()
            try:
                writer.write_batch(batch)
            except (fl.FlightError, pa.ArrowException) as e:
                raise StepFailed("load", _put_error(e)) from None
            counter.send_s += time.monotonic() - sending
            counter.add(batch)
            if count_nulls is not None:
                counter.null_cursor_rows += batch.column(count_nulls).null_count
            sent += batch.num_rows
            if max_rows_per_s > 0:
                _throttle(counter.rows, started, max_rows_per_s, should_stop)
        stop = should_stop()
        if stop is not None:
            raise StepFailed("load", stop)
        committing = time.monotonic()
        try:
            # The end marker is what makes the server apply the upload (see module doc).
            writer.write_metadata(pa.py_buffer(json.dumps({"end": sent}).encode()))
            writer.done_writing()
            finished = True
            answer = results.read()
            writer.close()
        except (fl.FlightError, pa.ArrowException) as e:
            raise StepFailed("load", _put_error(e)) from None
        finally:
            counter.commit_s += time.monotonic() - committing
        if answer is None:
            raise StepFailed("load", InternalError("the server sent no result for the load"))
        result: dict[str, Any] = json.loads(answer.to_pybytes())
        return result
    finally:
        if not finished:
            log.info("abandoning the upload to %s (nothing is written)", command.get("table"))
        upload.close()


def _put_error(exc: Exception) -> AgentdataError:
    return error_from_flight(exc)


def _throttle(
    rows: int,
    started: float,
    max_rows_per_s: float,
    should_stop: Callable[[], AgentdataError | None],
) -> None:
    ahead = rows / max_rows_per_s - (time.monotonic() - started)
    while ahead > 0 and should_stop() is None:
        time.sleep(min(ahead, 0.1))
        ahead = rows / max_rows_per_s - (time.monotonic() - started)


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


# -- batch transforms --------------------------------------------------------------------


def reshaper(
    schema: pa.Schema,
    *,
    casts: dict[str, pa.DataType] | None = None,
    layout: tuple[str, ...] = (),
    keep: dict[str, pa.DataType] | None = None,
    after: tuple[str, Any] | None = None,
) -> Transform | None:
    """The per-batch transform a plan needs, or None when batches go as they are.

    - `casts`: load narrower source columns into the table's wider type (safe casts);
    - `layout` + `keep`: a full reload's columns in table order, with the columns the
      source dropped present as all-NULL columns of their old type;
    - `after`: (column, value) keep only rows whose column is strictly greater.
    """
    casts = casts or {}
    keep = keep or {}
    if not casts and not keep and not layout and after is None:
        return None
    names = list(layout) if layout else schema.names
    fields = []
    for name in names:
        if name in keep:
            fields.append(pa.field(name, keep[name]))
        else:
            fields.append(pa.field(name, casts.get(name, schema.field(name).type)))
    out = pa.schema(fields)

    def transform(batch: pa.RecordBatch) -> pa.RecordBatch:
        if after is not None:
            column, value = after
            mask = pc.greater(
                batch.column(column), pa.scalar(value, batch.schema.field(column).type)
            )
            batch = batch.filter(pc.fill_null(mask, False))
        arrays = []
        for f in out:
            if f.name in keep:
                arrays.append(pa.nulls(batch.num_rows, type=f.type))
                continue
            array = batch.column(f.name)
            if array.type != f.type:
                array = pc.cast(array, f.type)
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=out)

    return transform
