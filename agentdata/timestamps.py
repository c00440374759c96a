"""Timestamps as every REST answer writes them: RFC 3339 strings in UTC.

The core keeps Unix seconds (floats); the edges that speak JSON write them as
`2026-11-30T03:05:31.123456Z` and clients (the CLI) read them back:

    rfc3339(1795835131.123456)           -> "2026-11-30T03:05:31.123456Z"
    seconds("2026-11-30T03:05:31.123456Z") -> 1795835131.123456
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(ts: float) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp with microseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def seconds(value: str | float) -> float:
    """An RFC 3339 timestamp (or Unix seconds, as older servers sent) as Unix seconds."""
    if isinstance(value, int | float):
        return float(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def short(value: str | float) -> str:
    """A timestamp for a terminal: to the second, `2026-11-30T03:05:31Z`."""
    return datetime.fromtimestamp(seconds(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
