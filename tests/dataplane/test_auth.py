"""The auth matrix: who may call what, and how every bad token is refused."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.support.server import ServerProcess

SQL = b"SELECT 1 AS one"


def _call(server: ServerProcess, headers: list[tuple[bytes, bytes]]) -> None:
    server.flight().get_flight_info(
        fl.FlightDescriptor.for_command(SQL), fl.FlightCallOptions(headers=headers)
    )


def _bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def test_missing_and_malformed_tokens_are_unauthenticated(
    server: ServerProcess, reader_token: str
) -> None:
    header, claims, signature = reader_token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=="))
    forged_none = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(json.dumps({**payload, "role": "admin"}).encode())
        .rstrip(b"=")
        .decode()
        + "."
    )
    wrong_key = jwt.encode({**payload, "role": "admin"}, "x" * 40, algorithm="HS256")
    expired = jwt.encode({**payload, "exp": int(time.time()) - 10}, "y" * 40, algorithm="HS256")
    tampered = (
        header
        + "."
        + base64.urlsafe_b64encode(json.dumps({**payload, "role": "admin"}).encode())
        .rstrip(b"=")
        .decode()
        + "."
        + signature
    )
    cases = {
        "missing": [],
        "empty bearer": [(b"authorization", b"Bearer ")],
        "garbage": _bearer("not-a-token"),
        "alg none": _bearer(forged_none),
        "wrong signature": _bearer(wrong_key),
        "tampered claims": _bearer(tampered),
        "expired (and wrong key)": _bearer(expired),
        "unknown scheme": [(b"authorization", f"Token {reader_token}".encode())],
    }
    for name, headers in cases.items():
        with pytest.raises(fl.FlightUnauthenticatedError) as e:
            _call(server, headers)
        assert "[unauthenticated]" in str(e.value), name
        assert reader_token not in str(e.value)


def test_expired_token_is_refused(server: ServerProcess) -> None:
    token = server.create_token("reader", name="short", ttl_seconds=1)["token"]
    _call(server, _bearer(token))
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    deadline = time.monotonic() + 30
    while time.time() <= expires:  # until the `exp` the token states has passed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(fl.FlightUnauthenticatedError, match="expired"):
        _call(server, _bearer(token))


def test_revocation_takes_effect_on_the_next_call(server: ServerProcess) -> None:
    created = server.create_token("reader", name="to-revoke")
    _call(server, _bearer(created["token"]))
    with server.http() as http:
        assert (
            http.get(
                "/api/v1/tables", headers={"Authorization": f"Bearer {created['token']}"}
            ).status_code
            == 200
        )
        r = http.delete(f"/api/v1/tokens/{created['id']}")
        assert r.status_code == 200 and r.json()["revoked_at"] is not None
        with pytest.raises(fl.FlightUnauthenticatedError, match="revoked"):
            _call(server, _bearer(created["token"]))
        r = http.get("/api/v1/tables", headers={"Authorization": f"Bearer {created['token']}"})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        assert r.headers["content-type"].startswith("application/problem+json")


def test_basic_handshake_answers_with_bearer(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    key, value = client.authenticate_basic_token("any-user", reader_token)
    assert key == b"authorization" and value == f"Bearer {reader_token}".encode()
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(SQL), fl.FlightCallOptions(headers=[(key, value)])
    )
    assert (
        client.do_get(info.endpoints[0].ticket, fl.FlightCallOptions(headers=[(key, value)]))
        .read_all()
        .num_rows
        == 1
    )
    with pytest.raises(fl.FlightUnauthenticatedError):
        server.flight().authenticate_basic_token("any-user", "wrong-password")


def test_ticket_is_bound_to_its_token(server: ServerProcess, reader_token: str) -> None:
    other = server.create_token("reader", name="other")["token"]
    client = server.flight()
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(SQL), server.options(reader_token)
    )
    with pytest.raises(fl.FlightUnauthorizedError, match="another token"):
        client.do_get(info.endpoints[0].ticket, server.options(other)).read_all()
    # The rightful owner can still redeem it.
    assert (
        client.do_get(info.endpoints[0].ticket, server.options(reader_token)).read_all().num_rows
        == 1
    )
    with pytest.raises(pa.ArrowKeyError, match="unknown or expired ticket"):
        client.do_get(fl.Ticket(b"adt1.made-up"), server.options(reader_token)).read_all()


def test_ticket_expires(tmp_path) -> None:
    from tests.support.server import start_server

    srv = start_server(
        tmp_path / "data", env={"AGENTDATA_TICKET_TTL_S": "1", "AGENTDATA_DEMO": "false"}
    )
    try:
        client = srv.flight()
        info = client.get_flight_info(
            fl.FlightDescriptor.for_command(SQL), srv.options(srv.admin_token)
        )
        # A ticket may be redeemed again until its ttl has passed, then it is refused.
        deadline = time.monotonic() + 30
        while True:
            try:
                client.do_get(info.endpoints[0].ticket, srv.options(srv.admin_token)).read_all()
            except pa.ArrowKeyError as e:
                assert "expired" in str(e)
                break
            assert time.monotonic() < deadline, "the ticket was still valid after 30 s"
            time.sleep(0.1)
    finally:
        srv.stop()


def test_roles_on_rest_tokens(server: ServerProcess, reader_token: str, writer_token: str) -> None:
    with server.http() as http:
        for token in (reader_token, writer_token):
            r = http.post(
                "/api/v1/tokens",
                json={"name": "x", "role": "admin"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 403 and r.json()["code"] == "permission_denied"
        listed = http.get("/api/v1/tokens").json()
        assert listed and all("token" not in t for t in listed)
        assert http.post("/api/v1/tokens", json={"name": "x", "role": "root"}).status_code == 422
        assert http.delete("/api/v1/tokens/does-not-exist").status_code == 404


def test_reader_cannot_put_or_execute(server: ServerProcess, reader_token: str) -> None:
    client = server.flight()
    table = pa.table({"x": [1, 2]})
    writer, _ = client.do_put(
        fl.FlightDescriptor.for_path("main", "reader_put"),
        table.schema,
        server.options(reader_token),
    )
    with pytest.raises(fl.FlightUnauthorizedError):
        writer.write_table(table)
        writer.close()
    with pytest.raises(fl.FlightUnauthorizedError):
        list(
            client.do_action(
                fl.Action("execute", b"CREATE TABLE main.nope AS SELECT 1"),
                server.options(reader_token),
            )
        )
    tables = (
        server.query(server.admin_token, "SELECT table_name FROM duckdb_tables()")
        .column(0)
        .to_pylist()
    )
    assert "reader_put" not in tables and "nope" not in tables


def test_no_token_in_server_log(
    server: ServerProcess, reader_token: str, writer_token: str
) -> None:
    log = server.log()
    for secret in (reader_token, writer_token, server.admin_token):
        assert secret not in log
