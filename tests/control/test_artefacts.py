"""Artefacts end to end against a real `agentdata serve`: streaming upload and download,
size limits that count bytes (not headers), checksums, hostile names, disconnects,
ranges, ETags, ownership, usage and quota, the CLI, and the store's Python API."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agentdata.artefacts import ArtefactStore, safe_name
from agentdata.errors import (
    ChecksumMismatch,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
)
from agentdata.jobs import JobStore
from agentdata.meta import MetaStore
from agentdata.timestamps import seconds
from tests.support.server import REPO, ServerProcess, start_server

MiB = 1024 * 1024
SMALL_LIMIT = 1 * MiB
SMALL_QUOTA = 3 * MiB


# -- helpers -------------------------------------------------------------------------
def multipart(
    filename: str | bytes,
    chunks: Iterable[bytes],
    *,
    fields: dict[str, str] | None = None,
    content_type: str = "application/octet-stream",
    extra_part_headers: str = "",
    boundary: str = "test-boundary-7d3f",
) -> tuple[str, Iterator[bytes]]:
    """A multipart/form-data body as a generator (never all in memory)."""
    fname = filename if isinstance(filename, bytes) else filename.encode()

    def body() -> Iterator[bytes]:
        for k, v in (fields or {}).items():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            ).encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="'.encode()
            + fname
            + f'"\r\nContent-Type: {content_type}\r\n{extra_part_headers}\r\n'.encode()
        )
        yield from chunks
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()


def upload(
    srv: ServerProcess, token: str, content: bytes, name: str = "f.bin", **kwargs: Any
) -> httpx.Response:
    """POST one file (httpx builds the multipart body); kwargs go to httpx (data=, headers=)."""
    with srv.http(token) as c:
        return c.post("/api/v1/artefacts", files={"file": (name, content)}, **kwargs)


def artefact_files(srv: ServerProcess) -> list[str]:
    return sorted(os.listdir(srv.data_dir / "artefacts"))


def temp_files(srv: ServerProcess) -> list[str]:
    return [n for n in artefact_files(srv) if n.startswith(".tmp-")]


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def raw_http(
    port: int, head: str, body: Iterable[bytes] = (), timeout: float = 30
) -> tuple[int, bytes]:
    """Send a hand-made request and read the first response while the body is still
    being sent (as a real client would); returns (status, response bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send() -> None:
        try:
            s.sendall(head.encode())
            for chunk in body:
                s.sendall(chunk)
        except OSError:
            pass  # the server answered and closed early

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    try:
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?im)^content-length: *(\d+)", data[:head_end])
                if m and len(data) >= head_end + 4 + int(m.group(1)):
                    break
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    finally:
        s.close()
        sender.join(timeout)
    m = re.match(rb"HTTP/1\.1 (\d{3})", data)
    assert m, f"no HTTP response: {data[:200]!r}"
    return int(m.group(1)), data


class RssPeak:
    """Samples a process's resident memory in the background; `.peak` is the maximum."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a 1 MiB upload limit, a 3 MiB quota and a 2 s idle timeout."""
    srv = start_server(
        tmp_path_factory.mktemp("small") / "data",
        demo_rows=1000,
        env={
            "AGENTDATA_MAX_UPLOAD_BYTES": str(SMALL_LIMIT),
            "AGENTDATA_ARTEFACT_QUOTA_BYTES": str(SMALL_QUOTA),
            "AGENTDATA_UPLOAD_IDLE_TIMEOUT_S": "2",
        },
    )
    yield srv
    srv.stop()


