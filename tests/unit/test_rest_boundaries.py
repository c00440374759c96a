"""The REST boundary, in process: numbers out of range are 422 (never 500), names with
control characters or over 255 bytes are refused with nothing stored, /readyz answers
anyone but shows its checks to admins only, and no error body says anything of the
server's insides. (tests/security/test_boundaries.py checks the same against a real
`agentdata serve`, and the other channels.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentdata.bounds import MAX_INT64, MAX_SECONDS
from control_api.deps import get_probes
from tests.support.inprocess import ADMIN, RestClient, open_core

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestClient]:
    core = open_core(tmp_path_factory.mktemp("rest") / "data")
    yield RestClient(core)
    core.close()


def assert_clean_problem(r: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """A problem+json answer with the expected status whose detail starts with its code
    and which says nothing of the server (tracebacks, paths, Python version)."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["detail"].startswith(f"[{body['code']}] "), body
    for marker in ("Traceback", 'File "', ".py", sys.version, "Python 3.", REPO):
        assert marker not in r.text, (marker, r.text)
    return body


# -- numbers -------------------------------------------------------------------------
SYNC = '"name": "s1", "source": "DB.SC.T", "target": "x.t"'
INCREMENTAL = SYNC + ', "mode": "incremental", "cursor": "U"'

OUT_OF_RANGE = [
    ("/api/v1/tokens", f'{{"name": "t", "max_rows": {2**63}}}'),
    ("/api/v1/tokens", '{"name": "t", "max_rows": 0}'),
    ("/api/v1/tokens", '{"name": "t", "max_rows": -1}'),
    ("/api/v1/tokens", f'{{"name": "t", "ttl_seconds": {2**63}}}'),
    ("/api/v1/tokens", f'{{"name": "t", "ttl_seconds": {MAX_SECONDS + 1}}}'),
    ("/api/v1/tokens", '{"name": "t", "ttl_seconds": -5}'),
    ("/api/v1/tokens", '{"name": "t", "timeout_s": NaN}'),
    ("/api/v1/tokens", '{"name": "t", "timeout_s": Infinity}'),
    ("/api/v1/tokens", '{"name": "t", "timeout_s": -Infinity}'),
    ("/api/v1/tokens", '{"name": "t", "timeout_s": 1e308}'),
    ("/api/v1/tokens", '{"name": "t", "timeout_s": 0}'),
    ("/api/v1/jobs/some-job/events", f'{{"event": "progress", "rows": {2**63}}}'),
    ("/api/v1/jobs/some-job/events", '{"event": "progress", "bytes": -1}'),
    ("/api/v1/jobs/some-job/events", '{"event": "progress", "percent": NaN}'),
    ("/api/v1/jobs/some-job/events", '{"event": "progress", "percent": Infinity}'),
    ("/api/v1/syncs", f'{{{SYNC}, "schedule": {10**400}}}'),
    ("/api/v1/syncs", f'{{{SYNC}, "schedule": "{"9" * 400}s"}}'),
    ("/api/v1/syncs", f'{{{SYNC}, "schedule": 0}}'),
    ("/api/v1/syncs", f'{{{SYNC}, "reconcile_every": {2**63}}}'),
    ("/api/v1/syncs", f'{{{INCREMENTAL}, "lookback": NaN}}'),
    ("/api/v1/syncs", f'{{{INCREMENTAL}, "lookback": Infinity}}'),
    ("/api/v1/syncs", f'{{{INCREMENTAL}, "lookback": 1e300}}'),
    ("/api/v1/syncs", f'{{{INCREMENTAL}, "lookback": -1}}'),
]


@pytest.mark.parametrize(("url", "body"), OUT_OF_RANGE)
def test_out_of_range_numbers_are_422(api: RestClient, url: str, body: str) -> None:
    tokens, syncs = api.count("/api/v1/tokens"), api.count("/api/v1/syncs")
    problem = assert_clean_problem(api.post_raw(url, body), 422)
    assert problem["code"] == "invalid_argument"
    assert (api.count("/api/v1/tokens"), api.count("/api/v1/syncs")) == (tokens, syncs)


