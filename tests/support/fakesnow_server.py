"""The `fakesnow` Snowflake emulator as a real subprocess, for integration tests.

    with FakesnowServer() as snow:              # starts on a free port, waits until it answers
        snow.execute("create table T (ID int)")  # seed through the real connector
        settings_env = snow.env()                # SNOWFLAKE_* variables for workers
        snow.stop()                              # outage: connections are refused
        snow.start()                             # same port, same data

or as a pytest fixture: `yield from fakesnow_fixture(tmp_path_factory.mktemp("snow"))`.

Why not plain `python -m fakesnow -s -p PORT` (fakesnow 0.12.1):
- its `-d/--db_path` option is ignored in server mode, so every table lives in the server
  process's memory and is lost on a stop/start. The launcher below (this file, run as a
  script) gives the server's shared instance a database directory instead, so a restart
  on the same port finds the same tables, which is what an outage test needs.
- it sends a NULL TIMESTAMP_* value as a non-null `{epoch: NULL, fraction: NULL}` struct,
  which the connector reads as 1970-01-01. Snowflake marks the struct itself as null; the
  launcher patches the emulator's encoder to do the same, so tests see Snowflake's
  behaviour rather than the emulator's bug.

Everything else is the stock emulator, driven by the real `snowflake-connector-python`.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Credentials are not checked by the emulator; these only have to be present.
ACCOUNT, USER, PASSWORD = "fakesnow", "fake", "snow"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class FakesnowServer:
    """One emulator process bound to a fixed port, with data kept in `data_dir`.

    `start()` and `stop()` may be called repeatedly; the port and the data survive, so a
    test can simulate a transient outage. Use as a context manager to always stop it.
    """

    def __init__(
        self,
        *,
        data_dir: Path | str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        database: str = "AGENTDATA_TEST",
        schema: str = "PUBLIC",
        startup_timeout_s: float = 30.0,
        record_queries: bool = False,
        slow_marker: str | None = None,
    ) -> None:
        """`record_queries`: log every statement and abort request (`queries()`);
        `slow_marker`: hold statements containing it until aborted (see
        tests/support/fakesnow_recorder.py)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fakesnow-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.database = database
        self.schema = schema
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / "fakesnow.log"
        self.query_log = self.data_dir / "queries.jsonl" if record_queries or slow_marker else None
        self.slow_marker = slow_marker
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the emulator process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> FakesnowServer:
        """Start the emulator (no-op if running) and wait until it accepts connections."""
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--db-path",
                    str(self.data_dir),
                    *(["--query-log", str(self.query_log)] if self.query_log else []),
                    *(["--slow-marker", self.slow_marker] if self.slow_marker else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so a Ctrl-C in the test run doesn't race our stop().
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_until_listening()
        return self

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the emulator gracefully (SIGTERM), killing it if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop then start on the same port with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the emulator and remove its data directory if this object created it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakesnowServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"fakesnow exited during startup:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"fakesnow did not listen on {self.host}:{self.port} within "
            f"{self.startup_timeout_s}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the emulator printed, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def queries(self) -> list[dict[str, Any]]:
        """What the emulator was sent (`record_queries=True`): {"kind": "query" |
        "abort" | "cancelled", "sql", "request_id"} entries, oldest first."""
        from tests.support.fakesnow_recorder import read_log

        assert self.query_log is not None, "start the emulator with record_queries=True"
        return read_log(self.query_log)

    # -- clients -------------------------------------------------------------
    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for `snowflake.connector.connect` against this emulator.

        Timeouts are short so that a stopped emulator fails a test in seconds rather than
        after the connector's default two-minute login retry loop.
        """
        kwargs: dict[str, Any] = {
            "account": ACCOUNT,
            "user": USER,
            "password": PASSWORD,
            "host": self.host,
            "port": self.port,
            "protocol": "http",
            "database": self.database,
            "schema": self.schema,
            "login_timeout": 5,
            "network_timeout": 5,
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        }
        kwargs.update(overrides)
        return kwargs

    def env(self) -> dict[str, str]:
        """`SNOWFLAKE_*` environment variables pointing at this emulator (for subprocesses)."""
        return {
            "SNOWFLAKE_ACCOUNT": ACCOUNT,
            "SNOWFLAKE_USER": USER,
            "SNOWFLAKE_PASSWORD": PASSWORD,
            "SNOWFLAKE_HOST": self.host,
            "SNOWFLAKE_PORT": str(self.port),
            "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_DATABASE": self.database,
            "SNOWFLAKE_SCHEMA": self.schema,
            "SNOWFLAKE_LOGIN_TIMEOUT": "5",
            "SNOWFLAKE_NETWORK_TIMEOUT": "5",
        }

    def connect(self, **overrides: Any) -> Any:
        """A real `snowflake.connector` connection to this emulator."""
        import snowflake.connector

        return snowflake.connector.connect(**self.connect_kwargs(**overrides))

    def execute(self, *statements: str) -> None:
        """Run setup statements (DDL, inserts) in one connection."""
        with contextlib.closing(self.connect()) as conn, contextlib.closing(conn.cursor()) as cur:
            for statement in statements:
                cur.execute(statement)


def fakesnow_fixture(data_dir: Path | None = None, **kwargs: Any) -> Iterator[FakesnowServer]:
    """Generator body for a pytest fixture: `yield from fakesnow_fixture(tmp_path)`."""
    server = FakesnowServer(data_dir=data_dir, **kwargs)
    with server:
        yield server


# -- the launcher (this file run as a script, inside the emulator's process) -------------


def _patch_null_timestamps() -> None:
    """Make the emulator send NULL timestamps as null structs, as Snowflake does."""
    import fakesnow.arrow
    import pyarrow as pa
    import pyarrow.compute as pc

    original = fakesnow.arrow.timestamp_to_sf_struct

    def timestamp_to_sf_struct(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
        if isinstance(ts, pa.ChunkedArray):
            ts = ts.combine_chunks()
        struct = original(ts)
        if ts.null_count == 0:
            return struct
        children = [struct.field(i) for i in range(struct.type.num_fields)]
        fields = list(struct.type)
        return pa.StructArray.from_arrays(children, fields=fields, mask=pc.is_null(ts))

    fakesnow.arrow.timestamp_to_sf_struct = timestamp_to_sf_struct


def _serve(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="fakesnow server with a persistent database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-path", required=True)
    parser.add_argument("--query-log", default=None)
    parser.add_argument("--slow-marker", default=None)
    args = parser.parse_args(argv)

    # `fakesnow.server` is both a function in the package and this submodule; import the
    # module under its own name so it is the module (to mypy too) that gets patched.
    import fakesnow.server as fakesnow_app
    import uvicorn
    from fakesnow.instance import FakeSnow

    _patch_null_timestamps()
    # Every session shares this instance (as with the stock in-memory server), but its
    # databases are files under db_path, so they outlive the process.
    fakesnow_app.shared_fs = FakeSnow(db_path=args.db_path)
    # uvicorn handles SIGTERM by finishing in-flight requests and exiting.
    app: Any = fakesnow_app.app
    if args.query_log:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.support.fakesnow_recorder import QueryRecorder

        app = QueryRecorder(app, Path(args.query_log), args.slow_marker)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
