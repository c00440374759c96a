"""The one mapping from agentdata errors to HTTP problem responses (RFC 9457).

Body: {"type": "about:blank", "title", "status", "detail", "code"}, media type
application/problem+json; `code` is the stable error code of agentdata.errors, and
`detail` starts with it in brackets, as every error message does on every channel:

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "code": "invalid_argument", "detail": "[invalid_argument] token name contains ..."}

Nothing of the server's insides (tracebacks, paths, versions) is ever in a body: an
unexpected exception is logged here and answered with a fixed 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentdata.errors import AgentdataError

log = logging.getLogger("agentdata.http")

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem(status: int, code: str, detail: str, **extra: object) -> JSONResponse:
    """A problem+json response; `detail` is prefixed with "[code] "."""
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": f"[{code}] {detail}",
        "code": code,
    }
    for key, value in extra.items():  # extension members never replace the standard ones
        body.setdefault(key, value)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(AgentdataError)
    async def _ours(request: Request, exc: AgentdataError) -> JSONResponse:
        level = logging.ERROR if exc.http_status >= 500 else logging.INFO
        log.log(level, "%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
        return problem(exc.http_status, exc.code, exc.message, **exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        return problem(
            422, "invalid_argument", "request does not match the API schema", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthenticated",
            403: "permission_denied",
        }.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "unexpected server error (see server log)")
