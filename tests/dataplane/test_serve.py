"""`agentdata serve` as a process: first start, clean shutdown, restart."""

from __future__ import annotations

import signal
import stat
import threading
from pathlib import Path

import pyarrow.flight as fl
import pytest

from tests.support.server import start_server


def test_first_start_generates_admin_token_file_and_logs_only_its_path(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", env={"AGENTDATA_ADMIN_TOKEN": ""}, demo_rows=1_000_000)
    try:
        token_file = tmp_path / "data" / "admin.token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in srv.log() or "admin.token" in srv.log()
        assert token not in srv.log()
        # The generated token is an admin token, and the demo has a million orders.
        n = srv.query(token, "SELECT count(*) AS n FROM demo.orders").column("n")[0].as_py()
        assert n == 1_000_000
        assert (tmp_path / "data" / "jwt.secret").exists()
    finally:
        srv.stop()


def test_sigterm_cancels_streams_checkpoints_and_exits_zero(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    client = srv.flight()
    opts = srv.options(srv.admin_token)
    srv.execute(srv.admin_token, "CREATE TABLE main.kept AS SELECT range AS i FROM range(1000)")
    info = client.get_flight_info(
        fl.FlightDescriptor.for_command(
            b"SELECT a.range, b.range FROM range(1000000) a, range(1000000) b"
        ),
        opts,
    )
    reader = client.do_get(info.endpoints[0].ticket, opts)
    reader.read_chunk()
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            while True:
                reader.read_chunk()
        except StopIteration:
            pass
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=drain)
    t.start()
    code = srv.stop(signal.SIGTERM, timeout=30)  # a server still running then is killed (-9)
    t.join(10)
    assert code == 0, srv.log()
    assert not t.is_alive()  # the open stream was ended, not left hanging
    assert errors and isinstance(errors[0], fl.FlightError)
    assert "shutting down" in str(errors[0])  # cancelled by the shutdown, not cut off
    assert "stopped cleanly" in srv.log()
    wal = tmp_path / "data" / "data.duckdb.wal"
    assert not wal.exists() or wal.stat().st_size == 0

    again = start_server(tmp_path / "data")
    try:
        assert again.query(
            again.admin_token, "SELECT count(*) AS n FROM main.kept"
        ).to_pydict() == {"n": [1000]}
    finally:
        assert again.stop(signal.SIGINT) == 0


def test_bad_settings_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="flight_port|validation"):
        start_server(tmp_path / "data", env={"AGENTDATA_FLIGHT_PORT": "not-a-port"}, wait=20)
