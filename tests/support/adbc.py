"""ADBC Flight SQL connections for tests, closed with every cursor they opened.

The ADBC driver manager warns (ResourceWarning) about a cursor or connection that is
garbage-collected unclosed, and the test run turns warnings into errors. Tests write
`conn.cursor().execute(...)` freely; `AdbcConnections` keeps every cursor and closes
them before their connections:

    conns = AdbcConnections()
    conn = conns.connect("grpc://127.0.0.1:31337", token="adt_...")
    conn.cursor().execute("SELECT 1")
    conns.close()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

from tests.support.server import CALL_TIMEOUT_S

TIMEOUTS = (
    DatabaseOptions.TIMEOUT_FETCH,
    DatabaseOptions.TIMEOUT_QUERY,
    DatabaseOptions.TIMEOUT_UPDATE,
)


class AdbcConnections:
    """Opens ADBC Flight SQL connections and closes them, cursors first."""

    def __init__(self) -> None:
        self._opened: list[Any] = []

    def connect(
        self, url: str, token: str | None = None, db_kwargs: dict[str, str] | None = None
    ) -> Any:
        """A DB-API connection (autocommit: the server offers no Flight SQL transactions,
        each statement commits), with the token as a Bearer header if given. Every call
        has a deadline (CALL_TIMEOUT_S unless `db_kwargs` says otherwise): a server that
        stops answering fails the test instead of blocking it inside the driver."""
        kwargs = {option.value: str(CALL_TIMEOUT_S) for option in TIMEOUTS}
        kwargs.update(db_kwargs or {})
        if token is not None:
            kwargs["adbc.flight.sql.authorization_header"] = f"Bearer {token}"
        conn = flightsql.connect(url, db_kwargs=kwargs, autocommit=True)
        return self.track(conn)

    def track(self, conn: Any) -> Any:
        """Keep `conn`, and every cursor it opens from now on, for `close`."""
        cursor = conn.cursor

        def tracked_cursor(*args: Any, **kwargs: Any) -> Any:
            cur = cursor(*args, **kwargs)
            self._opened.append(cur)
            return cur

        conn.cursor = tracked_cursor
        self._opened.append(conn)
        return conn

    def close(self) -> None:
        """Close everything, newest first (so cursors before their connections)."""
        while self._opened:
            resource = self._opened.pop()
            try:
                resource.close()
            except Exception:  # already closed, or the server is gone: nothing to free
                pass


@contextmanager
def connection_per_token(
    flight_port: int, tokens: Mapping[str, str]
) -> Iterator[Callable[[str], Any]]:
    """`connect(who)`: one ADBC connection per named token of `tokens` (opened on first
    use, reused after), all closed with their cursors on exit."""
    conns = AdbcConnections()
    opened: dict[str, Any] = {}

    def connect(who: str) -> Any:
        if who not in opened:
            opened[who] = conns.connect(f"grpc://127.0.0.1:{flight_port}", token=tokens[who])
        return opened[who]

    try:
        yield connect
    finally:
        conns.close()
