"""The project's error types. Dependencies' exceptions are translated into these at
the edge (DuckDB in `engine`, Snowflake in the sync extractor, Redis/Celery in the
job layer); each adapter then has exactly one mapping from these to its protocol
(Flight status codes in `flight_server.errors`, HTTP problems in `control_api.errors`).

    AgentdataError                  code               Flight (gRPC)      HTTP
    ├── InvalidArgument             invalid_argument   INVALID_ARGUMENT   400
    │   └── ChecksumMismatch        checksum_mismatch  INVALID_ARGUMENT   400
    ├── Unauthenticated             unauthenticated    UNAUTHENTICATED    401
    ├── PermissionDenied            permission_denied  PERMISSION_DENIED  403
    ├── NotFound                    not_found          NOT_FOUND          404
    ├── Conflict                    conflict           UNKNOWN            409
    ├── PayloadTooLarge             payload_too_large  UNKNOWN            413
    │   └── QuotaExceeded           quota_exceeded     UNKNOWN            507
    ├── ResourceExhausted           resource_exhausted UNKNOWN            429
    ├── DeadlineExceeded            deadline_exceeded  DEADLINE_EXCEEDED  504
    ├── Cancelled                   cancelled          CANCELLED          499
    ├── Unavailable                 unavailable        UNAVAILABLE        503
    ├── Unimplemented               unimplemented      UNIMPLEMENTED      501
    └── InternalError               internal           INTERNAL           500

pyarrow's Python Flight server cannot send ALREADY_EXISTS or RESOURCE_EXHAUSTED at all,
so those four travel as UNKNOWN; their code is in the message ("[conflict] ...") and in
the wire tag on every channel (see `flight_server.errors`).

An error may carry a `detail`: a small JSON object for programs ({"reason":
"incompatible_schema", "column": ..., "old_type": ..., "new_type": ...}). It crosses
each boundary with the code: as extension members of an HTTP problem, and over Flight
in the wire tag (`wire_tag`, read back by `parse_wire_tag`), so callers branch on code
and detail, never on message text.

Messages and details must never contain a token or a secret.
"""

from __future__ import annotations

import json
from typing import Any


class AgentdataError(Exception):
    """Base of every error the project raises on purpose; `code` is stable for clients."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class InvalidArgument(AgentdataError):
    code, http_status = "invalid_argument", 400


class ChecksumMismatch(InvalidArgument):
    """The bytes received do not hash to the SHA-256 the client announced."""

    code = "checksum_mismatch"


class Unauthenticated(AgentdataError):
    code, http_status = "unauthenticated", 401


class PermissionDenied(AgentdataError):
    code, http_status = "permission_denied", 403


class NotFound(AgentdataError):
    code, http_status = "not_found", 404


class Conflict(AgentdataError):
    code, http_status = "conflict", 409


class PayloadTooLarge(AgentdataError):
    code, http_status = "payload_too_large", 413


class QuotaExceeded(PayloadTooLarge):
    """An owner's artefact quota (or the server's disk) has no room for this file."""

    code, http_status = "quota_exceeded", 507


class ResourceExhausted(AgentdataError):
    code, http_status = "resource_exhausted", 429


class DeadlineExceeded(AgentdataError):
    code, http_status = "deadline_exceeded", 504


class Cancelled(AgentdataError):
    code, http_status = "cancelled", 499


class Unavailable(AgentdataError):
    code, http_status = "unavailable", 503


class Unimplemented(AgentdataError):
    code, http_status = "unimplemented", 501


class InternalError(AgentdataError):
    code, http_status = "internal", 500


def _by_code() -> dict[str, type[AgentdataError]]:
    # From the subclasses down: "internal" is InternalError, not the base class that
    # shares its code (retry policies tell the two apart).
    found: dict[str, type[AgentdataError]] = {}
    todo: list[type[AgentdataError]] = list(AgentdataError.__subclasses__())
    while todo:
        cls = todo.pop(0)
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


#: Every stable code and its error type.
BY_CODE: dict[str, type[AgentdataError]] = _by_code()


def from_code(
    code: str | None,
    message: str,
    *,
    detail: dict[str, Any] | None = None,
    default: type[AgentdataError] | None = None,
) -> AgentdataError:
    """The error a stable `code` names, as a client rebuilds it from the wire (an unknown
    code gives `default`, else InternalError)."""
    cls = BY_CODE.get(code or "") or default or InternalError
    return cls(message, detail=detail)


#: The longest detail sent whole in a wire tag (bytes of JSON).
MAX_WIRE_DETAIL = 4096


def wire_tag(code: str, detail: dict[str, Any] | None = None) -> str:
    """An error's code and detail as one short text field beside its message: the bare
    code, or the code, a space and the detail as compact JSON.

        wire_tag("not_found")                                  -> 'not_found'
        wire_tag("invalid_argument", {"reason": "constraint"}) -> 'invalid_argument {"reason":"constraint"}'
    """
    if not detail:
        return code
    text = json.dumps(detail, separators=(",", ":"), sort_keys=True, default=str)
    if len(text) > MAX_WIRE_DETAIL:
        # gRPC bounds metadata; the reason is what callers branch on.
        text = json.dumps({"reason": detail["reason"]}) if "reason" in detail else ""
    return f"{code} {text}" if text else code


def parse_wire_tag(text: str) -> tuple[str, dict[str, Any]] | None:
    """(code, detail) from a `wire_tag`, or None when `text` is not one."""
    code, _, rest = text.strip().partition(" ")
    if code not in BY_CODE:
        return None
    if not rest:
        return code, {}
    try:
        detail = json.loads(rest)
    except ValueError:
        return None
    return (code, detail) if isinstance(detail, dict) else None
