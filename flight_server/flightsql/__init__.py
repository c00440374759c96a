"""Flight SQL on the same port as plain Flight.

Until the full service lands, every Flight SQL message answers UNIMPLEMENTED with a
clear message (never a misleading SQL parse error).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.flight as fl

from agentdata.core import Core
from agentdata.errors import Unimplemented
from agentdata.tokens import Principal

# A packed google.protobuf.Any starts with field 1 (type_url): tag 0x0a, a length, then the URL.
_FLIGHT_SQL_URL = b"type.googleapis.com/arrow.flight.protocol.sql."


def _is_flight_sql(data: bytes) -> bool:
    return data[:1] == b"\x0a" and _FLIGHT_SQL_URL in data[:80]


class FlightSqlService:
    """Routes Flight SQL messages; see the module docstring."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def handles_command(self, command: bytes) -> bool:
        return _is_flight_sql(command)

    def handles_ticket(self, ticket: bytes) -> bool:
        return _is_flight_sql(ticket)

    def handles_action(self, action_type: str) -> bool:
        return action_type in {
            "CreatePreparedStatement",
            "ClosePreparedStatement",
            "CancelFlightInfo",
        }

    def action_types(self) -> list[tuple[str, str]]:
        return []

    def _unimplemented(self) -> Unimplemented:
        return Unimplemented("Flight SQL is not implemented by this server yet")

    def get_flight_info(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.FlightInfo:
        raise self._unimplemented()

    def get_schema(
        self, context: fl.ServerCallContext, principal: Principal, descriptor: fl.FlightDescriptor
    ) -> fl.SchemaResult:
        raise self._unimplemented()

    def do_get(
        self, context: fl.ServerCallContext, principal: Principal, ticket: bytes
    ) -> fl.FlightDataStream:
        raise self._unimplemented()

    def do_put(
        self,
        context: fl.ServerCallContext,
        principal: Principal,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        raise self._unimplemented()

    def do_action(
        self, context: fl.ServerCallContext, principal: Principal, action: fl.Action
    ) -> Iterator[bytes]:
        raise self._unimplemented()
