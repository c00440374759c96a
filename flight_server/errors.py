"""The one mapping from agentdata errors to Flight status codes (and log levels).

Handlers run inside `flight_errors()`; streamed results pass through
`guard_stream()`, because an exception raised while a stream is being consumed must
also reach the client with its code (GeneratorStream keeps it; a plain
RecordBatchReader would turn every failure into UNKNOWN with a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.flight as fl

from agentdata import errors as E

log = logging.getLogger("agentdata.flight")

# Our error -> (how pyarrow carries the gRPC code, log level). pyarrow's Python server
# API has FlightError classes for only some codes; it maps built-in ValueError to
# INVALID_ARGUMENT, KeyError to NOT_FOUND and NotImplementedError to UNIMPLEMENTED,
# and has no way at all to send RESOURCE_EXHAUSTED or ALREADY_EXISTS: those go as
# UNKNOWN (FlightServerError). Every error's message starts with "[<code>]" and
# FlightErrors carry the code in `extra_info`, so clients can always branch on it.
_MAPPING: list[tuple[type[E.AgentdataError], type[Exception], int]] = [
    (E.InvalidArgument, ValueError, logging.INFO),
    (E.NotFound, KeyError, logging.INFO),
    (E.Unimplemented, NotImplementedError, logging.INFO),
    (E.Unauthenticated, fl.FlightUnauthenticatedError, logging.INFO),
    (E.PermissionDenied, fl.FlightUnauthorizedError, logging.INFO),
    (E.DeadlineExceeded, fl.FlightTimedOutError, logging.INFO),
    (E.Cancelled, fl.FlightCancelledError, logging.INFO),
    (E.Unavailable, fl.FlightUnavailableError, logging.WARNING),
    (E.ResourceExhausted, fl.FlightServerError, logging.INFO),
    (E.PayloadTooLarge, fl.FlightServerError, logging.INFO),
    (E.Conflict, fl.FlightServerError, logging.INFO),
    (E.InternalError, fl.FlightInternalError, logging.ERROR),
]


def _lookup(err: E.AgentdataError) -> tuple[type[Exception], int]:
    for cls, target, level in _MAPPING:
        if isinstance(err, cls):
            return target, level
    return fl.FlightInternalError, logging.ERROR


def to_flight_error(err: E.AgentdataError) -> Exception:
    """Translate one of our errors into the exception pyarrow sends with the right code."""
    target, _ = _lookup(err)
    message = f"[{err.code}] {err.message}"
    if issubclass(target, fl.FlightError):
        return target(message, extra_info=err.code.encode())  # type: ignore[call-arg]
    return target(message)


def _log(err: E.AgentdataError) -> None:
    _, level = _lookup(err)
    log.log(level, "flight call failed: %s: %s", err.code, err.message)


@contextmanager
def flight_errors() -> Iterator[None]:
    """Run a handler body; our errors leave as Flight errors, anything else as INTERNAL."""
    try:
        yield
    except E.AgentdataError as err:
        _log(err)
        raise to_flight_error(err) from None
    except fl.FlightError:
        raise
    except Exception:
        log.exception("unexpected error in a Flight handler")
        raise fl.FlightInternalError(
            "[internal] unexpected server error (see server log)"
        ) from None


def guard_stream(batches: Iterator[Any]) -> Iterator[Any]:
    """Pass batches through, translating errors raised mid-stream."""
    with flight_errors():
        yield from batches
