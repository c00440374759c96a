"""The project's error types. Dependencies' exceptions are translated into these at
the edge (DuckDB in `engine`, Snowflake in the sync extractor, Redis/Celery in the
job layer); each adapter then has exactly one mapping from these to its protocol
(Flight status codes in `flight_server.errors`, HTTP problems in `control_api.errors`).

    AgentdataError                  code            Flight              HTTP
    ├── InvalidArgument             invalid_argument  INVALID_ARGUMENT  400
    │   └── ChecksumMismatch        checksum_mismatch INVALID_ARGUMENT  400
    ├── Unauthenticated             unauthenticated   UNAUTHENTICATED   401
    ├── PermissionDenied            permission_denied PERMISSION_DENIED 403
    ├── NotFound                    not_found         NOT_FOUND         404
    ├── Conflict                    conflict          ALREADY_EXISTS    409
    ├── PayloadTooLarge             payload_too_large RESOURCE_EXHAUSTED 413
    │   └── QuotaExceeded           quota_exceeded    RESOURCE_EXHAUSTED 507
    ├── ResourceExhausted           resource_exhausted RESOURCE_EXHAUSTED 429
    ├── DeadlineExceeded            deadline_exceeded DEADLINE_EXCEEDED 504
    ├── Cancelled                   cancelled         CANCELLED         499
    ├── Unavailable                 unavailable       UNAVAILABLE       503
    ├── Unimplemented               unimplemented     UNIMPLEMENTED     501
    └── InternalError               internal          INTERNAL          500

Messages must never contain a token or a secret.
"""

from __future__ import annotations


class AgentdataError(Exception):
    """Base of every error the project raises on purpose; `code` is stable for clients."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
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
