"""The control plane's routes against a real core on a temp database, in this process:
tokens, tables, artefacts and jobs, and the shape of every error (problem+json whose
detail starts with its `[code]`). The end-to-end versions, against `agentdata serve`,
are in tests/control and tests/dataplane.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.inprocess import ADMIN, RestClient, open_core

DEMO_ROWS = 500


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestClient]:
    core = open_core(tmp_path_factory.mktemp("rest") / "data", demo_rows=DEMO_ROWS)
    yield RestClient(core)
    core.close()


@pytest.fixture(scope="module")
def alice(rest: RestClient) -> dict[str, Any]:
    return rest.create_token("reader", name="alice")


@pytest.fixture(scope="module")
def bob(rest: RestClient) -> dict[str, Any]:
    return rest.create_token("reader", name="bob")


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert `r` is a problem+json answer of `status` and `code`; answers its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["detail"].startswith(f"[{code}] "), body
    return body


# -- tokens ----------------------------------------------------------------------------
def test_a_created_token_shows_its_secret_once(rest: RestClient) -> None:
    created = rest.create_token("writer", name="once", tables=["demo.*"], max_rows=10)
    assert created["token"] and created["role"] == "writer"
    assert created["tables"] == ["demo.*"] and created["max_rows"] == 10
    assert created["created_by"] == "admin-bootstrap" and created["revoked_at"] is None
    listed = {t["id"]: t for t in rest.request("GET", "/api/v1/tokens").json()}
    assert created["id"] in listed
    assert all("token" not in t for t in listed.values())
    one = rest.request("GET", f"/api/v1/tokens/{created['id']}").json()
    assert one == {k: v for k, v in created.items() if k != "token"}
    assert created["token"] not in rest.request("GET", "/api/v1/tokens").text


def test_a_new_token_works_at_once_and_a_revoked_one_is_refused_at_once(
    rest: RestClient,
) -> None:
    created = rest.create_token("reader", name="short-lived")
    assert rest.request("GET", "/api/v1/tables", token=created["token"]).status_code == 200
    r = rest.request("DELETE", f"/api/v1/tokens/{created['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    body = problem(
        rest.request("GET", "/api/v1/tables", token=created["token"]), 401, "unauthenticated"
    )
    assert "revoked" in body["detail"]
    listed = {t["id"]: t for t in rest.request("GET", "/api/v1/tokens").json()}
    assert listed[created["id"]]["revoked_at"] is not None


def test_only_admins_manage_tokens(rest: RestClient, alice: dict[str, Any]) -> None:
    writer = rest.create_token("writer", name="w")["token"]
    for token in (alice["token"], writer):
        r = rest.request("POST", "/api/v1/tokens", token=token, json={"name": "x", "role": "admin"})
        problem(r, 403, "permission_denied")
        problem(rest.request("GET", "/api/v1/tokens", token=token), 403, "permission_denied")
        r = rest.request("DELETE", f"/api/v1/tokens/{alice['id']}", token=token)
        problem(r, 403, "permission_denied")
    assert rest.request("GET", "/api/v1/tables", token=alice["token"]).status_code == 200


def test_token_errors(rest: RestClient) -> None:
    before = rest.count("/api/v1/tokens")
    problem(
        rest.request("POST", "/api/v1/tokens", json={"name": "x", "role": "root"}),
        422,
        "invalid_argument",
    )
    problem(rest.request("DELETE", "/api/v1/tokens/does-not-exist"), 404, "not_found")
    problem(rest.request("GET", "/api/v1/tokens/does-not-exist"), 404, "not_found")
    assert rest.count("/api/v1/tokens") == before


# -- tables -------------------------------------------------------------------------------
def test_tables_lists_what_the_token_may_read(rest: RestClient) -> None:
    everything = {(t["schema"], t["name"]) for t in rest.request("GET", "/api/v1/tables").json()}
    assert {("demo", "customers"), ("demo", "products"), ("demo", "orders")} <= everything
    limited = rest.create_token("reader", name="lim", tables=["demo.customers"])["token"]
    tables = rest.request("GET", "/api/v1/tables", token=limited).json()
    assert [(t["schema"], t["name"]) for t in tables] == [("demo", "customers")]
    (customers,) = tables
    assert customers["rows"] > 0 and customers["location"] == "duckdb"
    assert customers["freshness"]["last_modified"].endswith("Z")
    assert "id" in [c["name"] for c in customers["columns"]]


# -- artefacts ----------------------------------------------------------------------------
def upload(
    rest: RestClient, token: str, data: bytes, name: str = "report.csv", **kwargs: Any
) -> httpx.Response:
    return rest.request(
        "POST",
        "/api/v1/artefacts",
        token=token,
        files={"file": (name, data, "text/csv")},
        **kwargs,
    )


def test_artefact_round_trip(rest: RestClient) -> None:
    data = b"id,name\n1,caf\xc3\xa9\n"
    r = upload(
        rest,
        ADMIN,
        data,
        "données.csv",
        headers={"X-Checksum-SHA256": hashlib.sha256(data).hexdigest()},
    )
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["size"] == len(data) and art["sha256"] == hashlib.sha256(data).hexdigest()
    assert art["name"] == "données.csv" and art["source"] == "upload"
    on_disk = rest.core.artefacts.directory / art["id"]
    assert on_disk.read_bytes() == data
    assert rest.request("GET", f"/api/v1/artefacts/{art['id']}").json() == art
    listed = rest.request("GET", "/api/v1/artefacts", params={"name": "donn"}).json()
    assert [a["id"] for a in listed["items"]] == [art["id"]] and listed["total"] == 1
    content = rest.request("GET", f"/api/v1/artefacts/{art['id']}/content")
    assert content.status_code == 200 and content.content == data
    assert content.headers["etag"] == f'"{art["sha256"]}"'
    assert content.headers["content-disposition"] == (
        "attachment; filename=\"donn_es.csv\"; filename*=UTF-8''donn%C3%A9es.csv"
    )
    part = rest.request(
        "GET", f"/api/v1/artefacts/{art['id']}/content", headers={"Range": "bytes=3-6"}
    )
    assert part.status_code == 206 and part.content == data[3:7]
    r = rest.request(
        "GET",
        f"/api/v1/artefacts/{art['id']}/content",
        headers={"If-None-Match": f'"{art["sha256"]}"'},
    )
    assert r.status_code == 304 and r.content == b""
    assert rest.request("DELETE", f"/api/v1/artefacts/{art['id']}").status_code == 204
    problem(rest.request("GET", f"/api/v1/artefacts/{art['id']}"), 404, "not_found")
    problem(rest.request("GET", f"/api/v1/artefacts/{art['id']}/content"), 404, "not_found")
    assert not on_disk.exists()


def test_a_checksum_mismatch_stores_nothing(rest: RestClient) -> None:
    before = rest.count("/api/v1/artefacts")
    files = sorted(rest.core.artefacts.directory.rglob("*"))
    data = b"some bytes"
    r = upload(rest, ADMIN, data, headers={"X-Checksum-SHA256": hashlib.sha256(b"x").hexdigest()})
    assert problem(r, 400, "checksum_mismatch")["actual"] == hashlib.sha256(data).hexdigest()
    r = upload(rest, ADMIN, data, headers={"X-Checksum-SHA256": "not-hex"})
    problem(r, 400, "invalid_argument")
    assert rest.count("/api/v1/artefacts") == before
    assert sorted(rest.core.artefacts.directory.rglob("*")) == files


def test_a_token_sees_only_its_own_artefacts(
    rest: RestClient, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    mine = upload(rest, alice["token"], b"alice's").json()
    assert mine["owner"] == alice["id"]
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        r = rest.request(method, f"/api/v1/artefacts/{mine['id']}{suffix}", token=bob["token"])
        problem(r, 404, "not_found")
    theirs = rest.request("GET", "/api/v1/artefacts", token=bob["token"]).json()
    assert mine["id"] not in [a["id"] for a in theirs["items"]]
    r = rest.request("GET", "/api/v1/artefacts", token=bob["token"], params={"owner": alice["id"]})
    problem(r, 403, "permission_denied")
    admin_view = rest.request("GET", "/api/v1/artefacts", params={"owner": alice["id"]}).json()
    assert [a["id"] for a in admin_view["items"]] == [mine["id"]]
    usage = rest.request("GET", "/api/v1/artefacts/usage", token=alice["token"]).json()
    assert [(o["owner"], o["count"], o["bytes"]) for o in usage["owners"]] == [
        (alice["id"], 1, len(b"alice's"))
    ]


@pytest.mark.parametrize("artefact_id", ["0" * 32, "not-an-id", "..%2F..%2Fmeta.sqlite3"])
def test_unknown_and_malformed_artefact_ids_are_404(rest: RestClient, artefact_id: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        problem(rest.request(method, f"/api/v1/artefacts/{artefact_id}{suffix}"), 404, "not_found")


def test_artefact_listing_pages(rest: RestClient) -> None:
    token = rest.create_token("reader", name="pager")
    ids = [
        upload(rest, token["token"], f"file {i}".encode(), f"p{i}.txt").json()["id"]
        for i in range(5)
    ]
    page = rest.request(
        "GET", "/api/v1/artefacts", token=token["token"], params={"limit": 2, "offset": 1}
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [a["id"] for a in page["items"]] == ids[::-1][1:3]  # newest first


# -- jobs -----------------------------------------------------------------------------------
def test_jobs_list_filters_pages_and_hides_others_jobs(
    rest: RestClient, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    jobs = rest.core.jobs
    mine = [jobs.create("export", {"sql": f"SELECT {i}"}, owner=alice["id"]) for i in range(3)]
    sync = jobs.create("sync", {"table": "demo.orders"}, owner=alice["id"])
    theirs = jobs.create("export", {"sql": "SELECT 'b'"}, owner=bob["id"])

    def get(url: str, **params: Any) -> httpx.Response:
        return rest.request("GET", url, token=alice["token"], params=params)

    page = get("/api/v1/jobs").json()
    assert page["total"] == 4
    assert [j["id"] for j in page["items"]] == [sync.id, *[j.id for j in mine[::-1]]]
    exports = get("/api/v1/jobs", kind="export").json()
    assert {j["id"] for j in exports["items"]} == {j.id for j in mine}
    page2 = get("/api/v1/jobs", limit=2, offset=2).json()
    assert [j["id"] for j in page2["items"]] == [mine[1].id, mine[0].id]
    assert (page2["total"], page2["limit"], page2["offset"]) == (4, 2, 2)
    assert get("/api/v1/jobs", state="running").json()["total"] == 0
    problem(get(f"/api/v1/jobs/{theirs.id}"), 404, "not_found")
    problem(get("/api/v1/jobs", owner=bob["id"]), 403, "permission_denied")
    problem(get("/api/v1/jobs", kind="bogus"), 422, "invalid_argument")
    assert get(f"/api/v1/jobs/{mine[0].id}").json()["params"] == {"sql": "SELECT 0"}
    everyone = rest.request("GET", "/api/v1/jobs", params={"limit": 1000}).json()
    assert {theirs.id, sync.id} <= {j["id"] for j in everyone["items"]}


def test_a_queued_job_is_cancelled_at_once_and_a_finished_one_is_409(
    rest: RestClient, alice: dict[str, Any], bob: dict[str, Any]
) -> None:
    job = rest.core.jobs.create("export", {"sql": "SELECT 1"}, owner=alice["id"])
    problem(rest.request("DELETE", f"/api/v1/jobs/{job.id}", token=bob["token"]), 404, "not_found")
    r = rest.request("DELETE", f"/api/v1/jobs/{job.id}", token=alice["token"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    problem(rest.request("DELETE", f"/api/v1/jobs/{job.id}", token=alice["token"]), 409, "conflict")


def test_job_events_move_a_job_to_its_end(rest: RestClient, alice: dict[str, Any]) -> None:
    job = rest.core.jobs.create("export", {"sql": "SELECT 1"}, owner=alice["id"])
    url = f"/api/v1/jobs/{job.id}/events"

    def event(**body: Any) -> httpx.Response:
        return rest.request("POST", url, token=alice["token"], json=body)

    assert event(event="start", task_id="t-1").json()["state"] == "running"
    progressed = event(event="progress", rows=10, bytes=100, percent=50).json()
    assert (progressed["progress_rows"], progressed["percent"]) == (10, 50)
    problem(event(event="failed"), 400, "invalid_argument")
    done = event(event="succeeded", result={"rows": 20}).json()
    assert done["state"] == "succeeded" and done["result"] == {"rows": 20}
    problem(event(event="progress", rows=1), 409, "conflict")


# -- error shapes -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url", "token", "status", "code"),
    [
        ("GET", "/api/v1/tables", None, 401, "unauthenticated"),
        ("GET", "/api/v1/tables", "not-a-token", 401, "unauthenticated"),
        ("GET", "/api/v1/jobs/no-such-job", ADMIN, 404, "not_found"),
        ("GET", "/api/v1/no/such/route", ADMIN, 404, "not_found"),
        ("GET", "/api/v1/jobs?limit=0", ADMIN, 422, "invalid_argument"),
        ("GET", "/api/v1/artefacts?offset=-1", ADMIN, 422, "invalid_argument"),
        ("PUT", "/api/v1/tokens", ADMIN, 405, "method_not_allowed"),
    ],
)
def test_errors_are_problems_with_their_code(
    rest: RestClient, method: str, url: str, token: str | None, status: int, code: str
) -> None:
    problem(rest.request(method, url, token=token), status, code)


def test_a_422_names_the_field_it_refused(rest: RestClient) -> None:
    r = rest.request("POST", "/api/v1/tokens", json={"name": "x", "max_rows": -1})
    body = problem(r, 422, "invalid_argument")
    assert ["body", "max_rows"] in [e["loc"] for e in body["errors"]]


def test_healthz_needs_no_token(rest: RestClient) -> None:
    r = rest.request("GET", "/healthz", token=None)
    assert r.status_code == 200 and r.json()["status"] == "ok"
