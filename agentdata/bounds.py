"""Bounds on numbers and names that clients send, as pydantic field types.

A number outside what the server can store or compute with must be refused as
invalid (422), never reach SQLite ("Python int too large to convert to SQLite
INTEGER") or float arithmetic (OverflowError, inf, NaN) and come back as a 500:

    class TokenCreate(BaseModel):
        max_rows: PositiveCount | None = None   # 1 .. 2**63-1
        timeout_s: Seconds | None = None        # finite, > 0, at most 100 years

JSON as Python parses it allows NaN and Infinity; `Seconds` refuses both.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from agentdata.errors import InvalidArgument
from agentdata.names import validate_name

#: SQLite integers (and DuckDB BIGINT) are signed 64-bit.
MAX_INT64 = 2**63 - 1

#: The longest duration a client may ask for: far beyond any real use, and small
#: enough for datetime, JWT `exp` and thread timeouts (Python's is about 292 years).
MAX_SECONDS = 100 * 365 * 24 * 3600

#: A count, size or offset: 0 .. 2**63-1.
Count = Annotated[int, Field(ge=0, le=MAX_INT64)]

#: A count that must be at least one: 1 .. 2**63-1.
PositiveCount = Annotated[int, Field(ge=1, le=MAX_INT64)]

#: A duration in seconds: finite, above zero, at most MAX_SECONDS.
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]

#: Whole seconds, 1 .. MAX_SECONDS.
WholeSeconds = Annotated[int, Field(ge=1, le=MAX_SECONDS)]


def _name(value: str) -> str:
    try:
        return validate_name(value)
    except InvalidArgument as e:  # pydantic reports ValueErrors as 422s naming the field
        raise ValueError(e.message) from None


#: A name a client introduces (task ids, file names): no control characters, at most
#: 255 bytes (see `agentdata.names.validate_name`).
Name = Annotated[str, AfterValidator(_name)]