# -- streaming round trip -------------------------------------------------------------
def test_200mb_round_trip_streams_without_growing_server_memory(
    server: ServerProcess, admin: str
) -> None:
    size = 200 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            yield chunk

    upload(server, admin, b"warm-up")  # load every code path before the baseline
    ctype, body = multipart("big.bin", chunks())
    with server.http(admin) as c, RssPeak(server.proc.pid) as up:
        r = c.post("/api/v1/artefacts", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["size"] == size
    assert art["sha256"] == digest.hexdigest()
    assert art["name"] == "big.bin" and art["source"] == "upload"
    on_disk = server.data_dir / "artefacts" / art["id"]
    assert on_disk.stat().st_size == size
    assert on_disk.stat().st_mode & 0o777 == 0o600
    # The whole file passed through the server; its memory must not have held it.
    assert up.growth < 64 * MiB, f"server RSS grew {up.growth / MiB:.0f} MiB for a 200 MiB upload"

    back = hashlib.sha256()
    received = 0
    with (
        server.http(admin) as c,
        RssPeak(server.proc.pid) as down,
        c.stream("GET", f"/api/v1/artefacts/{art['id']}/content") as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-length"] == str(size)
        assert r.headers["etag"] == f'"{digest.hexdigest()}"'
        for chunk in r.iter_bytes():
            back.update(chunk)
            received += len(chunk)
    assert received == size and back.hexdigest() == digest.hexdigest()
    assert down.growth < 64 * MiB, f"server RSS grew {down.growth / MiB:.0f} MiB on download"
    with server.http(admin) as c:
        assert c.delete(f"/api/v1/artefacts/{art['id']}").status_code == 204
    assert not on_disk.exists()


def test_upload_answers_metadata_and_content_headers(server: ServerProcess, admin: str) -> None:
    data = b"id,name\n1,caf\xc3\xa9\n"
    r = upload(
        server,
        admin,
        data,
        name="données.csv",
        data={"content_type": "text/csv; charset=utf-8"},
        headers={"X-Checksum-SHA256": hashlib.sha256(data).hexdigest().upper()},
    )
    assert r.status_code == 201, r.text
    art = r.json()
    assert set(art) == {
        "id", "name", "content_type", "size", "sha256", "owner",
        "created_at", "expires_at", "source", "job_id",
    }  # fmt: skip
    assert art["name"] == "données.csv"
    assert art["content_type"] == "text/csv; charset=utf-8"
    assert art["owner"] == "admin-bootstrap" and art["expires_at"] is None
    with server.http(admin) as c:
        assert c.get(f"/api/v1/artefacts/{art['id']}").json() == art
        r = c.get(f"/api/v1/artefacts/{art['id']}/content")
    assert r.content == data
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"donn_es.csv\"; filename*=UTF-8''donn%C3%A9es.csv"
    )


# -- size limits ---------------------------------------------------------------------
def test_declared_oversize_is_refused_before_the_body_is_sent(small: ServerProcess) -> None:
    head = (
        "POST /api/v1/artefacts HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {small.admin_token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {50 * MiB}\r\nExpect: 100-continue\r\n\r\n"
    )
    status, response = raw_http(small.http_port, head, timeout=10)
    assert status == 413
    assert b'"code":"payload_too_large"' in response
    assert b"100 Continue" not in response  # the client was never invited to send the body


def test_chunked_upload_over_the_limit_is_413_and_leaves_nothing(
    small: ServerProcess,
) -> None:
    before = artefact_files(small)
    ctype, body = multipart("big.bin", (os.urandom(256 * 1024) for _ in range(12)))  # 3 MiB
    with small.http() as c:
        r = c.post("/api/v1/artefacts", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"
    assert r.json()["limit_bytes"] == SMALL_LIMIT
    assert artefact_files(small) == before and temp_files(small) == []


def test_honest_content_length_under_the_header_check_still_counted(small: ServerProcess) -> None:
    """1.5 MiB passes the Content-Length pre-check (limit + form overhead) but the bytes
    counted while streaming are over the 1 MiB limit."""
    data = os.urandom(SMALL_LIMIT + SMALL_LIMIT // 2)
    r = upload(small, small.admin_token, data)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert temp_files(small) == []


def test_exactly_the_limit_is_accepted(small: ServerProcess) -> None:
    data = os.urandom(SMALL_LIMIT)
    r = upload(small, small.admin_token, data)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == SMALL_LIMIT
    with small.http() as c:
        assert c.delete(f"/api/v1/artefacts/{r.json()['id']}").status_code == 204


def test_lying_part_content_length_is_not_trusted(small: ServerProcess) -> None:
    """The file part claims 100 bytes but carries 3 MiB: the counted bytes decide."""
    ctype, body = multipart(
        "liar.bin",
        (os.urandom(MiB) for _ in range(3)),
        extra_part_headers="Content-Length: 100\r\n",
    )
    with small.http() as c:
        r = c.post("/api/v1/artefacts", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert temp_files(small) == []


def test_lying_request_content_length_stores_nothing(small: ServerProcess) -> None:
    """The request claims 2000 bytes and then sends 3 MiB: the server reads exactly
    what was declared, finds the multipart body cut short, and stores nothing."""
    before = artefact_files(small)
    ctype, body = multipart("liar.bin", (os.urandom(MiB) for _ in range(3)))
    head = (
        "POST /api/v1/artefacts HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {small.admin_token}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: 2000\r\n\r\n"
    )
    status, response = raw_http(small.http_port, head, body)
    assert status == 400
    assert b"incomplete multipart body" in response
    assert artefact_files(small) == before and temp_files(small) == []
    with small.http() as c:  # still serving
        assert c.get("/api/v1/artefacts").status_code == 200


# -- checksum, names, malformed bodies -----------------------------------------------
def test_checksum_mismatch_is_400_and_stores_nothing(server: ServerProcess, admin: str) -> None:
    before = artefact_files(server)
    data = os.urandom(100_000)
    r = upload(server, admin, data, headers={"X-Checksum-SHA256": hashlib.sha256(b"x").hexdigest()})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "checksum_mismatch"
    assert body["actual"] == hashlib.sha256(data).hexdigest()
    assert artefact_files(server) == before
    r = upload(server, admin, data, headers={"X-Checksum-SHA256": "not-hex"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/absolute/path/.bashrc", "bashrc"),
        ("..", "artefact"),
        ("   ...hidden", "hidden"),
        ("", "artefact"),
    ],
)
def test_hostile_filenames_are_metadata_only(
    server: ServerProcess, admin: str, raw: str, expected: str
) -> None:
    r = upload(server, admin, b"payload", name=raw)
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["name"] == expected
    assert re.fullmatch(r"[0-9a-f]{32}", art["id"])
    assert (server.data_dir / "artefacts" / art["id"]).read_bytes() == b"payload"
    assert not (server.data_dir.parent / "etc").exists()
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) for n in artefact_files(server)), artefact_files(
        server
    )


def test_raw_nul_byte_and_300_character_names_are_refused(
    server: ServerProcess, admin: str
) -> None:
    with server.http(admin) as c:
        total_before = c.get("/api/v1/artefacts").json()["total"]
    files_before = artefact_files(server)
    for raw in (b"evil\x00.sh", b"x" * 300 + b".parquet", "é".encode() * 200):
        ctype, body = multipart(raw, [b"data"])
        with server.http(admin) as c:
            r = c.post("/api/v1/artefacts", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "invalid_argument"
        assert r.json()["detail"].startswith("[invalid_argument] artefact name ")
    with server.http(admin) as c:
        assert c.get("/api/v1/artefacts").json()["total"] == total_before
    assert artefact_files(server) == files_before


def test_malformed_bodies_are_400(server: ServerProcess, admin: str) -> None:
    with server.http(admin) as c:
        r = c.post("/api/v1/artefacts", content=b"just bytes")
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
        r = c.post("/api/v1/artefacts", data={"source": "upload"}, files={"other": ("a", b"x")})
        assert r.status_code == 400 and "no `file` part" in r.json()["detail"]
        r = c.post("/api/v1/artefacts", files={"file": ("a", b"x")}, data={"source": "elsewhere"})
        assert r.status_code == 400 and "source" in r.json()["detail"]
        r = c.post("/api/v1/artefacts", files={"file": ("a", b"x")}, data={"expires_in_s": "soon"})
        assert r.status_code == 400
    assert temp_files(server) == []


# -- disconnects and stalls ---------------------------------------------------------------
def test_client_disconnect_mid_upload_leaves_nothing(server: ServerProcess, admin: str) -> None:
    with server.http(admin) as c:
        total_before = c.get("/api/v1/artefacts").json()["total"]
    ctype, body = multipart("half.bin", (os.urandom(MiB) for _ in range(50)))
    head = (
        "POST /api/v1/artefacts HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {admin}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {60 * MiB}\r\n\r\n"
    )
    s = socket.create_connection(("127.0.0.1", server.http_port))
    s.sendall(head.encode())
    sent = 0
    for chunk in body:
        s.sendall(chunk)
        sent += len(chunk)
        if sent > 4 * MiB:
            break
    wait_for(lambda: temp_files(server) != [], what="the upload's temp file")
    s.close()  # half a body, then gone
    wait_for(lambda: temp_files(server) == [], what="the temp file to be removed")
    with server.http(admin) as c:
        assert c.get("/api/v1/artefacts").json()["total"] == total_before
    assert "client disconnected" in server.log()


def test_stalled_upload_times_out(small: ServerProcess) -> None:
    ctype, _ = multipart("x", [])
    head = (
        "POST /api/v1/artefacts HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {small.admin_token}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: 5000\r\n\r\n"
    )
    # Part of the body, then nothing more: the idle timeout (2 s) answers.
    status, response = raw_http(small.http_port, head, [b"--test-boundary-7d3f\r\n"], timeout=20)
    assert status == 408
    assert b'"code":"request_timeout"' in response
    wait_for(lambda: temp_files(small) == [], what="the temp file to be removed")


# -- ranges and ETags ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranged(server: ServerProcess) -> tuple[dict[str, Any], bytes]:
    data = os.urandom(10_000)
    r = upload(server, server.admin_token, data, name="ranged.bin")
    assert r.status_code == 201
    return r.json(), data


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),  # first bytes
        ("bytes=4000-5999", 4000, 5999),  # middle
        ("bytes=-500", 9500, 9999),  # suffix
        ("bytes=9990-", 9990, 9999),  # open-ended
        ("bytes=9000-20000", 9000, 9999),  # end clipped to the size
        ("bytes=-50000", 0, 9999),  # suffix longer than the file
    ],
)
def test_single_range_is_206(
    server: ServerProcess, ranged: tuple[dict[str, Any], bytes], header: str, first: int, last: int
) -> None:
    art, data = ranged
    with server.http() as c:
        r = c.get(f"/api/v1/artefacts/{art['id']}/content", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {first}-{last}/10000"
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.content == data[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-20010", "bytes=-0"])
def test_unsatisfiable_range_is_416(
    server: ServerProcess, ranged: tuple[dict[str, Any], bytes], header: str
) -> None:
    art, _ = ranged
    with server.http() as c:
        r = c.get(f"/api/v1/artefacts/{art['id']}/content", headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */10000"
    assert r.json()["code"] == "range_not_satisfiable"


def test_multiple_ranges_stale_if_range_and_junk_get_the_whole_file(
    server: ServerProcess, ranged: tuple[dict[str, Any], bytes]
) -> None:
    art, data = ranged
    url = f"/api/v1/artefacts/{art['id']}/content"
    with server.http() as c:
        for headers in (
            {"Range": "bytes=0-1,5-6"},
            {"Range": "bytes=0-9", "If-Range": '"someotheretag"'},
            {"Range": "pages=1-2"},
        ):
            r = c.get(url, headers=headers)
            assert r.status_code == 200 and r.content == data, headers
        r = c.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{art["sha256"]}"'})
        assert r.status_code == 206 and r.content == data[:10]


def test_etag_and_if_none_match(
    server: ServerProcess, ranged: tuple[dict[str, Any], bytes]
) -> None:
    art, data = ranged
    url = f"/api/v1/artefacts/{art['id']}/content"
    etag = f'"{art["sha256"]}"'
    with server.http() as c:
        first = c.get(url)
        assert first.headers["etag"] == etag
        for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            r = c.get(url, headers={"If-None-Match": inm})
            assert r.status_code == 304, inm
            assert r.content == b"" and r.headers["etag"] == etag
        r = c.get(url, headers={"If-None-Match": '"different"'})
        assert r.status_code == 200 and r.content == data


# -- ownership, listing, usage, quota -----------------------------------------------------
def test_a_token_sees_only_its_own_artefacts(server: ServerProcess, admin: str) -> None:
    alice = server.create_token("reader", name="alice")
    bob = server.create_token("reader", name="bob")
    r = upload(server, alice["token"], b"alice's secret", name="alice.txt")
    assert r.status_code == 201
    art = r.json()
    assert art["owner"] == alice["id"]
    with server.http(bob["token"]) as c:
        for method, path in (
            ("GET", f"/api/v1/artefacts/{art['id']}"),
            ("GET", f"/api/v1/artefacts/{art['id']}/content"),
            ("DELETE", f"/api/v1/artefacts/{art['id']}"),
        ):
            r = c.request(method, path)
            assert r.status_code == 404 and r.json()["code"] == "not_found", (method, path)
        assert c.get("/api/v1/artefacts").json()["total"] == 0
        r = c.get("/api/v1/artefacts", params={"owner": alice["id"]})
        assert r.status_code == 403
    with server.http(alice["token"]) as c:
        page = c.get("/api/v1/artefacts").json()
        assert [a["id"] for a in page["items"]] == [art["id"]]
        assert c.get(f"/api/v1/artefacts/{art['id']}/content").content == b"alice's secret"
    with server.http(admin) as c:
        page = c.get("/api/v1/artefacts", params={"owner": alice["id"]}).json()
        assert [a["id"] for a in page["items"]] == [art["id"]]
        assert c.get(f"/api/v1/artefacts/{art['id']}").status_code == 200
    with server.http(alice["token"]) as c:
        assert c.delete(f"/api/v1/artefacts/{art['id']}").status_code == 204
        assert c.get(f"/api/v1/artefacts/{art['id']}").status_code == 404


def test_listing_pages_and_filters(server: ServerProcess) -> None:
    carol = server.create_token("writer", name="carol")
    ids = [
        upload(server, carol["token"], f"row {i}".encode(), name=f"report-{i}.txt").json()["id"]
        for i in range(5)
    ]
    upload(server, carol["token"], b"other", name="summary.txt")
    with server.http(carol["token"]) as c:
        page = c.get("/api/v1/artefacts", params={"name": "report-", "limit": 2}).json()
        assert page["total"] == 5 and page["limit"] == 2
        assert [a["id"] for a in page["items"]] == ids[::-1][:2]  # newest first
        page2 = c.get("/api/v1/artefacts", params={"name": "report-", "limit": 2, "offset": 4})
        assert [a["id"] for a in page2.json()["items"]] == [ids[0]]
        assert c.get("/api/v1/artefacts", params={"source": "export"}).json()["total"] == 0
        assert c.get("/api/v1/artefacts", params={"source": "upload"}).json()["total"] == 6
        r = c.get("/api/v1/artefacts", params={"limit": 0})
        assert r.status_code == 422 and r.json()["code"] == "invalid_argument"


def test_usage_per_owner_and_total(server: ServerProcess, admin: str) -> None:
    dave = server.create_token("reader", name="dave")
    for n in (1000, 2500):
        assert upload(server, dave["token"], os.urandom(n)).status_code == 201
    with server.http(dave["token"]) as c:
        mine = c.get("/api/v1/artefacts/usage").json()
    assert mine["owners"] == [
        {
            "owner": dave["id"],
            "count": 2,
            "bytes": 3500,
            "quota_bytes": mine["quota_bytes"],
            "remaining_bytes": mine["quota_bytes"] - 3500,
        }
    ]
    assert mine["total"]["count"] == 2 and mine["total"]["bytes"] == 3500
    with server.http(admin) as c:
        everyone = c.get("/api/v1/artefacts/usage").json()
        listed = c.get("/api/v1/artefacts", params={"limit": 1000}).json()
    assert dave["id"] in {o["owner"] for o in everyone["owners"]}
    assert (
        everyone["total"]["bytes"]
        == sum(o["bytes"] for o in everyone["owners"]) + everyone["total"]["expired_bytes"]
    )
    assert (
        everyone["total"]["bytes"]
        == sum(a["size"] for a in listed["items"]) + everyone["total"]["expired_bytes"]
    )
    stored = sum(
        (server.data_dir / "artefacts" / n).stat().st_size
        for n in artefact_files(server)
        if not n.startswith(".")
    )
    assert stored == everyone["total"]["bytes"]


def test_quota_per_owner(small: ServerProcess) -> None:
    erin = small.create_token("writer", name="erin")
    ids = []
    for _ in range(3):  # exactly 3 MiB: the quota
        r = upload(small, erin["token"], os.urandom(MiB))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = upload(small, erin["token"], b"one byte too many")
    assert r.status_code == 507
    assert r.json()["code"] == "quota_exceeded"
    assert temp_files(small) == []
    # Another owner is not affected by erin's usage.
    frank = small.create_token("writer", name="frank")
    assert upload(small, frank["token"], b"fine").status_code == 201
    with small.http(erin["token"]) as c:
        usage = c.get("/api/v1/artefacts/usage").json()["owners"][0]
        assert usage["bytes"] == 3 * MiB and usage["remaining_bytes"] == 0
        assert c.delete(f"/api/v1/artefacts/{ids[0]}").status_code == 204
    assert upload(small, erin["token"], b"room again").status_code == 201


def test_expiry_hides_the_artefact(server: ServerProcess, admin: str) -> None:
    r = upload(server, admin, b"short-lived", data={"expires_in_s": "1"})
    assert r.status_code == 201
    art = r.json()
    assert seconds(art["expires_at"]) == pytest.approx(seconds(art["created_at"]) + 1, abs=0.01)
    with server.http(admin) as c:
        assert c.get(f"/api/v1/artefacts/{art['id']}").status_code == 200
        # From the moment it states, the artefact is gone at once (no clean-up run needed).
        wait_for(lambda: time.time() > seconds(art["expires_at"]), what="the expiry time")
        assert c.get(f"/api/v1/artefacts/{art['id']}").status_code == 404
        assert c.get(f"/api/v1/artefacts/{art['id']}/content").status_code == 404
        ids = [a["id"] for a in c.get("/api/v1/artefacts", params={"limit": 1000}).json()["items"]]
        assert art["id"] not in ids
        assert c.get("/api/v1/artefacts/usage").json()["total"]["expired_count"] >= 1
        # Expired but not yet cleaned up: its owner can still delete it.
        assert c.delete(f"/api/v1/artefacts/{art['id']}").status_code == 204


def test_export_artefact_belongs_to_the_jobs_owner(server: ServerProcess, admin: str) -> None:
    grace = server.create_token("reader", name="grace")
    jobs = JobStore(MetaStore(server.data_dir / "meta.sqlite3"))
    job = jobs.create("export", {"sql": "SELECT 1", "format": "csv"}, owner=grace["id"])
    # A worker (admin token) uploads the export result for grace's job.
    r = upload(
        server,
        admin,
        b"a\n1\n",
        name="export.csv",
        data={"source": "export", "job_id": job.id, "content_type": "text/csv"},
    )
    assert r.status_code == 201, r.text
    art = r.json()
    assert art["owner"] == grace["id"] and art["job_id"] == job.id and art["source"] == "export"
    assert seconds(art["expires_at"]) == pytest.approx(
        seconds(art["created_at"]) + 24 * 3600, abs=1
    )
    with server.http(grace["token"]) as c:
        page = c.get("/api/v1/artefacts", params={"source": "export"}).json()
        assert [a["id"] for a in page["items"]] == [art["id"]]
    r = upload(server, admin, b"x", data={"source": "export", "job_id": "0" * 32})
    assert r.status_code == 400 and "no job" in r.json()["detail"]
    # Another reader cannot attach files to grace's job.
    other = server.create_token("reader", name="mallory")
    r = upload(server, other["token"], b"x", data={"source": "export", "job_id": job.id})
    assert r.status_code == 400


def test_unknown_and_malformed_ids_are_404(server: ServerProcess, admin: str) -> None:
    with server.http(admin) as c:
        for aid in ("0" * 32, "..%2F..%2Fmeta.sqlite3", "not-an-id"):
            for path in (f"/api/v1/artefacts/{aid}", f"/api/v1/artefacts/{aid}/content"):
                r = c.get(path)
                assert r.status_code == 404, path
            assert c.delete(f"/api/v1/artefacts/{aid}").status_code == 404


def test_metrics_report_artefact_bytes(server: ServerProcess, admin: str) -> None:
    assert upload(server, admin, os.urandom(4321)).status_code == 201
    with server.http(admin) as c:
        usage = c.get("/api/v1/artefacts/usage").json()
        text = c.get("/metrics").text
    by_source = re.findall(r'^agentdata_artefact_bytes\{source="(\w+)"\} (\S+)$', text, re.M)
    assert {src for src, _ in by_source} >= {"upload", "export"}
    assert sum(float(v) for _, v in by_source) == usage["total"]["bytes"]
    assert re.search(r'^agentdata_artefacts\{source="export"\} ', text, re.M)


def test_unauthenticated_calls_are_401(server: ServerProcess) -> None:
    r = httpx.post(f"{server.http_url}/api/v1/artefacts", files={"file": ("a", b"x")})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert temp_files(server) == []


# -- the CLI --------------------------------------------------------------------------------
def cli(
    srv: ServerProcess, token: str, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "agentdata", *args, "--url", srv.http_url, "--token", token],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd or REPO,
    )


def test_cli_upload_ls_download_rm(server: ServerProcess, tmp_path: Path) -> None:
    token = server.create_token("writer", name="cli-user")["token"]
    src = tmp_path / "numbers.csv"
    src.write_bytes(b"n\n" + b"".join(f"{i}\n".encode() for i in range(300_000)))
    up = cli(server, token, "artefact", "upload", str(src), "--json")
    assert up.returncode == 0, up.stderr
    art = json.loads(up.stdout)
    assert art["name"] == "numbers.csv" and art["content_type"] == "text/csv"
    assert art["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    ls = cli(server, token, "artefact", "ls")
    assert ls.returncode == 0, ls.stderr
    assert re.search(rf"^{art['id']}\s+\S+ \S+\s+upload .* numbers\.csv$", ls.stdout, re.M)

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    down = cli(server, token, "artefact", "download", art["id"], cwd=out_dir)
    assert down.returncode == 0, down.stderr
    assert (out_dir / "numbers.csv").read_bytes() == src.read_bytes()
    assert "sha256 verified" in down.stderr
    again = cli(server, token, "artefact", "download", art["id"], cwd=out_dir)
    assert again.returncode != 0 and "exists" in again.stderr

    # An interrupted download resumes from its .part file with a Range request.
    target = tmp_path / "resumed.csv"
    (tmp_path / "resumed.csv.part").write_bytes(src.read_bytes()[:100_000])
    resumed = cli(server, token, "artefact", "download", art["id"], "-o", str(target))
    assert resumed.returncode == 0, resumed.stderr
    assert target.read_bytes() == src.read_bytes()

    usage = cli(server, token, "artefact", "usage", "--json")
    assert json.loads(usage.stdout)["owners"][0]["bytes"] == src.stat().st_size

    rm = cli(server, token, "artefact", "rm", art["id"])
    assert rm.returncode == 0 and f"deleted {art['id']}" in rm.stdout
    gone = cli(server, token, "artefact", "download", art["id"], "-o", "-")
    assert gone.returncode == 1 and "not_found" in gone.stderr


def test_cli_upload_refuses_a_file_over_the_server_limit(
    small: ServerProcess, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SMALL_LIMIT + 1))
    r = cli(small, small.admin_token, "artefact", "upload", str(big))
    assert r.returncode == 1
    assert f"the server accepts at most {SMALL_LIMIT}" in r.stderr


# -- the store's Python API (in-process, for the task runner and maintenance) -------------
@pytest.fixture
def store(tmp_path: Path) -> ArtefactStore:
    return ArtefactStore(
        MetaStore(tmp_path / "meta.sqlite3"),
        tmp_path / "artefacts",
        max_bytes=1000,
        quota_bytes=2500,
        export_ttl_s=60,
    )


def test_store_writer_commit_and_discard(store: ArtefactStore) -> None:
    with store.open_temp() as tmp:
        tmp.write(b"hello ")
        tmp.write(memoryview(b"world"))
        assert tmp.tell() == 11
        art = tmp.commit(name="../x.txt", owner="o1", source="export", expires_in_s=60)
    assert art.name == "x.txt" and art.size == 11
    assert art.sha256 == hashlib.sha256(b"hello world").hexdigest()
    with store.open(art) as f:
        assert f.read() == b"hello world"
    assert store.temp_files() == []
    with store.open_temp() as tmp:
        tmp.write(b"never published")
        assert len(store.temp_files()) == 1
    assert store.temp_files() == []
    assert store.list()[1] == 1


def test_store_limits_checksum_and_quota(store: ArtefactStore) -> None:
    with pytest.raises(PayloadTooLarge), store.open_temp() as tmp:
        tmp.write(b"x" * 1001)
    with pytest.raises(ChecksumMismatch), store.open_temp() as tmp:
        tmp.write(b"abc")
        tmp.commit(name="a", owner="o1", expected_sha256="0" * 64)
    for _ in range(2):
        with store.open_temp() as tmp:
            tmp.write(b"x" * 1000)
            tmp.commit(name="a", owner="o1")
    with pytest.raises(QuotaExceeded), store.open_temp() as tmp:
        tmp.write(b"x" * 501)
        tmp.commit(name="a", owner="o1")
    assert store.temp_files() == []
    assert store.usage()["owners"][0]["bytes"] == 2000


def test_store_native_writer_fills_the_path(store: ArtefactStore) -> None:
    """A writer that needs a path (e.g. pyarrow) fills tmp.path; commit hashes what is there."""
    with store.open_temp() as tmp:
        tmp.close()
        tmp.path.write_bytes(b"written natively")
        art = tmp.commit(name="n.bin", owner=None)
    assert art.size == 16 and art.sha256 == hashlib.sha256(b"written natively").hexdigest()


def test_store_expiry_listing_delete_and_reconcile(store: ArtefactStore, tmp_path: Path) -> None:
    src = tmp_path / "ready.bin"
    src.write_bytes(b"ready")
    kept = store.add_file(src, owner="o2")
    assert not src.exists()
    with store.open(kept) as f:
        assert f.read() == b"ready"
    with store.open_temp() as tmp:
        tmp.write(b"old")
        old = tmp.commit(name="old", owner="o2", source="export", expires_in_s=1)
    later = time.time() + 2
    assert [a.id for a in store.list_expired(later)] == [old.id]
    assert store.list_expired() == []
    assert [a.id for a in store.list(owner="o2", source="export")[0]] == [old.id]
    store.delete(old.id)
    assert not (store.directory / old.id).exists()
    with pytest.raises(NotFound):
        store.get(old.id)
    with pytest.raises(NotFound):
        store.delete(old.id)
    # Crash leftovers: a temp file, a file without a record, a record without a file.
    (store.directory / ".tmp-deadbeef").write_bytes(b"partial")
    (store.directory / ("a" * 32)).write_bytes(b"orphan")
    (store.directory / kept.id).unlink()
    active = store.open_temp()  # a writer in progress is left alone
    assert store.reconcile() == {"temp_files": 1, "orphan_files": 1, "dangling_records": 1}
    assert active.path.exists()
    active.discard()
    assert sorted(os.listdir(store.directory)) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.csv", "report.csv"),
        ("C:\\Users\\me\\x.txt", "x.txt"),
        ("..", "artefact"),
        (None, "artefact"),
        ("é" * 126 + ".ab", "é" * 126 + ".ab"),  # 129 characters, 255 bytes
    ],
)
def test_safe_name(raw: str | None, expected: str) -> None:
    assert safe_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "\u202eexe.txt",  # bidi override is a control (format) character
        "..\x00..",
        "a\nb",
        "x" * 256,
        "é" * 128,  # 256 bytes
    ],
)
def test_safe_name_refuses_control_characters_and_long_names(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        safe_name(raw)
