"""The Flight server: thin RPC handlers over the engine.

The server holds only its collaborators: the query engine and a token verifier (plus
the tickets and the Flight SQL service); `build_flight_server` makes one from them and
the settings' host, port and TLS files, so tests can hand it fakes.

Every handler follows one recipe: principal from the auth middleware -> decode the
request -> call the engine -> answer or stream. Errors cross once, through
`flight_errors()` (see flight_server.errors).

Descriptors and tickets (plain Flight; Flight SQL messages are routed to the
Flight SQL service when one is installed):
    path     ["demo", "orders"]                    a table or view
    command  b"SELECT * FROM demo.orders LIMIT 5"  SQL text, UTF-8
    command  b'{"sql": "...", "truncate": true}'   SQL plus options, JSON
    ticket   b"adt1.<random>"                      see flight_server.tickets
DoPut descriptors:
    path     ["sales", "daily"]                     append (table created if missing)
    command  b'{"table": "sales.daily", "mode": "upsert", "key": ["id"]}'
    command  b'{"table": "sales.daily", "mode": "replace", "primary_key": ["id"],
               "not_null": ["day"], "latest_by": "updated_at", "on_duplicate_key": "fold"}'
  (rows repeating a key are folded to the last one, or the greatest `latest_by`;
  `on_duplicate_key: "error"` refuses them; see agentdata.ingest for every option)
Actions: `cancel` (body: a ticket or query id), `health`, `execute` (body: one
DDL/DML statement, writers only). Results and PutResult metadata are JSON; `execute`
of DML with RETURNING adds a second result, the returned rows as an Arrow IPC stream:

    [b'{"rows": 3, "returning": ["id"]}', <IPC stream: schema (id int32), 3 rows>]

A command (DoGet) of DML with RETURNING streams the returned rows; plain DML streams
one row `{rows}`.
DoExchange answers `[unimplemented]`. PollFlightInfo has no Python hook in pyarrow's
server: the auth middleware sees it as an unknown method and answers `[unimplemented]`
(flight_server.auth).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.flight as fl

from agentdata import audit, metrics
from agentdata.engine import Engine, ResultStream, StreamOptions, TableInfo
from agentdata.errors import InvalidArgument, Unimplemented
from agentdata.ingest import IngestRequest, ingest
from agentdata.settings import Settings
from agentdata.sqlguard import quote_ident
from agentdata.tokens import Principal, TokenVerifier
from flight_server.auth import MIDDLEWARE_KEY, AuthMiddlewareFactory, NoOpAuthHandler, principal_of
from flight_server.errors import flight_errors, guard_stream
from flight_server.started import StartedQueries, StartedQuery
from flight_server.tickets import TicketEntry, TicketStore

log = logging.getLogger("agentdata.flight")

#: Every key a DoPut JSON command may have (agentdata.ingest.IngestRequest).
PUT_OPTIONS = frozenset(
    {
        "table",
        "mode",
        "key",
        "evolve",
        "snapshot",
        "end_marker",
        "latest_by",
        "on_duplicate_key",
        "primary_key",
        "not_null",
        "descriptions",
    }
)

ACTIONS = [
    ("cancel", "Cancel a running query of yours. Body: its ticket (or query id)."),
    ("health", "Server and database health, as JSON."),
    (
        "execute",
        'Run one DDL/DML statement (writers). Body: SQL. Result: {"rows": n}; with '
        'RETURNING, {"rows": n, "returning": [columns]} then the returned rows as an Arrow '
        "IPC stream.",
    ),
]


class CommandService(Protocol):
    """A protocol layered on Flight commands (Flight SQL), routed by the server."""

    def use_tickets(self, tickets: TicketStore) -> None:
        """Issue and redeem tickets in the server's store (one store for both protocols)."""
        ...

    def close(self) -> None:
        """Release what it holds once the server has stopped taking calls."""
        ...

    def handles_command(self, command: bytes) -> bool: ...
    def handles_ticket(self, ticket: bytes) -> bool: ...
    def handles_action(self, action_type: str) -> bool: ...
    def action_types(self) -> list[tuple[str, str]]: ...
    def get_flight_info(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo: ...
    def get_schema(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.SchemaResult: ...
    def do_get(
        self, context: fl.ServerCallContext, principal: Principal, ticket: bytes
    ) -> fl.FlightDataStream: ...
    def do_put(
        self,
        context: fl.ServerCallContext,
        principal: Principal,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None: ...
    def do_action(
        self, context: fl.ServerCallContext, principal: Principal, action: fl.Action
    ) -> Iterator[bytes]: ...


class AgentdataFlightServer(fl.FlightServerBase):
    """Arrow Flight over the engine (plus Flight SQL when `sql_service` is given)."""

    def __init__(
        self,
        engine: Engine,
        tokens: TokenVerifier,
        location: str,
        *,
        tickets: TicketStore,
        started_ttl_s: float = 60.0,
        sql_service: CommandService | None = None,
        tls_certificates: list[tuple[bytes, bytes]] | None = None,
        verify_client: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        super().__init__(
            location,
            auth_handler=NoOpAuthHandler(),
            middleware={MIDDLEWARE_KEY: AuthMiddlewareFactory(tokens)},
            tls_certificates=tls_certificates,
            verify_client=verify_client,
            root_certificates=root_certificates,
        )
        self.engine = engine
        self.tickets = tickets
        #: Reads started by GetFlightInfo, handed to the DoGet of their ticket.
        self.started = StartedQueries(started_ttl_s, name="agentdata-flight")
        self.sql_service = sql_service
        if sql_service is not None:
            sql_service.use_tickets(tickets)

    # -- discovery -------------------------------------------------------------
    def list_flights(
        self, context: fl.ServerCallContext, criteria: bytes
    ) -> Iterator[fl.FlightInfo]:
        with flight_errors():
            principal = principal_of(context)
            infos = [
                self._table_flight_info(principal, t) for t in self.engine.list_tables(principal)
            ]
        yield from infos

    def get_flight_info(
        self, context: fl.ServerCallContext, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo:
        with flight_errors():
            principal = principal_of(context)
            if descriptor.descriptor_type == fl.DescriptorType.PATH:
                schema, table = _path(descriptor)
                return self._table_flight_info(
                    principal, self.engine.table_info(principal, schema, table)
                )
            if self.sql_service is not None and self.sql_service.handles_command(
                descriptor.command
            ):
                with audit.channel("flightsql"):
                    return self.sql_service.get_flight_info(context, principal, descriptor)
            sql, truncate = _command(descriptor.command)
            if self.engine.starts_at_once(principal, sql):
                entry = self.tickets.issue(principal, sql, truncate=truncate)
                try:
                    schema = self._start(context, principal, entry)
                except BaseException:
                    self.tickets.discard(entry.ticket)  # a refused call leaves no ticket
                    raise
            else:  # only bound here: the DoGet runs it
                _, schema = self.engine.schema_of(principal, sql)
                entry = self.tickets.issue(principal, sql, truncate=truncate)
            return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(entry.ticket, [])], -1, -1)

    def _start(
        self, context: fl.ServerCallContext, principal: Principal, entry: TicketEntry
    ) -> pa.Schema:
        """Open the read of `entry` for the DoGet of its ticket (flight_server.started):
        it does no work before its first row, so one check and one execution serve both
        calls."""
        options = StreamOptions(query_id=entry.query_id, truncate=entry.truncate)
        stream = open_flight_stream(
            self.engine, context, principal, entry.sql, options, protocol="flight"
        )
        # This call's context dies with it; the DoGet that fetches the stream brings its own.
        options.is_cancelled = None
        self.engine.park(stream)
        self.started.put(entry.ticket, StartedQuery(stream, options, principal.token_id))
        return stream.schema

    def get_schema(
        self, context: fl.ServerCallContext, descriptor: fl.FlightDescriptor
    ) -> fl.SchemaResult:
        with flight_errors():
            principal = principal_of(context)
            if descriptor.descriptor_type == fl.DescriptorType.PATH:
                schema, table = _path(descriptor)
                return fl.SchemaResult(
                    self.engine.table_info(principal, schema, table).arrow_schema
                )
            if self.sql_service is not None and self.sql_service.handles_command(
                descriptor.command
            ):
                with audit.channel("flightsql"):
                    return self.sql_service.get_schema(context, principal, descriptor)
            sql, _ = _command(descriptor.command)
            return fl.SchemaResult(self.engine.schema_of(principal, sql)[1])

    def _table_flight_info(self, principal: Principal, table: TableInfo) -> fl.FlightInfo:
        sql = f"SELECT * FROM {quote_ident(table.schema)}.{quote_ident(table.name)}"
        entry = self.tickets.issue(principal, sql)
        meta = {
            "kind": table.kind,
            "location": table.location,  # "duckdb", or "snowflake" for a remote table
            "rows": table.rows,
            "last_modified": _iso(table.last_modified),
            "last_synced": _iso(table.last_synced),
            "source_snapshot": table.source_snapshot,
        }
        return fl.FlightInfo(
            table.arrow_schema,
            fl.FlightDescriptor.for_path(table.schema, table.name),
            [fl.FlightEndpoint(entry.ticket, [])],
            table.rows if table.rows is not None else -1,
            -1,
            app_metadata=json.dumps(meta).encode(),
        )

    # -- data ------------------------------------------------------------------
    def do_get(self, context: fl.ServerCallContext, ticket: fl.Ticket) -> fl.FlightDataStream:
        with flight_errors():
            principal = principal_of(context)
            if self.sql_service is not None and self.sql_service.handles_ticket(ticket.ticket):
                with audit.channel("flightsql"):
                    return self.sql_service.do_get(context, principal, ticket.ticket)
            entry = self.tickets.redeem(principal, ticket.ticket)
            started = self.started.take(entry.ticket)
            if started is not None:
                stream, options = started.stream, started.options
                try:
                    self.engine.unpark(principal, stream)
                except BaseException:
                    stream.close()
                    raise
                options.is_cancelled = context.is_cancelled
            else:  # not started by GetFlightInfo, or left unfetched too long: run it now
                options = StreamOptions(query_id=entry.query_id, truncate=entry.truncate)
                stream = open_flight_stream(
                    self.engine, context, principal, entry.sql, options, protocol="flight"
                )
            return to_data_stream(stream, _with_truncation_note(stream, options, principal))

    def do_put(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        with flight_errors():
            principal = principal_of(context)
            if (
                descriptor.descriptor_type == fl.DescriptorType.CMD
                and self.sql_service is not None
                and self.sql_service.handles_command(descriptor.command)
            ):
                with audit.channel("flightsql"):
                    self.sql_service.do_put(context, principal, descriptor, reader, writer)
                return
            principal.require_writer()
            request = _ingest_request(descriptor)
            stream, incomplete = _upload_stream(descriptor, reader)
            result = ingest(
                self.engine,
                principal,
                request,
                stream,
                is_cancelled=lambda: context.is_cancelled() or incomplete(),
            )
            metrics.ROWS_INGESTED.inc(result.rows)
            writer.write(pa.py_buffer(json.dumps(result.to_dict()).encode()))

    def do_exchange(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.MetadataRecordBatchWriter,
    ) -> None:
        """Not offered; answers UNIMPLEMENTED through the one error mapping (pyarrow's
        default would send a bare NotImplementedError)."""
        with flight_errors():
            raise Unimplemented("DoExchange is not supported: use DoGet and DoPut")

    # -- actions ---------------------------------------------------------------
    def list_actions(self, context: fl.ServerCallContext) -> list[tuple[str, str]]:
        extra = self.sql_service.action_types() if self.sql_service is not None else []
        return ACTIONS + extra

    def do_action(self, context: fl.ServerCallContext, action: fl.Action) -> Iterator[bytes]:
        with flight_errors():
            principal = principal_of(context)
            if self.sql_service is not None and self.sql_service.handles_action(action.type):
                with audit.channel("flightsql"):
                    results = list(self.sql_service.do_action(context, principal, action))
            else:
                results = self._plain_action(principal, action)
        yield from results

    def _plain_action(self, principal: Principal, action: fl.Action) -> list[bytes]:
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type == "health":
            return [json.dumps({"status": "ok", **self.engine.health()}).encode()]
        if action.type == "cancel":
            query_id = body.decode("utf-8", "replace").strip()
            if not query_id:
                raise InvalidArgument("cancel needs the query's ticket (or query id) as body")
            return [json.dumps({"cancelled": self.engine.cancel(principal, query_id)}).encode()]
        if action.type == "execute":
            outcome = self.engine.run_write(principal, _utf8(body))
            if outcome.returned is None:
                return [json.dumps({"rows": outcome.rows}).encode()]
            # RETURNING: the count, then the returned rows as one Arrow IPC stream.
            summary = {"rows": outcome.rows, "returning": outcome.returned.schema.names}
            return [json.dumps(summary).encode(), _ipc_stream(outcome.returned)]
        raise Unimplemented(f"unknown action {action.type!r}; see ListActions")

    # -- lifecycle ---------------------------------------------------------------
    def stop(self) -> None:
        """Cancel open streams, then stop accepting calls (waits for handlers to end)."""
        cancelled = self.engine.cancel_all("the server is shutting down")
        if cancelled:
            log.info("shutdown: cancelled %d running queries", cancelled)
        self.shutdown()
        self.started.close()
        if self.sql_service is not None:
            self.sql_service.close()


def open_flight_stream(
    engine: Engine,
    context: fl.ServerCallContext,
    principal: Principal,
    sql: str,
    options: StreamOptions,
    *,
    protocol: str,
) -> ResultStream:
    """Start a query for a Flight call: cancel on client disconnect, count metrics."""
    started = time.monotonic()
    metrics.ACTIVE_STREAMS.inc()

    def finished(rows: int, nbytes: int) -> None:
        metrics.ACTIVE_STREAMS.dec()
        metrics.ROWS_STREAMED.labels(protocol).inc(rows)
        metrics.BYTES_STREAMED.labels(protocol).inc(nbytes)
        metrics.QUERY_SECONDS.labels(protocol).observe(time.monotonic() - started)

    options.is_cancelled = context.is_cancelled
    options.on_finish = finished
    try:
        stream = engine.open_stream(principal, sql, options)
    except Exception:
        metrics.ACTIVE_STREAMS.dec()
        metrics.QUERIES.labels(protocol, "error").inc()
        raise
    metrics.QUERIES.labels(protocol, "ok").inc()
    return stream


def to_data_stream(stream: ResultStream, items: Iterator[Any] | None = None) -> fl.FlightDataStream:
    """The Flight stream for a result: GeneratorStream, so error codes survive mid-stream.

    GeneratorStream sends a bare RecordBatch without its dictionaries, which strict
    readers (Go, so ADBC) reject; for results with dictionary columns (DuckDB ENUMs)
    each batch goes out as a one-batch Table, which pyarrow sends through
    RecordBatchStream, dictionaries first. Both protocols stream through here.
    """
    batches = items if items is not None else guard_stream(iter(stream))
    if any(pa.types.is_dictionary(f.type) for f in stream.schema):
        batches = (
            pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b for b in batches
        )
    return fl.GeneratorStream(stream.schema, batches)


def _with_truncation_note(
    stream: ResultStream, options: StreamOptions, principal: Principal
) -> Iterator[Any]:
    """Stream batches; after a truncated result, one empty batch whose metadata says so."""
    yield from guard_stream(iter(stream))
    if options.truncated:
        note = {"truncated": True, "max_rows": principal.max_rows}
        yield (
            pa.RecordBatch.from_pylist([], schema=stream.schema),
            pa.py_buffer(json.dumps(note).encode()),
        )


def _ipc_stream(table: pa.Table) -> bytes:
    """`table` as the bytes of an Arrow IPC stream (schema, then its batches)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def _path(descriptor: fl.FlightDescriptor) -> tuple[str, str]:
    parts = [p.decode() if isinstance(p, bytes) else str(p) for p in descriptor.path]
    if len(parts) == 1 and "." in parts[0]:
        parts = parts[0].split(".", 1)
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f"path descriptor must be [schema, table] (got {parts})")
    return parts[0], parts[1]


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("command must be UTF-8 SQL text or JSON") from None


def _command(command: bytes) -> tuple[str, bool]:
    """SQL text, or JSON {"sql": ..., "truncate": bool}."""
    text = _utf8(command).strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"command looks like JSON but is not: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("sql"), str):
            raise InvalidArgument('JSON command needs {"sql": "..."}')
        return doc["sql"], bool(doc.get("truncate", False))
    return text, False


def _ingest_request(descriptor: fl.FlightDescriptor) -> IngestRequest:
    if descriptor.descriptor_type == fl.DescriptorType.PATH:
        schema, table = _path(descriptor)
        return IngestRequest.parse(f"{quote_ident(schema)}.{quote_ident(table)}")
    try:
        doc = json.loads(_utf8(descriptor.command))
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            f'DoPut command must be JSON {{"table", "mode", "key"}}: {e}'
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("table"), str):
        raise InvalidArgument('DoPut command needs {"table": "schema.table"}')
    unknown = set(doc) - PUT_OPTIONS
    if unknown:
        raise InvalidArgument(f"unknown DoPut option(s): {', '.join(sorted(unknown))}")
    return IngestRequest.parse(
        doc["table"],
        doc.get("mode", "append"),
        doc.get("key"),
        evolve=doc.get("evolve", False),
        snapshot=doc.get("snapshot"),
        latest_by=doc.get("latest_by"),
        on_duplicate_key=doc.get("on_duplicate_key"),
        primary_key=doc.get("primary_key"),
        not_null=doc.get("not_null"),
        descriptions=doc.get("descriptions"),
    )


def _upload_stream(
    descriptor: fl.FlightDescriptor, reader: fl.MetadataRecordBatchReader
) -> tuple[pa.RecordBatchReader, Callable[[], bool]]:
    """The upload's batches, and whether it stopped before its end (then nothing is written).

    With `{"end_marker": true}` in the command, the client ends its upload with an
    app_metadata message `{"end": <rows sent>}` (syncs do): an upload that stops without
    it, such as a worker that died or gave up on purpose, is refused. A cancelled call
    alone is not enough to tell: gRPC may show it to the server as a clean end of
    stream before the cancellation itself.
    """
    try:
        wants_marker = descriptor.descriptor_type == fl.DescriptorType.CMD and bool(
            json.loads(_utf8(descriptor.command)).get("end_marker")
        )
    except (ValueError, AttributeError):
        wants_marker = False
    if not wants_marker:
        return reader.to_reader(), lambda: False
    seen: dict[str, Any] = {"rows": 0, "end": None}

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                return
            if chunk.data is not None:
                seen["rows"] += chunk.data.num_rows
                yield chunk.data
            if chunk.app_metadata is not None:
                try:
                    seen["end"] = json.loads(chunk.app_metadata.to_pybytes()).get("end")
                except (ValueError, AttributeError):
                    raise InvalidArgument('upload metadata must be JSON {"end": rows}') from None

    stream = pa.RecordBatchReader.from_batches(reader.schema, batches())
    return stream, lambda: seen["end"] != seen["rows"]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def build_flight_server(
    engine: Engine,
    tokens: TokenVerifier,
    settings: Settings,
    *,
    sql_service: CommandService | None = None,
) -> AgentdataFlightServer:
    """Build the Flight server over `engine`, authenticating with `tokens`, listening
    where `settings` say (host, flight_port, TLS files; its port is bound on return)."""
    s = settings
    tls_certificates = None
    root_certificates = None
    scheme = "grpc+tcp"
    if s.tls_cert is not None:
        if s.tls_key is None:
            raise InvalidArgument("tls_cert needs tls_key")
        tls_certificates = [(Path(s.tls_cert).read_bytes(), Path(s.tls_key).read_bytes())]
        scheme = "grpc+tls"
    if s.tls_client_ca is not None:
        if tls_certificates is None:
            raise InvalidArgument("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        root_certificates = Path(s.tls_client_ca).read_bytes()
    return AgentdataFlightServer(
        engine,
        tokens,
        f"{scheme}://{s.host}:{s.flight_port}",
        tickets=TicketStore(s.ticket_ttl_s),
        started_ttl_s=s.started_query_ttl_s,
        sql_service=sql_service,
        tls_certificates=tls_certificates,
        verify_client=root_certificates is not None,
        root_certificates=root_certificates,
    )
