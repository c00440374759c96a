"""The Flight error mapping: every error leaves as "[code] message" with the right
pyarrow type, and what pyarrow puts on the wire about an exception (its
`traceback.format_exception`) says nothing of the server."""

from __future__ import annotations

import traceback

import pyarrow.flight as fl
import pytest

from agentdata import errors as E
from flight_server.errors import ClientError, flight_errors, guard_stream, to_flight_error
from workers.client import error_from_flight

EVERY_ERROR = [
    E.InvalidArgument,
    E.ChecksumMismatch,
    E.Unauthenticated,
    E.PermissionDenied,
    E.NotFound,
    E.Conflict,
    E.PayloadTooLarge,
    E.QuotaExceeded,
    E.ResourceExhausted,
    E.DeadlineExceeded,
    E.Cancelled,
    E.Unavailable,
    E.Unimplemented,
    E.InternalError,
]


@pytest.mark.parametrize("cls", EVERY_ERROR)
def test_every_error_leaves_as_its_code_and_message(cls: type[E.AgentdataError]) -> None:
    out = to_flight_error(cls("it went wrong"))
    assert str(out) == f"[{cls.code}] it went wrong"
    # Either a FlightError (pyarrow sends it as a Flight status) or marked for the filter.
    assert isinstance(out, fl.FlightError | ClientError)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (E.InvalidArgument, ValueError),
        (E.NotFound, KeyError),
        (E.Unimplemented, NotImplementedError),
    ],
)
def test_codes_without_a_flight_class_keep_their_grpc_code(
    cls: type[E.AgentdataError], builtin: type[Exception]
) -> None:
    # pyarrow picks INVALID_ARGUMENT / NOT_FOUND / UNIMPLEMENTED from these built-in types.
    assert isinstance(to_flight_error(cls("x")), builtin)


def _raised_through_handler(exc: BaseException) -> BaseException:
    """`exc` after it left a handler wrapped in flight_errors()."""
    try:
        with flight_errors():
            raise exc
    except BaseException as out:  # noqa: BLE001 - the test inspects whatever came out
        return out
    raise AssertionError("flight_errors() swallowed the error")


def test_client_errors_format_as_their_bare_code() -> None:
    out = _raised_through_handler(E.InvalidArgument("bad SQL near /srv/agentdata"))
    assert isinstance(out, ClientError)
    # The call Arrow's PythonErrorDetail makes for the wire: (type, value, traceback).
    lines = traceback.format_exception(type(out), out, out.__traceback__)
    assert lines == ["invalid_argument"]
    assert traceback.format_exception(out) == ["invalid_argument"]


def test_other_exceptions_format_as_usual() -> None:
    try:
        raise RuntimeError("kept")
    except RuntimeError as e:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    assert text.startswith("Traceback (most recent call last):")
    assert "RuntimeError: kept" in text and __file__ in text


def test_unexpected_errors_say_nothing_of_what_went_wrong() -> None:
    out = _raised_through_handler(RuntimeError(f"secret detail in {__file__}"))
    assert isinstance(out, fl.FlightInternalError)
    assert str(out) == "[internal] unexpected server error (see server log)"
    assert out.__cause__ is None and out.__suppress_context__


def test_errors_mid_stream_are_translated() -> None:
    def batches() -> object:
        yield 1
        raise E.NotFound("gone")

    stream = guard_stream(iter(batches()))  # type: ignore[call-overload]
    assert next(stream) == 1
    with pytest.raises(KeyError) as info:
        next(stream)
    assert str(info.value) == "[not_found] gone"  # not KeyError's quoted repr


def test_client_errors_with_a_detail_format_as_their_wire_tag() -> None:
    detail = {"reason": "incompatible_schema", "column": "c"}
    out = _raised_through_handler(E.InvalidArgument("no", detail=detail))
    lines = traceback.format_exception(type(out), out, out.__traceback__)
    assert lines == [E.wire_tag("invalid_argument", detail)]
    assert E.parse_wire_tag(lines[0]) == ("invalid_argument", detail)


#: Errors the `_Bare` server raises by action name ("detail:<code>").
DETAILED = {cls.code: cls for cls in EVERY_ERROR}


class _Bare(fl.FlightServerBase):
    """A pyarrow server whose handlers fail in every way a handler can."""

    def do_action(self, context: fl.ServerCallContext, action: fl.Action) -> list[bytes]:
        if action.type == "ours":
            with flight_errors():
                raise E.NotFound("no such thing")
        if action.type.startswith("detail:"):
            cls = DETAILED[action.type.removeprefix("detail:")]
            with flight_errors():
                raise cls("it went wrong", detail={"reason": "because", "n": 3})
        raise ValueError("a plain error, outside the mapping")

    def get_flight_info(
        self, context: fl.ServerCallContext, descriptor: fl.FlightDescriptor
    ) -> object:
        return "not a FlightInfo"  # pyarrow's own check raises (in Cython) for this


@pytest.fixture(scope="module")
def bare() -> object:
    server = _Bare("grpc://127.0.0.1:0")
    client = fl.connect(f"grpc://127.0.0.1:{server.port}")
    yield client
    client.close()
    server.shutdown()


def _failure(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as e:  # noqa: BLE001 - the test inspects whatever the client raised
        return e
    raise AssertionError("the call succeeded")


def test_over_the_wire_our_errors_carry_code_and_no_traceback(bare: fl.FlightClient) -> None:
    err = _failure(lambda: list(bare.do_action(fl.Action("ours", b""))))
    assert isinstance(err, KeyError)  # ArrowKeyError: NOT_FOUND survived
    assert str(err).startswith("[not_found] no such thing")
    assert "Traceback" not in str(err) and ".py" not in str(err)


def test_over_the_wire_no_exception_brings_a_traceback(bare: fl.FlightClient) -> None:
    plain = _failure(lambda: list(bare.do_action(fl.Action("plain", b""))))
    wrong = _failure(lambda: bare.get_flight_info(fl.FlightDescriptor.for_command(b"x")))
    for err in (plain, wrong):
        text = str(err)
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
    assert "Python exception: ValueError" in str(plain)


@pytest.mark.parametrize("code", sorted(DETAILED))
def test_over_the_wire_every_error_keeps_its_code_and_detail(
    bare: fl.FlightClient, code: str
) -> None:
    """What a worker rebuilds from a Flight failure is the server's error: its type, its
    message and its detail, so it can branch on code and detail, not on text."""
    err = _failure(lambda: list(bare.do_action(fl.Action(f"detail:{code}", b""))))
    rebuilt = error_from_flight(err)  # type: ignore[arg-type]
    assert type(rebuilt) is DETAILED[code]
    assert rebuilt.message == "it went wrong"
    assert rebuilt.detail == {"reason": "because", "n": 3}
