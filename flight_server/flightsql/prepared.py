"""Prepared statements: kept server-side, bound to the token that created them.

A handle is `adps1.<random>` (e.g. `adps1.Jk2x0T9uQ3mCw7pLr5ZbVhQe1gA`); like a
ticket it carries nothing readable and names an entry in server memory: the SQL
(already checked for the token), its schemas, and the parameter values last bound
by DoPut. A handle used by another token is refused with PERMISSION_DENIED; one
that was closed or sat idle past the time-to-live is NOT_FOUND. Each token may hold
a bounded number of open statements.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from agentdata.errors import NotFound, PermissionDenied, ResourceExhausted
from agentdata.param_batches import ParameterBatch
from agentdata.sqlguard import Kind
from agentdata.tokens import Principal

PREFIX = b"adps1."

#: One set of values for a statement's placeholders: positional, or by `$name`.
ParamSet = Sequence[Any] | Mapping[str, Any]


@dataclass
class PreparedStatement:
    """What a handle stands for."""

    handle: bytes
    token_id: str
    sql: str
    kind: Kind
    parameter_names: list[str]
    dataset_schema: pa.Schema
    parameter_schema: pa.Schema
    last_used: float = field(default_factory=time.monotonic)
    #: Parameter sets bound by the last DoPut (None: nothing bound yet).
    bound: ParameterBatch | None = None


class PreparedStatements:
    """In-memory prepared statements with an idle time-to-live."""

    def __init__(self, idle_ttl_s: float = 1800.0, max_per_token: int = 512) -> None:
        self.idle_ttl_s = idle_ttl_s
        self.max_per_token = max_per_token
        self._entries: dict[bytes, PreparedStatement] = {}
        self._lock = threading.Lock()

    def create(
        self,
        principal: Principal,
        *,
        sql: str,
        kind: Kind,
        parameter_names: list[str],
        dataset_schema: pa.Schema,
        parameter_schema: pa.Schema,
    ) -> PreparedStatement:
        entry = PreparedStatement(
            handle=PREFIX + secrets.token_urlsafe(20).encode(),
            token_id=principal.token_id,
            sql=sql,
            kind=kind,
            parameter_names=parameter_names,
            dataset_schema=dataset_schema,
            parameter_schema=parameter_schema,
        )
        with self._lock:
            self._expire()
            held = sum(1 for e in self._entries.values() if e.token_id == principal.token_id)
            if held >= self.max_per_token:
                raise ResourceExhausted(
                    f"this token holds {held} open prepared statements; close some first"
                )
            self._entries[entry.handle] = entry
        return entry

    def get(self, principal: Principal, handle: bytes) -> PreparedStatement:
        """The live statement behind `handle`, if this token created it (resets its TTL)."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None and self._expired(entry):
                del self._entries[handle]
                entry = None
        if entry is None:
            raise NotFound("unknown, closed or expired prepared statement: prepare it again")
        if entry.token_id != principal.token_id:
            raise PermissionDenied("this prepared statement belongs to another token")
        entry.last_used = time.monotonic()
        return entry

    def close(self, principal: Principal, handle: bytes) -> None:
        """Forget a statement. Closing one that is already gone is not an error."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None:
                return
            if entry.token_id != principal.token_id:
                raise PermissionDenied("this prepared statement belongs to another token")
            del self._entries[handle]

    def _expired(self, entry: PreparedStatement) -> bool:
        return time.monotonic() - entry.last_used > self.idle_ttl_s

    def _expire(self) -> None:
        for key in [k for k, e in self._entries.items() if self._expired(e)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
