"""Snowflake failures sorted into transient (retry later) and terminal (fail now).

    classify(exc)   # True: transient, False: terminal, None: not a Snowflake failure

One rule for every path that talks to Snowflake: the sync extractor
(`workers.sync.extract`, which turns the verdict into its source errors) and federated
queries (`agentdata.federation`). It sorts by error code first, then by exception
class, and is documented next to the codes it names. The connector is imported only
when an exception is classified (it takes seconds to import).
"""

from __future__ import annotations

from agentdata.errors import AgentdataError

# Snowflake error codes, from the connector's `errorcode.py` (25xxxx: client side) and
# Snowflake's server messages. Codes decide first because one class (e.g. DatabaseError)
# carries both kinds.
_TRANSIENT_ERRNOS = frozenset(
    {
        250001,  # ER_FAILED_TO_CONNECT_TO_DB: login could not reach the service
        250002,  # ER_CONNECTION_IS_CLOSED
        250003,  # ER_FAILED_TO_REQUEST: a request failed after the connector's own retries
        250005,  # ER_FAILED_TO_SERVER
        251011,  # ER_CONNECTION_TIMEOUT
        251012,  # ER_RETRYABLE_CODE
        252007,  # ER_FAILED_TO_RENEW_SESSION
        252010,  # ER_CHUNK_DOWNLOAD_FAILED: a result chunk could not be fetched
        252013,  # ER_INCOMPLETE_RESULT_CHUNK
        604,  # SQL execution canceled (e.g. the warehouse was resized or restarted)
        630,  # statement reached its statement or warehouse timeout
        390112,  # session no longer exists: log in again
        390114,  # authentication token expired: log in again
    }
)
# Logins refused for good: wrong password (390100), locked (390101) or disabled (390102)
# user, invalid key-pair JWT (390144), ... Everything in 390xxx not listed above.
_LOGIN_ERRNOS = range(390000, 391000)
_AUTH_SQLSTATES = frozenset({"28000", "08004"})  # authorization failure, connection rejected
_HTTP_ERRNO_BASE = 290000  # the connector's HttpError errno is 290000 + HTTP status
_TRANSIENT_HTTP = frozenset({401, 408, 429, 500, 502, 503, 504})  # 401: session lost


def snowflake_codes(exc: BaseException) -> tuple[int | None, str | None]:
    """A connector exception's (errno, sqlstate), each None when unknown."""
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    # The connector fills unknown codes with -1 and "n/a".
    errno = errno if isinstance(errno, int) and errno >= 0 else None
    sqlstate = sqlstate if isinstance(sqlstate, str) and sqlstate != "n/a" else None
    return errno, sqlstate


def classify(exc: BaseException) -> bool | None:
    """True if `exc` is transient, False if terminal, None if it is not a source error.

    Transient: network failures and timeouts (OperationalError, 250001/250003 and the other
    codes in `_TRANSIENT_ERRNOS`), HTTP 5xx/408/429, a lost session (HTTP 401 after the
    server restarted, 390112/390114), Snowflake internal errors (sqlstate XX000), connection
    exceptions (sqlstate 08xxx), and plain socket errors. Terminal: authentication
    (sqlstate 28000/08004, login codes 390xxx), SQL compilation and missing objects
    (ProgrammingError: 001003 syntax error, 002003 object does not exist, 003001
    insufficient privileges), HTTP 403 and other 4xx, bad configuration, and any other
    connector error, so an unknown failure is reported rather than retried in a loop.
    """
    from snowflake.connector import errors as sf

    if isinstance(exc, AgentdataError):
        return None
    if isinstance(exc, sf.Error):
        errno, sqlstate = snowflake_codes(exc)
        if errno in _TRANSIENT_ERRNOS and errno in _LOGIN_ERRNOS:
            return True  # a session or token that expired: logging in again fixes it
        if sqlstate in _AUTH_SQLSTATES or errno in _LOGIN_ERRNOS:
            return False
        # Before the codes: the connector re-raises an HTTP 403 at login with the
        # "failed to connect" errno 250001, which alone would look transient.
        if isinstance(exc, sf.ForbiddenError | sf.BadRequest | sf.MethodNotAllowed):
            return False
        if isinstance(exc, sf.NonRetryableTlsError):
            return False
        if errno in _TRANSIENT_ERRNOS:
            return True
        # Network-level failures are retryable, whatever code they carry.
        if isinstance(
            exc,
            sf.OperationalError
            | sf.InternalServerError
            | sf.ServiceUnavailableError
            | sf.GatewayTimeoutError
            | sf.BadGatewayError
            | sf.RequestTimeoutError
            | sf.TooManyRequests
            | sf.OtherHTTPRetryableError
            | sf.RequestExceedMaxRetryError,
        ):
            return True
        if errno is not None and _HTTP_ERRNO_BASE <= errno < _HTTP_ERRNO_BASE + 600:
            return errno - _HTTP_ERRNO_BASE in _TRANSIENT_HTTP
        # Connection exception, or Snowflake's "internal error, please retry".
        # Otherwise ProgrammingError (compilation, missing object, privileges), DataError,
        # IntegrityError, NotSupportedError, InterfaceError and anything unknown: terminal.
        return sqlstate is not None and (sqlstate.startswith("08") or sqlstate == "XX000")
    # A missing or unreadable key file is configuration, not an outage.
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    # requests/urllib3 connection errors and socket timeouts all derive from OSError.
    if isinstance(exc, OSError):
        return True
    return None
