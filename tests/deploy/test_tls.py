"""TLS on Flight and HTTPS on the control plane, against real `agentdata serve` processes.

A throw-away PKI is made here with `cryptography`: a CA, a server certificate for
127.0.0.1/localhost, a client certificate from the same CA, and a second, unrelated CA
with a client certificate of its own (the impostor).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.flight as fl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.deploy import doc_examples, healthcheck_argv, load_compose, run_example
from tests.support.redis_db import scratch_database
from tests.support.server import REPO, ServerProcess, free_port, start_server

DEMO_ROWS = 5_000
#: This module's Redis database, for the TLS server with a Celery worker.


# -- a throw-away PKI ----------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(
    dir_: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path, key_path = dir_ / f"{stem}.pem", dir_ / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path)


def _ca(dir_: Path, stem: str) -> tuple[Issued, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"agentdata test {stem}"))
        .issuer_name(_name(f"agentdata test {stem}"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(dir_, stem, cert, key), cert, key


def _leaf(
    dir_: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
) -> Issued:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    # The server certificate may also act as a client (clientAuth): under mutual TLS the
    # container health check presents it to its own server (docs/deployment.md).
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(usages if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return _write(dir_, stem, builder.sign(ca_key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued
    impostor: Issued

    def client_context(self, client: Issued | None = None) -> ssl.SSLContext:
        """An HTTPS client context trusting our CA, optionally presenting `client`."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    dir_ = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = _ca(dir_, "ca")
    other_ca, other_cert, other_key = _ca(dir_, "other-ca")
    return Pki(
        ca=ca,
        server=_leaf(dir_, "server", (ca_cert, ca_key), server=True),
        client=_leaf(dir_, "client", (ca_cert, ca_key), server=False),
        other_ca=other_ca,
        impostor=_leaf(dir_, "impostor", (other_cert, other_key), server=False),
    )


def _tls_env(pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = {"AGENTDATA_TLS_CERT": str(pki.server.cert), "AGENTDATA_TLS_KEY": str(pki.server.key)}
    if mutual:
        env["AGENTDATA_TLS_CLIENT_CA"] = str(pki.ca.cert)
    return env


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory.mktemp("tls") / "data",
        env=_tls_env(pki, mutual=False),
        demo_rows=DEMO_ROWS,
        tls=pki.client_context(),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory.mktemp("mtls") / "data",
        env=_tls_env(pki, mutual=True),
        demo_rows=DEMO_ROWS,
        tls=pki.client_context(pki.client),
    )
    yield srv
    srv.stop()


def _count_orders(client: fl.FlightClient, token: str) -> int:
    opts = ServerProcess.options(token, timeout=30)
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(b"SELECT * FROM demo.orders"), opts
    )
    return client.do_get(info.endpoints[0].ticket, opts).read_all().num_rows


# -- TLS -----------------------------------------------------------------------------------
def test_tls_client_trusting_the_ca_streams_a_query(tls_server: ServerProcess, pki: Pki) -> None:
    # The token comes over HTTPS, the rows over Flight with TLS.
    token = tls_server.create_token("reader", name="tls-reader")["token"]
    client = fl.connect(
        f"grpc+tls://127.0.0.1:{tls_server.flight_port}", tls_root_certs=pki.ca.pem()
    )
    assert _count_orders(client, token) == DEMO_ROWS
    assert "flight=grpc+tls://" in tls_server.log()


