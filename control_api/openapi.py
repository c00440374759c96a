"""The OpenAPI document, with the error bodies the API really sends.

FastAPI documents a route's success and, for routes with inputs, a 422 in its own
shape (`HTTPValidationError`), which is not what this API answers. Every error here is
`application/problem+json` (`control_api.errors.problem`), so the document is
rewritten once, when first asked for:

- every 4xx/5xx response of every operation has the `Problem` schema under
  `application/problem+json` (422: `ValidationProblem`, which adds `errors`);
- each operation lists the errors it can return, derived from what it depends on
  (the same dependencies that raise them) plus what the route declares itself:

      401  the route needs a token (`get_principal`, `get_admin`)
      403  the route needs an admin token (`get_admin`)
      404  the route names a resource in its path
      422  the route takes a body, query, header or path parameters

  409 / 413 / 507 / 400 / 429 / 503 are declared by the routes that raise them
  (`responses={409: {"description": ...}}`).

A response that declares its own `content` (readiness's JSON 503) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from control_api.deps import get_admin, get_principal
from control_api.errors import PROBLEM


class Problem(BaseModel):
    """An error (RFC 9457 problem details) with the stable agentdata error code."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="Always `about:blank`.")
    title: str = Field(description="The HTTP status's phrase, e.g. `Forbidden`.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(
        description="What went wrong, starting with the code in brackets: "
        "`[permission_denied] token may not access table(s): demo.orders`."
    )
    code: str = Field(
        description="Stable error code (`invalid_argument`, `unauthenticated`, "
        "`permission_denied`, `not_found`, `conflict`, `payload_too_large`, "
        "`quota_exceeded`, `resource_exhausted`, ...): branch on this, not on the text."
    )


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where: `["body", "name"]`, `["query", "limit"]`.')
    msg: str
    type: str


class ValidationProblem(Problem):
    """A request that does not match the schema: `code` is `invalid_argument`."""

    errors: list[FieldError] = Field(description="One entry per field that did not validate.")


#: What each error status means on this API, for responses that do not say more.
DESCRIPTIONS = {
    400: "`invalid_argument`: bad input (bad SQL, options that do not go together).",
    401: "`unauthenticated`: no token, or a malformed, expired, wrongly signed or revoked one.",
    403: "`permission_denied`: the token's role or allow-list does not permit this.",
    404: "`not_found`: no such resource, or one this token may not see.",
    409: "`conflict`: the resource exists, or is in a state that does not allow this.",
    413: "`payload_too_large`: larger than the server accepts.",
    422: "`invalid_argument`: the request does not match this schema (see `errors`).",
    429: "`resource_exhausted`: over a limit of the token (max_rows, max_scan_rows).",
    500: "`internal`: a bug; the server log has the details.",
    503: "`unavailable`: a dependency (the task broker) is unreachable, or shutting down.",
    507: "`quota_exceeded`: the owner's artefact quota, or the server's disk, is full.",
}

_REF = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) document the real error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with problem+json error responses on every operation."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ValidationProblem):
        definition = model.model_json_schema(ref_template=_REF)
        schemas.update(definition.pop("$defs", {}))
        schemas[model.__name__] = definition
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        path = doc["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = path.get(method.lower())
            if operation is not None:
                _document_errors(operation, _implied_errors(route))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _implied_errors(route: APIRoute) -> set[int]:
    calls = {d.call for d in _dependencies(route.dependant)}
    implied = set()
    if get_principal in calls or get_admin in calls:
        implied.add(401)
    if get_admin in calls:
        implied.add(403)
    if route.dependant.path_params:
        implied.add(404)
    if _has_inputs(route.dependant):
        implied.add(422)
    return implied


def _has_inputs(dependant: Dependant) -> bool:
    for d in [dependant, *_dependencies(dependant)]:
        if d.path_params or d.query_params or d.header_params or d.body_params:
            # The Bearer header of the auth dependency is no input of the route's own.
            if d.call in (get_principal, get_admin) and not d.body_params:
                continue
            return True
    return False


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _document_errors(operation: dict[str, Any], implied: set[int]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in implied:
        responses.setdefault(str(status), {})
    for key, response in responses.items():
        if not key.isdigit() or int(key) < 400:
            continue
        status = int(key)
        content = response.get("content") or {}
        if content and "application/json" not in content:
            continue  # a response that documents its own body (readiness's 503)
        if content and not _is_fastapi_validation(content["application/json"]):
            continue
        model = "ValidationProblem" if status == 422 else "Problem"
        response["content"] = {PROBLEM: {"schema": {"$ref": _REF.format(model=model)}}}
        if not response.get("description") or response["description"] in (
            "Validation Error",
            "Additional Response",
        ):
            response["description"] = DESCRIPTIONS.get(status, "An error (problem+json).")
    operation["responses"] = dict(sorted(responses.items()))


def _is_fastapi_validation(media: dict[str, Any]) -> bool:
    """FastAPI's own 422 body, or an empty schema it filled in for a declared status."""
    ref = media.get("schema", {}).get("$ref", "")
    return not media.get("schema") or ref.endswith("/HTTPValidationError")
