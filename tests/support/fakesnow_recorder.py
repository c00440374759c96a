"""What the fakesnow emulator was asked, and Snowflake's cancellation, for federation tests.

The emulator keeps no query history and ignores abort requests. This ASGI wrapper (run
inside the emulator's process by `fakesnow_server.py --query-log PATH`) adds both:

- every `query-request` (the SQL text and the client's request id) and every
  `abort-request` is appended to PATH as one JSON line, so a test can check exactly
  what crossed to "Snowflake" (which columns, which conditions), and that a stop was
  passed on;
- with `--slow-marker TEXT`, a statement whose SQL contains TEXT is held, as a long
  warehouse query would be, until an abort request names its request id (or 60 s
  pass); it then fails the way Snowflake reports a cancelled statement (000604), and
  the log records `{"kind": "cancelled"}`.

A test fixture, not production code: agentdata itself never needs it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]

QUERY_PATH = "/queries/v1/query-request"
ABORT_PATH = "/queries/v1/abort-request"


class QueryRecorder:
    """Wraps the emulator's ASGI app (see the module docstring)."""

    def __init__(self, app: Any, log_path: Path, slow_marker: str | None = None) -> None:
        self.app = app
        self.log_path = log_path
        self.slow_marker = slow_marker
        self.aborted: dict[str, asyncio.Event] = {}

    def _log(self, **entry: Any) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"at": time.time(), **entry}) + "\n")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in (QUERY_PATH, ABORT_PATH):
            await self.app(scope, receive, send)
            return
        raw = b""
        more = True
        while more:
            message = await receive()
            raw += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        text = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
        body = json.loads(text or b"{}")
        query = parse_qs(scope.get("query_string", b"").decode())
        if scope["path"] == ABORT_PATH:
            request_id = str(body.get("requestId", ""))
            self._log(kind="abort", request_id=request_id, sql=body.get("sqlText"))
            self.aborted.setdefault(request_id, asyncio.Event()).set()
        else:
            request_id = (query.get("requestId") or [""])[0]
            sql = str(body.get("sqlText", ""))
            self._log(kind="query", request_id=request_id, sql=sql)
            if self.slow_marker and self.slow_marker in sql:
                event = self.aborted.setdefault(request_id, asyncio.Event())
                try:
                    await asyncio.wait_for(event.wait(), timeout=60)
                except TimeoutError:
                    pass
                else:
                    self._log(kind="cancelled", request_id=request_id)
                    await _json(send, _cancelled())
                    return

        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def _cancelled() -> dict[str, Any]:
    return {
        "data": {"errorCode": "000604", "sqlState": "57014"},
        "code": "000604",
        "message": "SQL execution canceled",
        "success": False,
    }


async def _json(send: Any, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def read_log(path: Path) -> list[dict[str, Any]]:
    """The recorded entries, oldest first (none if nothing was logged yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
