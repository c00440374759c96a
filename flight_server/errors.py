"""The one mapping from agentdata errors to Flight status codes (and log levels).

Handlers run inside `flight_errors()`; streamed results pass through
`guard_stream()`, because an exception raised while a stream is being consumed must
also reach the client with its code (GeneratorStream keeps it; a plain
RecordBatchReader would turn every failure into UNKNOWN).

What a client receives is "[<code>] <message>" and nothing of the server's insides.
pyarrow's Python server turns an exception into a gRPC status in one of two ways:

- a `FlightError` subclass becomes a Flight status (code, message, `extra_info`)
  with nothing else attached: clean, but pyarrow has such classes only for
  INTERNAL, DEADLINE_EXCEEDED, CANCELLED, UNAUTHENTICATED, PERMISSION_DENIED,
  UNAVAILABLE and UNKNOWN;
- any other exception becomes an Arrow status whose code follows the exception
  type (ValueError -> INVALID_ARGUMENT, KeyError -> NOT_FOUND, NotImplementedError
  -> UNIMPLEMENTED), and Arrow's C++ `PythonErrorDetail` appends
  `traceback.format_exception(...)` of it to the message (". Detail: Python
  exception: Traceback ... File "/srv/.../server.py" ..."): server paths, the
  Python version in library paths, source lines.

The three codes with no FlightError class therefore travel as the built-in type,
marked as `ClientError`, and `traceback.format_exception` renders a ClientError as
its wire tag (`_install_traceback_filter`): pyarrow formats the detail there and
offers no other hook. Everything else we send is a FlightError; an unexpected
exception is logged here and leaves as a plain INTERNAL error.

Beside the message, every error carries its wire tag (`agentdata.errors.wire_tag`):
the code, and the error's machine-readable detail as JSON when it has one. A
FlightError carries it in `extra_info`; a ClientError in the text pyarrow appends:

    FlightUnavailableError  "[unavailable] the server is shutting down"
                            extra_info b'unavailable'
    ArrowInvalid            "[invalid_argument] incompatible schema change on s.t.c: ...
                            . Detail: Python exception: invalid_argument
                            {"column":"c","new_type":"VARCHAR","old_type":"BIGINT",
                            "reason":"incompatible_schema"}"

`workers.client.error_from_flight` reads both back into our error types, so callers
branch on the code and detail, never on the message text.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.flight as fl

from agentdata import errors as E

log = logging.getLogger("agentdata.flight")


class ClientError(Exception):
    """An error on its way to a Flight client: `str()` is exactly "[code] message";
    `tag` (the code and detail, see the module docstring) is what pyarrow appends."""

    def __init__(self, code: str, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.tag = tag or code

    def __str__(self) -> str:
        # KeyError would otherwise quote its message ("'[not_found] ...'").
        return self.message


class ClientInvalidArgument(ClientError, ValueError):
    """Sent as INVALID_ARGUMENT (pyarrow raises ArrowInvalid on the client)."""


class ClientNotFound(ClientError, KeyError):
    """Sent as NOT_FOUND (pyarrow raises ArrowKeyError on the client)."""


class ClientUnimplemented(ClientError, NotImplementedError):
    """Sent as UNIMPLEMENTED (pyarrow raises ArrowNotImplementedError on the client)."""


# Our error -> (how pyarrow carries the gRPC code, log level). pyarrow's Python server
# has no way at all to send RESOURCE_EXHAUSTED or ALREADY_EXISTS: those go as UNKNOWN
# (FlightServerError). Every error's message starts with "[<code>]" and its wire tag
# (code and detail) travels beside it, so clients can always branch on them.
_MAPPING: list[tuple[type[E.AgentdataError], type[Exception], int]] = [
    (E.InvalidArgument, ClientInvalidArgument, logging.INFO),
    (E.NotFound, ClientNotFound, logging.INFO),
    (E.Unimplemented, ClientUnimplemented, logging.INFO),
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

#: What a client sees for an exception that is not one of ours (the log has the rest).
UNEXPECTED = "[internal] unexpected server error (see server log)"


def _lookup(err: E.AgentdataError) -> tuple[type[Exception], int]:
    for cls, target, level in _MAPPING:
        if isinstance(err, cls):
            return target, level
    return fl.FlightInternalError, logging.ERROR


def to_flight_error(err: E.AgentdataError) -> Exception:
    """Translate one of our errors into the exception pyarrow sends with the right code."""
    target, _ = _lookup(err)
    message = f"[{err.code}] {err.message}"
    tag = E.wire_tag(err.code, err.detail)
    if issubclass(target, ClientError):
        return target(err.code, message, tag)
    return target(message, extra_info=tag.encode())  # type: ignore[call-arg]


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
    except (fl.FlightError, ClientError):
        raise
    except Exception:
        log.exception("unexpected error in a Flight handler")
        raise fl.FlightInternalError(UNEXPECTED, extra_info=b"internal") from None


def guard_stream(batches: Iterator[Any]) -> Iterator[Any]:
    """Pass batches through, translating errors raised mid-stream."""
    with flight_errors():
        yield from batches


def _install_traceback_filter() -> None:
    """Make `traceback.format_exception` say nothing of the server for Flight clients.

    Arrow's C++ `PythonErrorDetail::ToString` looks this function up on the
    `traceback` module each time it describes a Python exception for the wire. An
    exception on its way out of a Flight handler is rendered as its wire tag (a
    ClientError: its code, and its detail if any) or its type name (anything else,
    such as pyarrow's own checks on what a handler returned), so the client's detail
    reads "Python exception: invalid_argument" instead of a traceback. Those are
    recognised by their outermost frame, pyarrow's Flight callback; every other call
    (format_exc in an except block, a worker formatting a client-side error) is passed
    through, and logging formats with `TracebackException` directly.
    """
    original: Callable[..., list[str]] = traceback.format_exception
    if getattr(original, "_agentdata_filter", False):
        return

    def format_exception(exc: Any, /, *args: Any, **kwargs: Any) -> list[str]:
        value = args[0] if args else kwargs.get("value", exc)
        tb = args[1] if len(args) > 1 else kwargs.get("tb", getattr(value, "__traceback__", None))
        if isinstance(value, ClientError):
            return [value.tag]
        if tb is not None and tb.tb_frame.f_code.co_filename.endswith(_PYARROW_FLIGHT):
            return [type(value).__name__]
        return original(exc, *args, **kwargs)

    format_exception._agentdata_filter = True  # type: ignore[attr-defined]
    format_exception.__doc__ = original.__doc__
    traceback.format_exception = format_exception


#: The source name of pyarrow's Flight callbacks (Cython) as traceback frames show it.
_PYARROW_FLIGHT = "_flight.pyx"

_install_traceback_filter()
