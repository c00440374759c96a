"""Authentication middleware: every Flight call carries a token.

Accepted headers:
    authorization: Bearer <token>            (any call)
    authorization: Basic base64(user:token)  (the Flight/Flight SQL handshake that
                                              ADBC/JDBC username+password use; the
                                              username is ignored, the password is
                                              the token, and the reply carries
                                              `authorization: Bearer <token>`)
The verified `Principal` is stored on the middleware; handlers get it with
`principal_of(context)`. Tokens are verified on every call, so a revoked token
fails on its very next call.
"""

from __future__ import annotations

import base64
import binascii

import pyarrow.flight as fl

from agentdata.errors import Unauthenticated, Unimplemented
from agentdata.tokens import Principal, TokenVerifier
from flight_server.errors import flight_errors, to_flight_error

MIDDLEWARE_KEY = "auth"


class NoOpAuthHandler(fl.ServerAuthHandler):
    """Lets the Handshake RPC through; the middleware does the real work."""

    def authenticate(self, outgoing: fl.ServerAuthSender, incoming: fl.ServerAuthReader) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""


class AuthMiddleware(fl.ServerMiddleware):
    def __init__(self, principal: Principal, bearer: str | None) -> None:
        self.principal = principal
        self._bearer = bearer

    def sending_headers(self) -> dict[str, str]:
        if self._bearer is None:
            return {}
        return {"authorization": f"Bearer {self._bearer}"}


class AuthMiddlewareFactory(fl.ServerMiddlewareFactory):
    def __init__(self, tokens: TokenVerifier) -> None:
        self._tokens = tokens

    def start_call(self, info: fl.CallInfo, headers: dict[str, list[str]]) -> AuthMiddleware:
        with flight_errors():
            if info.method == fl.FlightMethod.INVALID:
                # pyarrow's server has no PollFlightInfo hook, and its C++ default would
                # answer a bare "NYI"; calls of methods pyarrow does not know (PollFlightInfo
                # is the one clients send) reach middleware as INVALID: answer them here.
                raise Unimplemented(
                    "PollFlightInfo is not supported: call GetFlightInfo (results stream "
                    "with DoGet as soon as they start)"
                )
            token, from_basic = _token_from_headers(headers)
            principal = self._tokens.verify(token)
        return AuthMiddleware(principal, token if from_basic else None)


def _token_from_headers(headers: dict[str, list[str]]) -> tuple[str, bool]:
    values = headers.get("authorization") or headers.get("Authorization") or []
    if not values:
        raise Unauthenticated("missing token: send 'authorization: Bearer <token>'")
    scheme, _, value = values[0].strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value, False
    if scheme.lower() == "basic" and value:
        try:
            # Go clients (the ADBC Flight SQL driver) send unpadded base64 (RawStdEncoding).
            padded = value + "=" * (-len(value) % 4)
            decoded = base64.b64decode(padded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        _user, sep, password = decoded.partition(":")
        if not sep or not password:
            raise Unauthenticated("Basic credentials need the token as password")
        return password, True
    raise Unauthenticated("authorization header must be 'Bearer <token>' or 'Basic <credentials>'")


def principal_of(context: fl.ServerCallContext) -> Principal:
    """The caller of the current Flight call (set by the middleware)."""
    mw = context.get_middleware(MIDDLEWARE_KEY)
    if mw is None:  # pragma: no cover - the middleware is always installed
        raise to_flight_error(Unauthenticated("no credentials"))
    principal: Principal = mw.principal
    return principal
