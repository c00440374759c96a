"""The API's own description, against a real server: /docs and /redoc work offline (every
asset they load comes from the server itself), the OpenAPI document describes the real
error bodies and the errors each route can return, and timestamps are RFC 3339."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.server import ServerProcess

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


class _Assets(HTMLParser):
    """Every URL a page makes the browser load: scripts, styles, icons, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("src", "href") and tag in ("script", "link", "img", "iframe"):
                self.urls.append(value)
            if value and tag == "redoc" and name == "spec-url":
                self.urls.append(value)


def _loaded_by(page: str) -> list[str]:
    parser = _Assets()
    parser.feed(page)
    # Swagger UI is told where the document is in its inline script.
    parser.urls += re.findall(r"url:\s*'([^']+)'", page)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_server(server: ServerProcess, page: str) -> None:
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        response = http.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        urls = _loaded_by(response.text)
        assert any(u.endswith(".js") for u in urls), urls
        assert "fonts.googleapis" not in response.text
        fetched = []
        for url in urls:
            absolute = urljoin(f"{server.http_url}{page}", url)
            assert urlsplit(absolute).netloc == urlsplit(server.http_url).netloc, url
            asset = http.get(absolute)
            assert asset.status_code == 200, (url, asset.status_code)
            assert asset.content, url
            fetched.append(asset)
            if absolute.endswith(".css"):
                # A stylesheet's own references are inline data, never another host.
                for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text):
                    assert ref.startswith("data:") or not urlsplit(ref).netloc, ref
    if page == "/docs":
        # No call out to the online validator either.
        assert '"validatorUrl": null' in response.text
        assert any(a.headers["content-type"].startswith("text/css") for a in fetched)


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


@pytest.fixture(scope="module")
def openapi(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.http_url}/openapi.json", timeout=30).json()


def test_every_error_response_is_a_documented_problem(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert {"code", "detail", "status", "title", "type"} <= set(schemas["Problem"]["properties"])
    assert "errors" in schemas["ValidationProblem"]["properties"]
    assert "HTTPValidationError" not in schemas
    for method, path, op in _operations(openapi):
        for status, response in op["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], (method, path, status)
            model = "ValidationProblem" if status == "422" else "Problem"
            assert content["application/problem+json"]["schema"]["$ref"].endswith(model)
            assert response["description"], (method, path, status)


def test_each_route_lists_the_errors_it_can_return(openapi: dict[str, Any]) -> None:
    public = {"/healthz", "/readyz"}
    for method, path, op in _operations(openapi):
        statuses = set(op["responses"])
        if path not in public:
            assert "401" in statuses, (method, path)
        if "{" in path:
            assert {"404", "422"} <= statuses, (method, path)
        if path.startswith(("/api/v1/tokens", "/api/v1/syncs", "/api/v1/tasks")):
            assert "403" in statuses, (method, path)
    ops = {(m, p): op for m, p, op in _operations(openapi)}
    upload = set(ops[("POST", "/api/v1/artefacts")]["responses"])
    assert {"400", "401", "413", "422", "507"} <= upload
    assert "409" in ops[("POST", "/api/v1/syncs")]["responses"]
    assert "409" in ops[("DELETE", "/api/v1/jobs/{job_id}")]["responses"]


def _matches(body: dict[str, Any], schema: dict[str, Any], doc: dict[str, Any]) -> None:
    """The body has every required member of the schema, with the declared JSON types."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for name in schema.get("required", []):
        assert name in body, (name, body)
    kinds = {"string": str, "integer": int, "array": list, "object": dict}
    for name, prop in schema.get("properties", {}).items():
        if name in body and prop.get("type") in kinds:
            assert isinstance(body[name], kinds[prop["type"]]), (name, body)


def test_real_error_bodies_match_the_document(
    server: ServerProcess, openapi: dict[str, Any], reader_token: str
) -> None:
    ops = {(m, p): op for m, p, op in _operations(openapi)}
    with server.http() as admin, server.http(reader_token) as reader:
        cases = [
            (httpx.get(f"{server.http_url}/api/v1/jobs", timeout=30), "GET", "/api/v1/jobs"),
            (admin.get("/api/v1/jobs/nope"), "GET", "/api/v1/jobs/{job_id}"),
            (admin.get("/api/v1/jobs", params={"limit": 0}), "GET", "/api/v1/jobs"),
            (reader.get("/api/v1/tokens"), "GET", "/api/v1/tokens"),
            (admin.post("/api/v1/tokens", json={"name": 1}), "POST", "/api/v1/tokens"),
        ]
        for response, method, path in cases:
            status = str(response.status_code)
            assert status in ops[(method, path)]["responses"], (method, path, status)
            assert response.headers["content-type"].startswith("application/problem+json")
            documented = ops[(method, path)]["responses"][status]["content"]
            _matches(response.json(), documented["application/problem+json"]["schema"], openapi)


def test_timestamps_are_rfc3339(server: ServerProcess, openapi: dict[str, Any]) -> None:
    with server.http() as admin:
        token = admin.post("/api/v1/tokens", json={"name": "stamped"}).json()
        export = admin.post("/api/v1/exports", json={"sql": "SELECT 1 AS one", "format": "csv"})
        job = admin.get(f"/api/v1/jobs/{export.json()['job_id']}").json()
        tables = admin.get("/api/v1/tables").json()
    for value in (token["created_at"], token["expires_at"], job["created_at"], job["updated_at"]):
        assert RFC3339.match(value), value
    assert all(RFC3339.match(t["last_modified"]) for t in tables if t["last_modified"])
    created = openapi["components"]["schemas"]["JobOut"]["properties"]["created_at"]
    assert created == {**created, "type": "string", "format": "date-time"}