@pytest.mark.parametrize(
    "body",
    [
        {"schedule": 10**400},
        {"reconcile_every": 2**63},
        {"lookback": 1e300},
    ],
)
def test_out_of_range_numbers_in_a_sync_patch_are_422(
    api: RestClient, body: dict[str, Any]
) -> None:
    r = api.request("PATCH", "/api/v1/syncs/any", content=json.dumps(body).encode())
    assert assert_clean_problem(r, 422)["code"] == "invalid_argument"


@pytest.mark.parametrize("query", [f"limit={10**30}", f"offset={2**63}", "limit=0", "offset=-1"])
@pytest.mark.parametrize("url", ["/api/v1/jobs", "/api/v1/artefacts"])
def test_out_of_range_paging_is_422(api: RestClient, url: str, query: str) -> None:
    assert_clean_problem(api.request("GET", f"{url}?{query}"), 422)


def test_numbers_at_the_bounds_are_accepted(api: RestClient) -> None:
    r = api.request(
        "POST",
        "/api/v1/tokens",
        json={"name": "edge", "max_rows": MAX_INT64, "ttl_seconds": MAX_SECONDS, "timeout_s": 0.5},
    )
    assert r.status_code == 201, r.text
    assert r.json()["max_rows"] == MAX_INT64
    r = api.request(
        "POST",
        "/api/v1/syncs",
        json={
            "name": "edge",
            "source": "DB.SC.T",
            "target": "x.edge",
            "mode": "incremental",
            "cursor": "U",
            "lookback": MAX_INT64,
            "schedule": MAX_SECONDS,
            "reconcile_every": MAX_INT64,
        },
    )
    assert r.status_code == 201, r.text


