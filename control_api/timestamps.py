"""`Timestamp`: a field that holds Unix seconds and is written as an RFC 3339 string.

Response models declare their times as `Timestamp` (or `Timestamp | None`): they are
built from the core's records (floats) and serialised, and documented in the OpenAPI
document, as `{"type": "string", "format": "date-time"}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainSerializer, WithJsonSchema

from agentdata.timestamps import rfc3339

Timestamp = Annotated[
    float,
    PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "example": "2026-11-30T03:05:31.123456Z"}
    ),
]


def with_rfc3339(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`record` with the named Unix-seconds values written as RFC 3339 (None stays None)."""
    out = dict(record)
    for key in keys:
        if isinstance(out.get(key), int | float):
            out[key] = rfc3339(out[key])
    return out
