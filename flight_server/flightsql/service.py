"""The Flight SQL service: Flight SQL commands, tickets and actions, over the engine.

The Flight server routes every Any-wrapped Flight SQL message here (see
`flight_server.server.CommandService`); each handler decodes the message, calls
the engine for the calling token (same roles, table allow-lists, max_rows, timeouts
and SQL checks as plain Flight) and answers in the spec's shapes.

Tickets are the server's own (short-lived, bound to the token) wrapped for Flight SQL:

    Any{TicketStatementQuery{statement_handle: b"adt1.q9Jf3x0cV7mYb2e1k8WfZy5tHnE"}}

Supported: CommandStatementQuery, prepared statements (CreatePreparedStatement /
ClosePreparedStatement, CommandPreparedStatementQuery with parameters bound by DoPut),
CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, CommandGetTableTypes,
CommandGetSqlInfo, CommandGetPrimaryKeys, CommandGetXdbcTypeInfo, the foreign-key
commands (CommandGetImportedKeys / ExportedKeys / CrossReference: always empty, as no
table here has a foreign key), and for writers
CommandStatementUpdate, CommandPreparedStatementUpdate and CommandStatementIngest;
the CancelFlightInfo (and deprecated CancelQuery) actions. Anything else (Substrait,
transactions, sessions) answers UNIMPLEMENTED, saying what is missing. PollFlightInfo
cannot be offered: pyarrow's Python server has no hook for it, so Arrow's C++ default
answers UNIMPLEMENTED ("NYI").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
from google.protobuf import message

import agentdata
from agentdata import metrics
from agentdata.engine import Engine, ResultStream, StreamOptions
from agentdata.errors import (
    AgentdataError,
    Cancelled,
    Conflict,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from agentdata.ingest import IngestRequest, ingest
from agentdata.param_batches import ParameterBatch
from agentdata.sql_functions import allowed_scalars
from agentdata.sqlguard import Kind, quote_ident
from agentdata.tokens import Principal, Role
from flight_server.errors import guard_stream
from flight_server.flightsql import catalog, sqlinfo, xdbc
from flight_server.flightsql import schemas as S
from flight_server.flightsql.disconnect import DisconnectWatcher
from flight_server.flightsql.messages import is_flight_sql, name_of, pack, unpack, unpack_as
from flight_server.flightsql.params import read_parameter_batch
from flight_server.flightsql.prepared import ParamSet, PreparedStatement, PreparedStatements
from flight_server.flightsql.proto import FlightActions_pb2 as actions_pb
from flight_server.flightsql.proto import FlightSql_pb2 as pb
from flight_server.server import open_flight_stream, to_data_stream
from flight_server.started import StartedQueries, StartedQuery
from flight_server.tickets import TicketEntry, TicketStore

log = logging.getLogger("agentdata.flightsql")

PROTOCOL = "flightsql"

#: Largest record batch sent in one message (half of ADBC's default 16 MiB limit: a
#: batch's IPC message is a little larger than the batch). The engine slices to it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

ACTIONS = [
    (
        "CreatePreparedStatement",
        "Flight SQL: prepare a statement (ActionCreatePreparedStatementRequest).",
    ),
    ("ClosePreparedStatement", "Flight SQL: close a prepared statement."),
    ("CancelFlightInfo", "Cancel the query behind a FlightInfo (Flight SQL or plain tickets)."),
    ("CancelQuery", "Flight SQL (deprecated): cancel the query behind a FlightInfo."),
    ("CloseSession", "Accepted for clients that close a session; this server keeps none."),
]

#: Flight SQL actions we recognise but do not offer, with the reason given to clients.
UNSUPPORTED_ACTIONS = {
    "BeginTransaction": "Flight SQL transactions are not supported: every statement commits on its own",
    "EndTransaction": "Flight SQL transactions are not supported: every statement commits on its own",
    "BeginSavepoint": "Flight SQL savepoints are not supported",
    "EndSavepoint": "Flight SQL savepoints are not supported",
    "CreatePreparedSubstraitPlan": "Substrait plans are not supported: send SQL",
}

#: Foreign keys: tables here have none (loads and syncs create primary keys and NOT NULL
#: only), so these answer an empty result in the spec's schema; tools that draw
#: relationships (SQLAlchemy reflection, JDBC tools) call them.
_FOREIGN_KEY_COMMANDS = (
    pb.CommandGetImportedKeys,
    pb.CommandGetExportedKeys,
    pb.CommandGetCrossReference,
)

_METADATA_COMMANDS = (
    pb.CommandGetCatalogs,
    pb.CommandGetDbSchemas,
    pb.CommandGetTables,
    pb.CommandGetTableTypes,
    pb.CommandGetSqlInfo,
    pb.CommandGetPrimaryKeys,
    pb.CommandGetXdbcTypeInfo,
    *_FOREIGN_KEY_COMMANDS,
)

#: CancelFlightInfo's statuses as the deprecated CancelQuery action reports them.
_CANCEL_RESULT = {
    actions_pb.CANCEL_STATUS_CANCELLED: pb.ActionCancelQueryResult.CANCEL_RESULT_CANCELLED,
    actions_pb.CANCEL_STATUS_NOT_CANCELLABLE: pb.ActionCancelQueryResult.CANCEL_RESULT_NOT_CANCELLABLE,
}

# The identity of the server's own, fixed lookups (SQL keywords, function names): they
# read DuckDB's catalog functions, which agents' tokens may not call.
_SERVER_READER = Principal(token_id="agentdata-flightsql", name="flightsql", role=Role.ADMIN)


class FlightSqlService:
    """Flight SQL on the Flight server's port; built from the engine alone."""

    def __init__(
        self, engine: Engine, *, prepared_ttl_s: float = 1800.0, started_ttl_s: float = 60.0
    ) -> None:
        self.engine = engine
        # A store of its own until the Flight server hands over its store
        # (use_tickets), so that both protocols share one.
        self.tickets = TicketStore(ttl_s=300.0)
        self.prepared = PreparedStatements(idle_ttl_s=prepared_ttl_s)
        self.watcher = DisconnectWatcher()
        self.started = StartedQueries(started_ttl_s, name="agentdata-flightsql")
        # Tickets of queries cancelled before (or while) they ran: DoGet refuses them.
        self._spent: dict[bytes, tuple[float, AgentdataError]] = {}
        self._spent_lock = threading.Lock()
        self._catalog: str | None = None
        self._sql_lists: tuple[list[str], dict[int, list[str]]] | None = None

    # -- the CommandService protocol ------------------------------------------------
    def use_tickets(self, tickets: TicketStore) -> None:
        self.tickets = tickets

    def close(self) -> None:
        """Release started queries and end the background threads (the server stopped)."""
        self.started.close()
        self.watcher.close()

    def handles_command(self, command: bytes) -> bool:
        return is_flight_sql(command)

    def handles_ticket(self, ticket: bytes) -> bool:
        return is_flight_sql(ticket)

    def handles_action(self, action_type: str) -> bool:
        return action_type in {name for name, _ in ACTIONS} or action_type in UNSUPPORTED_ACTIONS

    def action_types(self) -> list[tuple[str, str]]:
        return list(ACTIONS)

    def get_flight_info(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo:
        cmd = unpack(descriptor.command)
        if isinstance(cmd, pb.CommandStatementQuery):
            _no_transaction(cmd)
            stmt = self.engine.check(principal, cmd.query)
            if stmt.kind is Kind.WRITE:
                return self._write_now(principal, stmt.sql, None, descriptor)
            schema, entry = self._start(context, principal, stmt.sql, None)
        elif isinstance(cmd, pb.CommandPreparedStatementQuery):
            ps = self.prepared.get(principal, cmd.prepared_statement_handle)
            if ps.kind is Kind.WRITE:
                self._require_values(ps, ps.bound)
                return self._write_now(principal, ps.sql, ps.bound, descriptor)
            schema, entry = self._start(context, principal, ps.sql, _single(ps))
        elif isinstance(cmd, _METADATA_COMMANDS):
            schema = _metadata_schema(cmd)
            entry = self.tickets.issue(principal, "", kind="metadata", command=descriptor.command)
        else:
            raise _unsupported(cmd)
        ticket = pack(pb.TicketStatementQuery(statement_handle=entry.ticket))
        return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(ticket, [])], -1, -1)

    def get_schema(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.SchemaResult:
        cmd = unpack(descriptor.command)
        if isinstance(cmd, pb.CommandStatementQuery):
            _no_transaction(cmd)
            return fl.SchemaResult(self.engine.schema_of(principal, cmd.query)[1])
        if isinstance(cmd, pb.CommandPreparedStatementQuery):
            ps = self.prepared.get(principal, cmd.prepared_statement_handle)
            if ps.kind is Kind.WRITE or ps.bound is None:
                return fl.SchemaResult(ps.dataset_schema)
            return fl.SchemaResult(self.engine.schema_of(principal, ps.sql, _single(ps))[1])
        if isinstance(cmd, _METADATA_COMMANDS):
            return fl.SchemaResult(_metadata_schema(cmd))
        raise _unsupported(cmd)

    def do_get(
        self, context: fl.ServerCallContext, principal: Principal, ticket: bytes
    ) -> fl.FlightDataStream:
        handle = unpack_as(ticket, pb.TicketStatementQuery).statement_handle
        entry = self.tickets.redeem(principal, handle)
        kind = entry.extra.get("kind")
        if kind == "metadata":
            return fl.RecordBatchStream(self._metadata(principal, unpack(entry.extra["command"])))
        if kind == "written":
            return fl.RecordBatchStream(entry.extra["result"])
        self._refuse_spent(handle)

        def cancel() -> bool:
            return self.engine.cancel(principal, entry.query_id)

        started = self.started.take(handle)
        if started is not None:
            stream = started.stream
            try:
                self.engine.unpark(principal, stream)
            except BaseException:
                stream.close()
                raise
            started.options.is_cancelled = context.is_cancelled
        else:  # never started here, or left unfetched too long: run it now
            options = StreamOptions(
                query_id=entry.query_id,
                params=entry.extra.get("params"),
                max_batch_bytes=MAX_MESSAGE_BYTES,
            )
            with self.watcher.watching(context, cancel):
                stream = open_flight_stream(
                    self.engine, context, principal, entry.sql, options, protocol=PROTOCOL
                )
        return to_data_stream(stream, guard_stream(self._watched(context, stream, cancel)))

    def do_put(
        self,
        context: fl.ServerCallContext,
        principal: Principal,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        cmd = unpack(descriptor.command)
        engine = self.engine
        reply: message.Message
        if isinstance(cmd, pb.CommandStatementUpdate):
            _no_transaction(cmd)
            stmt = engine.check(principal, cmd.query)
            if stmt.kind is not Kind.WRITE:
                raise InvalidArgument(
                    "CommandStatementUpdate runs DDL/DML; send queries as CommandStatementQuery"
                )
            reply = pb.DoPutUpdateResult(record_count=engine.execute_write(principal, stmt))
        elif isinstance(cmd, pb.CommandPreparedStatementQuery):
            ps = self.prepared.get(principal, cmd.prepared_statement_handle)
            ps.bound = read_parameter_batch(reader.to_reader(), ps.parameter_names)
            reply = pb.DoPutPreparedStatementResult(prepared_statement_handle=ps.handle)
        elif isinstance(cmd, pb.CommandPreparedStatementUpdate):
            ps = self.prepared.get(principal, cmd.prepared_statement_handle)
            if ps.kind is not Kind.WRITE:
                raise InvalidArgument(
                    "this prepared statement is a query: execute it with "
                    "CommandPreparedStatementQuery"
                )
            # The whole batch at once (executemany): one set-based statement where it can be.
            values = read_parameter_batch(reader.to_reader(), ps.parameter_names) or ps.bound
            self._require_values(ps, values)
            rows = engine.execute_write(principal, ps.sql, param_sets=values)
            reply = pb.DoPutUpdateResult(record_count=rows)
        elif isinstance(cmd, pb.CommandStatementIngest):
            reply = pb.DoPutUpdateResult(record_count=self._ingest(principal, cmd, reader))
        else:
            raise _unsupported(cmd)
        writer.write(pa.py_buffer(reply.SerializeToString()))

    def do_action(
        self, context: fl.ServerCallContext, principal: Principal, action: fl.Action
    ) -> Iterator[bytes]:
        body = action.body.to_pybytes() if action.body is not None else b""
        if action.type in UNSUPPORTED_ACTIONS:
            raise Unimplemented(UNSUPPORTED_ACTIONS[action.type])
        if action.type == "CreatePreparedStatement":
            request = unpack_as(body, pb.ActionCreatePreparedStatementRequest)
            return iter([self._prepare(principal, request)])
        if action.type == "ClosePreparedStatement":
            request = unpack_as(body, pb.ActionClosePreparedStatementRequest)
            self.prepared.close(principal, request.prepared_statement_handle)
            return iter([])
        if action.type == "CancelFlightInfo":
            request = actions_pb.CancelFlightInfoRequest.FromString(body)
            status = self._cancel(principal, fl.FlightInfo.deserialize(request.info))
            return iter([actions_pb.CancelFlightInfoResult(status=status).SerializeToString()])
        if action.type == "CancelQuery":
            request = unpack_as(body, pb.ActionCancelQueryRequest)
            status = self._cancel(principal, fl.FlightInfo.deserialize(request.info))
            return iter([pack(pb.ActionCancelQueryResult(result=_CANCEL_RESULT[status]))])
        if action.type == "CloseSession":
            # Sessions are not kept (every call carries its token), so there is
            # nothing to close; ADBC sends this whenever a connection closes.
            closed = actions_pb.CloseSessionResult(status=actions_pb.CloseSessionResult.CLOSED)
            return iter([closed.SerializeToString()])
        raise Unimplemented(f"unknown Flight SQL action {action.type!r}; see ListActions")

    # -- statements ---------------------------------------------------------------------
    def _prepare(self, principal: Principal, request: Any) -> bytes:
        _no_transaction(request)
        engine = self.engine
        names = engine.parameter_names(request.query)
        # Bound with NULLs, the statement's result schema is a best guess (the spec
        # allows that); the schema sent with each execution uses the real values.
        # Each placeholder typed as DuckDB infers it from its use (`id = ?`: the
        # column's type); the null type where the statement does not say (`SELECT ?`).
        stmt, schema, parameter_schema = engine.prepare(principal, request.query)
        ps = self.prepared.create(
            principal,
            sql=stmt.sql,
            kind=stmt.kind,
            parameter_names=names,
            dataset_schema=schema,
            parameter_schema=parameter_schema,
        )
        return pack(
            pb.ActionCreatePreparedStatementResult(
                prepared_statement_handle=ps.handle,
                dataset_schema=schema.serialize().to_pybytes(),
                parameter_schema=parameter_schema.serialize().to_pybytes(),
            )
        )

    def _start(
        self,
        context: fl.ServerCallContext,
        principal: Principal,
        sql: str,
        params: ParamSet | None,
    ) -> tuple[pa.Schema, TicketEntry]:
        """Start a query for the DoGet of the ticket returned (see `started`)."""
        entry = self.tickets.issue(principal, sql, kind="statement", params=params)
        options = StreamOptions(
            query_id=entry.query_id, params=params, max_batch_bytes=MAX_MESSAGE_BYTES
        )

        def cancel() -> bool:
            return self.engine.cancel(principal, entry.query_id)

        with self.watcher.watching(context, cancel):
            stream = open_flight_stream(
                self.engine, context, principal, sql, options, protocol=PROTOCOL
            )
        # This call's context dies with it; the DoGet that fetches the stream brings its own.
        options.is_cancelled = None
        # Parked until fetched: a client that executes and never fetches (a DB-API cursor
        # that runs another statement) must not keep its token's admission slot.
        self.engine.park(stream)
        self.started.put(entry.ticket, StartedQuery(stream, options, principal.token_id))
        return stream.schema, entry

    def _write_now(
        self,
        principal: Principal,
        sql: str,
        param_sets: ParameterBatch | None,
        descriptor: fl.FlightDescriptor,
    ) -> fl.FlightInfo:
        """Run DDL/DML sent as a query (DB-API `execute` does) when it is executed, not
        when (or whether) its result is fetched; the ticket returns that result: the
        rows DML with RETURNING returned (their number is the FlightInfo's
        total_records, which ADBC reports as rows affected), else one row `{rows}`."""
        outcome = self.engine.run_write(principal, sql, param_sets=param_sets)
        result = outcome.result()
        entry = self.tickets.issue(principal, sql, kind="written", result=result)
        ticket = pack(pb.TicketStatementQuery(statement_handle=entry.ticket))
        known = outcome.returned is not None
        return fl.FlightInfo(
            result.schema,
            descriptor,
            [fl.FlightEndpoint(ticket, [])],
            result.num_rows if known else -1,
            result.nbytes if known else -1,
        )

    @staticmethod
    def _require_values(ps: PreparedStatement, values: ParameterBatch | None) -> None:
        if ps.parameter_names and not values:
            raise InvalidArgument(
                f"the statement has {len(ps.parameter_names)} parameter(s): bind values first"
            )

    def _watched(
        self, context: fl.ServerCallContext, stream: ResultStream, cancel: Callable[[], bool]
    ) -> Iterator[pa.RecordBatch]:
        """The stream's batches, each fetch watched for a vanished client."""
        batches = iter(stream)
        try:
            while True:
                with self.watcher.watching(context, cancel):
                    batch = next(batches, None)
                if batch is None:
                    return
                yield batch
        finally:
            stream.close()

    # -- ingest -------------------------------------------------------------------------
    def _ingest(
        self,
        principal: Principal,
        cmd: pb.CommandStatementIngest,
        reader: fl.MetadataRecordBatchReader,
    ) -> int:
        """CommandStatementIngest (adbc_ingest): the staged, atomic load of `agentdata.ingest`."""
        _no_transaction(cmd)
        principal.require_writer()  # before a single batch is read
        if cmd.temporary:
            raise Unimplemented("temporary tables are not supported: ingest into a schema")
        here = self._catalog_name()
        if cmd.HasField("catalog") and cmd.catalog not in ("", here):
            raise NotFound(f"no catalog {cmd.catalog!r} (this server's catalog is {here!r})")
        if not cmd.table:
            raise InvalidArgument("CommandStatementIngest needs a table name")
        schema = cmd.schema if cmd.HasField("schema") and cmd.schema else "main"
        mode = _ingest_mode(
            cmd.table_definition_options, self._exists(principal, schema, cmd.table)
        )
        target = f"{quote_ident(schema)}.{quote_ident(cmd.table)}"
        result = ingest(
            self.engine, principal, IngestRequest.parse(target, mode), reader.to_reader()
        )
        metrics.ROWS_INGESTED.inc(result.rows)
        return result.rows

    def _exists(self, principal: Principal, schema: str, table: str) -> bool:
        try:
            self.engine.table_info(principal, schema, table)
        except NotFound:
            return False
        return True

    # -- cancel -------------------------------------------------------------------------
    def _cancel(self, principal: Principal, info: fl.FlightInfo) -> actions_pb.CancelStatus:
        """Cancel the queries behind a FlightInfo's tickets (ours, Flight SQL or plain)."""
        if not info.endpoints:
            return actions_pb.CANCEL_STATUS_NOT_CANCELLABLE
        for endpoint in info.endpoints:
            raw = endpoint.ticket.ticket
            handle = (
                unpack_as(raw, pb.TicketStatementQuery).statement_handle
                if is_flight_sql(raw)
                else raw
            )
            entry = self.tickets.redeem(principal, handle)  # ownership, and NOT_FOUND if gone
            self._spend(handle, Cancelled("query cancelled by request"))
            self.engine.cancel(principal, entry.query_id)
            self.started.discard(handle)
        return actions_pb.CANCEL_STATUS_CANCELLED

    def _spend(self, handle: bytes, reason: AgentdataError) -> None:
        now = time.monotonic()
        with self._spent_lock:
            for key in [k for k, (t, _) in self._spent.items() if t < now]:
                del self._spent[key]
            self._spent[handle] = (now + self.tickets.ttl_s, reason)

    def _refuse_spent(self, handle: bytes) -> None:
        with self._spent_lock:
            spent = self._spent.get(handle)
        if spent is not None:
            raise spent[1]

    # -- metadata -----------------------------------------------------------------------
    def _metadata(self, principal: Principal, cmd: message.Message) -> pa.Table:
        engine = self.engine
        here = self._catalog_name()
        if isinstance(cmd, pb.CommandGetCatalogs):
            return catalog.catalogs(here)
        if isinstance(cmd, pb.CommandGetDbSchemas):
            return catalog.db_schemas(engine, principal, here, cmd)
        if isinstance(cmd, pb.CommandGetTables):
            return catalog.tables(engine, principal, here, cmd)
        if isinstance(cmd, pb.CommandGetTableTypes):
            return catalog.table_types()
        if isinstance(cmd, pb.CommandGetPrimaryKeys):
            return catalog.primary_keys(engine, principal, here, cmd)
        if isinstance(cmd, pb.CommandGetXdbcTypeInfo):
            return xdbc.type_info(cmd.data_type if cmd.HasField("data_type") else None)
        if isinstance(cmd, _FOREIGN_KEY_COMMANDS):
            return S.FOREIGN_KEYS.empty_table()
        if isinstance(cmd, pb.CommandGetSqlInfo):
            keywords, functions = self._sql_word_lists()
            info = sqlinfo.sql_info(
                principal,
                server_version=agentdata.__version__,
                arrow_version=pa.__version__,
                statement_timeout_ms=int(self.prepared.idle_ttl_s * 1000),
                keywords=keywords,
                functions=functions,
            )
            return pa.Table.from_batches([sqlinfo.sql_info_batch(info, cmd.info)])
        raise _unsupported(cmd)

    def _catalog_name(self) -> str:
        if self._catalog is None:
            self._catalog = self.engine.catalog_name()
        return self._catalog

    def _sql_word_lists(self) -> tuple[list[str], dict[int, list[str]]]:
        """SQL keywords and function names by category, read from DuckDB once."""
        if self._sql_lists is None:
            engine = self.engine
            keywords = engine.query_table(
                _SERVER_READER,
                "SELECT DISTINCT upper(keyword_name) AS k FROM duckdb_keywords() ORDER BY 1",
            ).column(0)
            rows = engine.query_table(
                _SERVER_READER,
                "SELECT DISTINCT c, function_name FROM"
                " (SELECT unnest(categories) AS c, function_name FROM duckdb_functions()"
                "  WHERE function_type = 'scalar' AND NOT starts_with(function_name, '__'))"
                " ORDER BY 1, 2",
            ).to_pylist()
            wanted = {
                "numeric": pb.SQL_NUMERIC_FUNCTIONS,
                "string": pb.SQL_STRING_FUNCTIONS,
                "date": pb.SQL_DATETIME_FUNCTIONS,
                "timestamp": pb.SQL_DATETIME_FUNCTIONS,
            }
            functions: dict[int, list[str]] = {code: [] for code in wanted.values()}
            for row in rows:
                code = wanted.get(row["c"])
                if row["function_name"] not in allowed_scalars():
                    continue  # advertise only what agents may call
                if code is not None and row["function_name"] not in functions[code]:
                    functions[code].append(row["function_name"])
            self._sql_lists = ([str(k) for k in keywords.to_pylist()], functions)
        return self._sql_lists


# -- helpers ----------------------------------------------------------------------------
def _no_transaction(cmd: Any) -> None:
    if cmd.HasField("transaction_id"):
        raise Unimplemented(UNSUPPORTED_ACTIONS["BeginTransaction"])


def _unsupported(cmd: message.Message) -> Unimplemented:
    return Unimplemented(f"Flight SQL {name_of(cmd)} is not supported by this server")


def _single(ps: PreparedStatement) -> ParamSet | None:
    """The one parameter set a query runs with (None when it has no placeholders)."""
    if not ps.parameter_names:
        return None
    if not ps.bound:
        raise InvalidArgument(
            f"the statement has {len(ps.parameter_names)} parameter(s): bind values first"
        )
    if len(ps.bound) > 1:
        raise InvalidArgument(
            f"a query runs with one set of parameters ({len(ps.bound)} were bound); "
            "bind several sets to an update statement instead"
        )
    return ps.bound.sets()[0]


def _metadata_schema(cmd: message.Message) -> pa.Schema:
    if isinstance(cmd, pb.CommandGetCatalogs):
        return S.CATALOGS
    if isinstance(cmd, pb.CommandGetDbSchemas):
        return S.DB_SCHEMAS
    if isinstance(cmd, pb.CommandGetTables):
        return S.TABLES_WITH_SCHEMA if cmd.include_schema else S.TABLES
    if isinstance(cmd, pb.CommandGetTableTypes):
        return S.TABLE_TYPES
    if isinstance(cmd, pb.CommandGetPrimaryKeys):
        return S.PRIMARY_KEYS
    if isinstance(cmd, pb.CommandGetXdbcTypeInfo):
        return S.XDBC_TYPE_INFO
    if isinstance(cmd, pb.CommandGetSqlInfo):
        return S.SQL_INFO
    if isinstance(cmd, _FOREIGN_KEY_COMMANDS):
        return S.FOREIGN_KEYS
    raise _unsupported(cmd)


def _ingest_mode(options: Any, exists: bool) -> str:
    """The ingest mode for ADBC's table-definition options (create/append/replace/...)."""
    opts = pb.CommandStatementIngest.TableDefinitionOptions
    if exists:
        if options.if_exists == opts.TABLE_EXISTS_OPTION_APPEND:
            return "append"
        if options.if_exists == opts.TABLE_EXISTS_OPTION_REPLACE:
            return "replace"
        if options.if_exists == opts.TABLE_EXISTS_OPTION_FAIL:
            raise Conflict("the target table already exists (ingest mode 'create')")
        raise InvalidArgument("CommandStatementIngest needs table_definition_options.if_exists")
    if options.if_not_exist == opts.TABLE_NOT_EXIST_OPTION_CREATE:
        return "append"  # ingest creates a missing table from the stream's schema
    if options.if_not_exist == opts.TABLE_NOT_EXIST_OPTION_FAIL:
        raise NotFound("the target table does not exist (ingest mode 'append')")
    raise InvalidArgument("CommandStatementIngest needs table_definition_options.if_not_exist")