# -- names ---------------------------------------------------------------------------
BAD_NAMES = [
    "nul\x00byte",
    "new\nline",
    "\x1b[31mred",
    "bidi\u202eoverride",
    "x" * 256,
    "é" * 128,  # 128 characters, 256 bytes
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_token_names_are_refused(api: RestClient, name: str) -> None:
    before = api.count("/api/v1/tokens")
    r = api.request("POST", "/api/v1/tokens", json={"name": name})
    assert assert_clean_problem(r, (400, 422))["code"] == "invalid_argument"
    assert api.count("/api/v1/tokens") == before


def test_a_token_name_of_255_bytes_is_fine(api: RestClient) -> None:
    r = api.request("POST", "/api/v1/tokens", json={"name": "é" * 127 + "x"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("name", BAD_NAMES)
def test_sync_target_names_are_refused(api: RestClient, name: str) -> None:
    before = api.count("/api/v1/syncs")
    target = 'x."' + name.replace('"', '""') + '"'
    spec = {"name": "bad-target", "source": "DB.SC.T", "target": target}
    r = api.request("POST", "/api/v1/syncs", json=spec)
    assert assert_clean_problem(r, (400, 422))["code"] == "invalid_argument"
    assert api.count("/api/v1/syncs") == before
    good = {**spec, "name": "good-target", "target": "x.good"}
    if api.request("GET", "/api/v1/syncs/good-target").status_code == 404:
        assert api.request("POST", "/api/v1/syncs", json=good).status_code == 201
    r = api.request("PATCH", "/api/v1/syncs/good-target", json={"target": target})
    assert assert_clean_problem(r, (400, 422))["code"] == "invalid_argument"
    assert api.request("GET", "/api/v1/syncs/good-target").json()["spec"]["target"] == "x.good"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_export_names_are_refused_before_any_job(api: RestClient, name: str) -> None:
    before = api.count("/api/v1/jobs")
    r = api.request(
        "POST", "/api/v1/exports", json={"sql": "SELECT 1", "format": "csv", "name": name}
    )
    body = assert_clean_problem(r, (400, 422))
    assert body["code"] == "invalid_argument", body
    # The name is what was refused (in the detail, or in the 422's error locations).
    assert "name" in body["detail"] or ["body", "name"] in [e["loc"] for e in body["errors"]]
    assert api.count("/api/v1/jobs") == before


def _multipart(filename: bytes) -> tuple[str, bytes]:
    boundary = "unit-boundary-42"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
        + filename
        + b'"\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
        + f"--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


@pytest.mark.parametrize("name", BAD_NAMES)
def test_upload_names_are_refused_and_nothing_is_stored(api: RestClient, name: str) -> None:
    before = api.count("/api/v1/artefacts")
    ctype, body = _multipart(name.encode())
    r = api.request("POST", "/api/v1/artefacts", content=body, headers={"Content-Type": ctype})
    problem = assert_clean_problem(r, 400)
    assert problem["code"] == "invalid_argument" and "artefact name" in problem["detail"]
    assert api.count("/api/v1/artefacts") == before
    assert list(api.core.artefacts.directory.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/jobs/some-job/events", {"event": "start", "task_id": "t\nid"}),
        ("/api/v1/maintenance/jobs/run", {"task_id": "t\x1bid"}),
    ],
)
def test_task_ids_with_control_characters_are_422(api: RestClient, url: str, body: dict) -> None:
    assert assert_clean_problem(api.request("POST", url, json=body), 422)["code"] == (
        "invalid_argument"
    )


# -- readiness -----------------------------------------------------------------------
def test_readyz_answers_anyone_but_shows_checks_to_admins_only(api: RestClient) -> None:
    reader = api.request("POST", "/api/v1/tokens", json={"name": "ready-reader"}).json()["token"]
    for token in (None, reader, "not-a-token"):
        r = api.request("GET", "/readyz", token=token)
        assert (r.status_code, r.json()) == (200, {"status": "ready"}), token
    r = api.request("GET", "/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok"}


def test_readyz_not_ready_is_503_with_details_for_admins(api: RestClient) -> None:
    def broker() -> None:
        raise ConnectionError("redis://10.1.2.3:6379 refused")

    api.app.dependency_overrides[get_probes] = lambda: {"broker": broker}
    try:
        anonymous = api.request("GET", "/readyz", token=None)
        admin = api.request("GET", "/readyz")
    finally:
        del api.app.dependency_overrides[get_probes]
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "not ready"})
    assert admin.status_code == 503
    assert admin.json()["checks"] == {"database": "ok", "broker": "error: ConnectionError"}


# -- errors --------------------------------------------------------------------------
def test_a_failure_inside_a_route_is_a_bare_500(
    api: RestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"disk full at {REPO}/data/data.duckdb ({sys.version})")

    monkeypatch.setattr(api.core.engine, "list_tables", boom)
    problem = assert_clean_problem(api.request("GET", "/api/v1/tables"), 500)
    assert problem == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "[internal] unexpected server error (see server log)",
        "code": "internal",
    }


@pytest.mark.parametrize(
    ("method", "url", "token", "status", "code"),
    [
        ("GET", "/api/v1/tokens", None, 401, "unauthenticated"),
        ("GET", "/api/v1/jobs/no-such-job", ADMIN, 404, "not_found"),
        ("GET", "/no/such/route", ADMIN, 404, "not_found"),
        ("PUT", "/api/v1/tokens", ADMIN, 405, "method_not_allowed"),
        ("POST", "/api/v1/tokens", ADMIN, 422, "invalid_argument"),
    ],
)
def test_every_error_body_starts_with_its_code(
    api: RestClient, method: str, url: str, token: str | None, status: int, code: str
) -> None:
    r = api.request(method, url, token=token, content=b"{not json")
    assert assert_clean_problem(r, status)["code"] == code
