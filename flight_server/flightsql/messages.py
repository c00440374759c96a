"""Flight SQL messages on the wire: `google.protobuf.Any` wrapping the published messages.

Every Flight SQL command (a FlightDescriptor's `cmd`), ticket and action body is an
`Any` whose type URL names a message of `FlightSql.proto`, for example

    type_url: "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    value:    CommandStatementQuery{query: "SELECT 1"} serialised

Plain Flight commands are UTF-8 SQL or JSON and never parse as such an `Any`, so
both protocols share the same descriptors, tickets and port.
"""

from __future__ import annotations

from google.protobuf import any_pb2, message
from google.protobuf.message import DecodeError

from agentdata.errors import InvalidArgument
from flight_server.flightsql.proto import FlightSql_pb2 as pb

TYPE_URL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."

#: Every message of FlightSql.proto by name, so any Flight SQL message can be decoded
#: (and answered UNIMPLEMENTED by name when we do not support it).
MESSAGES: dict[str, type[message.Message]] = {
    name: getattr(pb, name) for name in pb.DESCRIPTOR.message_types_by_name
}


def _as_any(data: bytes) -> any_pb2.Any | None:
    # A serialised Any starts with field 1 (type_url): tag 0x0a. Checking that byte
    # first keeps plain SQL commands (text) off the protobuf parser.
    if data[:1] != b"\x0a":
        return None
    wrapped = any_pb2.Any()
    try:
        wrapped.ParseFromString(data)
    except DecodeError:
        return None
    if not wrapped.type_url.startswith(TYPE_URL_PREFIX):
        return None
    return wrapped


def is_flight_sql(data: bytes) -> bool:
    """True when `data` is an Any-wrapped Flight SQL message."""
    return _as_any(data) is not None


def unpack(data: bytes) -> message.Message:
    """The Flight SQL message inside an Any; InvalidArgument when it is none we know."""
    wrapped = _as_any(data)
    if wrapped is None:
        raise InvalidArgument("not a Flight SQL message (expected a packed google.protobuf.Any)")
    name = wrapped.type_url[len(TYPE_URL_PREFIX) :]
    cls = MESSAGES.get(name)
    if cls is None:
        raise InvalidArgument(f"unknown Flight SQL message {name!r}")
    msg = cls()
    if not wrapped.Unpack(msg):
        raise InvalidArgument(f"malformed Flight SQL message {name!r}")
    return msg


def unpack_as(data: bytes, cls: type[message.Message]) -> message.Message:
    """Decode an action body that must hold a `cls` message."""
    msg = unpack(data)
    if not isinstance(msg, cls):
        raise InvalidArgument(f"expected {cls.DESCRIPTOR.name}, got {type(msg).DESCRIPTOR.name}")
    return msg


def pack(msg: message.Message) -> bytes:
    """`msg` wrapped in an Any and serialised (commands, tickets, action results)."""
    wrapped = any_pb2.Any()
    wrapped.Pack(msg)
    return bytes(wrapped.SerializeToString())


def name_of(msg: message.Message) -> str:
    return str(msg.DESCRIPTOR.name)