def test_adbc_flight_sql_client_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    import adbc_driver_flightsql.dbapi as flight_sql

    token = tls_server.create_token("reader", name="tls-adbc")["token"]
    db_kwargs = {
        "adbc.flight.sql.authorization_header": f"Bearer {token}",
        "adbc.flight.sql.client_option.tls_root_certs": pki.ca.pem().decode(),
    }
    url = f"grpc+tls://127.0.0.1:{tls_server.flight_port}"
    with (
        flight_sql.connect(url, db_kwargs=db_kwargs, autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) AS n FROM demo.orders")
        assert cur.fetchone() == (DEMO_ROWS,)


def test_plaintext_flight_client_is_refused(tls_server: ServerProcess) -> None:
    client = fl.connect(f"grpc://127.0.0.1:{tls_server.flight_port}")
    with pytest.raises(fl.FlightUnavailableError):
        _count_orders(client, tls_server.admin_token)


def test_client_that_does_not_trust_the_server_certificate_is_refused(
    tls_server: ServerProcess, pki: Pki
) -> None:
    client = fl.connect(
        f"grpc+tls://127.0.0.1:{tls_server.flight_port}", tls_root_certs=pki.other_ca.pem()
    )
    with pytest.raises(fl.FlightUnavailableError):
        _count_orders(client, tls_server.admin_token)


def test_https_health_check_with_the_ca_and_no_plain_http(
    tls_server: ServerProcess, pki: Pki
) -> None:
    url = f"https://127.0.0.1:{tls_server.http_port}/healthz"
    r = httpx.get(url, verify=pki.client_context(), timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # Not trusted by the system roots: the certificate is really being checked.
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=10)
    # Plain HTTP on the HTTPS port gets no answer at all.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.http_port}/healthz", timeout=10)


def test_compose_health_check_speaks_https(tls_server: ServerProcess) -> None:
    """The server's compose health check passes against a TLS server (and fails on a dead port)."""
    argv = healthcheck_argv(load_compose()["services"]["server"])
    env = {**os.environ, **_tls_env_from(tls_server), "PATH": _path_with_python()}
    env["AGENTDATA_HTTP_PORT"] = str(tls_server.http_port)
    ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    env["AGENTDATA_HTTP_PORT"] = str(free_port())
    dead = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert dead.returncode != 0


def test_cli_trusts_a_private_ca_through_the_standard_variables(
    tls_server: ServerProcess, pki: Pki
) -> None:
    """`agentdata sql` (gRPC) and the REST commands (httpx) over TLS with a private CA."""
    env = {
        **os.environ,
        "AGENTDATA_FLIGHT_URL": f"grpc+tls://127.0.0.1:{tls_server.flight_port}",
        "AGENTDATA_URL": tls_server.http_url,
        "AGENTDATA_TOKEN": tls_server.admin_token,
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(pki.ca.cert),
        "SSL_CERT_FILE": str(pki.ca.cert),
    }
    sql = subprocess.run(
        [sys.executable, "-m", "agentdata", "sql", "SELECT 6 * 7 AS answer", "--format", "csv"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert sql.returncode == 0, sql.stderr
    assert sql.stdout.split() == ['"answer"', "42"]  # pyarrow's CSV quotes names
    tokens = subprocess.run(
        [sys.executable, "-m", "agentdata", "token", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert tokens.returncode == 0, tokens.stderr
    assert tokens.stdout.lstrip().startswith("[")


# -- mutual TLS ----------------------------------------------------------------------------
def test_mutual_tls_refuses_a_client_without_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    client = fl.connect(
        f"grpc+tls://127.0.0.1:{mtls_server.flight_port}", tls_root_certs=pki.ca.pem()
    )
    with pytest.raises(fl.FlightUnavailableError):
        _count_orders(client, mtls_server.admin_token)


def test_mutual_tls_refuses_a_certificate_from_another_ca(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    client = fl.connect(
        f"grpc+tls://127.0.0.1:{mtls_server.flight_port}",
        tls_root_certs=pki.ca.pem(),
        cert_chain=pki.impostor.pem(),
        private_key=pki.impostor.key_pem(),
    )
    with pytest.raises(fl.FlightUnavailableError):
        _count_orders(client, mtls_server.admin_token)


def test_mutual_tls_accepts_a_good_client_certificate(mtls_server: ServerProcess, pki: Pki) -> None:
    token = mtls_server.create_token("reader", name="mtls-reader")["token"]
    client = fl.connect(
        f"grpc+tls://127.0.0.1:{mtls_server.flight_port}",
        tls_root_certs=pki.ca.pem(),
        cert_chain=pki.client.pem(),
        private_key=pki.client.key_pem(),
    )
    assert _count_orders(client, token) == DEMO_ROWS
    # A certificate proves the machine, the token still proves the caller.
    with pytest.raises(fl.FlightUnauthenticatedError):
        _count_orders(client, "not-a-token")


def test_adbc_flight_sql_client_with_a_client_certificate(
    mtls_server: ServerProcess, pki: Pki
) -> None:
    import adbc_driver_flightsql.dbapi as flight_sql

    token = mtls_server.create_token("reader", name="mtls-adbc")["token"]
    db_kwargs = {
        "adbc.flight.sql.authorization_header": f"Bearer {token}",
        "adbc.flight.sql.client_option.tls_root_certs": pki.ca.pem().decode(),
        "adbc.flight.sql.client_option.mtls_cert_chain": pki.client.pem().decode(),
        "adbc.flight.sql.client_option.mtls_private_key": pki.client.key_pem().decode(),
    }
    url = f"grpc+tls://127.0.0.1:{mtls_server.flight_port}"
    with (
        flight_sql.connect(url, db_kwargs=db_kwargs, autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) AS n FROM demo.orders")
        assert cur.fetchone() == (DEMO_ROWS,)


def test_mutual_tls_on_https(mtls_server: ServerProcess, pki: Pki) -> None:
    url = f"https://127.0.0.1:{mtls_server.http_port}/healthz"
    assert httpx.get(url, verify=pki.client_context(pki.client), timeout=10).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=pki.client_context(), timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=pki.client_context(pki.impostor), timeout=10)


def test_compose_health_check_passes_under_mutual_tls(mtls_server: ServerProcess) -> None:
    argv = healthcheck_argv(load_compose()["services"]["server"])
    env = {**os.environ, **_tls_env_from(mtls_server), "PATH": _path_with_python()}
    env["AGENTDATA_HTTP_PORT"] = str(mtls_server.http_port)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- TLS with Celery workers, as docker-compose runs them -----------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Redis database of this module's own (tests/support/redis_db.py)."""
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module")
def tls_with_worker(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[ServerProcess]:
    """A TLS server using Redis, and a worker that trusts the CA (the compose TLS override)."""
    work = tmp_path_factory.mktemp("tls-celery")
    srv = start_server(
        work / "data",
        env={**_tls_env(pki, mutual=False), "AGENTDATA_REDIS_URL": redis_url},
        demo_rows=DEMO_ROWS,
        tls=pki.client_context(),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env.update(
        AGENTDATA_REDIS_URL=redis_url,
        AGENTDATA_SERVER_URL=srv.http_url,
        AGENTDATA_FLIGHT_URL=srv.flight_url,
        # Workers trust the certificate (or CA) named by AGENTDATA_TLS_CERT.
        AGENTDATA_TLS_CERT=str(pki.ca.cert),
        AGENTDATA_ADMIN_TOKEN=srv.admin_token,
        AGENTDATA_DATA_DIR=str(work / "worker"),
        PYTHONUNBUFFERED="1",
    )
    log = work / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "agentdata", "worker", "--concurrency", "1"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield srv
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        srv.stop()


def test_celery_worker_exports_from_a_tls_server(tls_with_worker: ServerProcess) -> None:
    """The worker reads the result over grpc+tls and uploads it over HTTPS."""
    with tls_with_worker.http() as api:
        job = api.post(
            "/api/v1/exports", json={"sql": "SELECT * FROM demo.orders", "format": "csv"}
        ).json()
        deadline = time.monotonic() + 120
        while (state := api.get(f"/api/v1/jobs/{job['job_id']}").json())["state"] not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["state"] == "succeeded", state.get("error")
        content = api.get(f"/api/v1/artefacts/{state['result']['artefact_id']}/content")
    assert content.text.count("\n") == DEMO_ROWS + 1


# -- the TLS examples of docs/api.md -------------------------------------------------------
@pytest.mark.parametrize(("kind", "fixture"), [("tls", "tls_server"), ("mtls", "mtls_server")])
def test_api_doc_tls_examples_run(
    kind: str,
    fixture: str,
    pki: Pki,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    examples = doc_examples(kind)
    assert examples, f"docs/api.md has a {kind} example"
    monkeypatch.setenv("AGENTDATA_TOKEN", server.create_token("reader", name=kind)["token"])
    monkeypatch.chdir(pki.ca.cert.parent)  # ca.pem, client.pem, client.key, as the docs name them
    for code in examples:
        output = run_example(code, flight_port=server.flight_port, http_port=server.http_port)
        assert "42" in output and str(DEMO_ROWS) in output and "ok" in output


# -- misconfiguration ----------------------------------------------------------------------
def test_certificate_without_key_stops_the_server_with_a_clear_error(
    pki: Pki, tmp_path: Path
) -> None:
    env = {**os.environ, "AGENTDATA_DATA_DIR": str(tmp_path / "data")}
    env.update(AGENTDATA_TLS_CERT=str(pki.server.cert), AGENTDATA_FLIGHT_PORT="0")
    env.update(AGENTDATA_HTTP_PORT="0", AGENTDATA_DEMO="false")
    env.pop("AGENTDATA_TLS_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "agentdata", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "tls_cert needs tls_key" in result.stdout + result.stderr


def _tls_env_from(server: ServerProcess) -> dict[str, str]:
    return {k: v for k, v in server.env.items() if k.startswith("AGENTDATA_TLS_")}


def _path_with_python() -> str:
    """PATH with this interpreter's directory first: the image's `python` is the venv's."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
