"""Tickets: opaque, short-lived, bound to the token that obtained them.

Wire format: 20 unpredictable bytes rendered as `adt1.<base64url>` (e.g.
`adt1.q9Jf3x0cV7mYb2e1k8WfZy5tHnE`): a keyed BLAKE2b of a counter, under a 32-byte key
drawn from the OS's random source once per store (a pseudorandom function: without
the key no ticket can be predicted from others; drawing 20 fresh OS bytes per ticket
cost more than a point query's lookup). The ticket names an entry held in server memory
(what to run, for which token, until when); it carries no SQL and no claims, so
nothing can be read from or forged into it. A ticket redeemed by another token is
refused with PERMISSION_DENIED; an unknown or expired one with NOT_FOUND.
The ticket id doubles as the query id for `cancel`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from agentdata.errors import NotFound, PermissionDenied
from agentdata.tokens import Principal

PREFIX = b"adt1."


@dataclass(frozen=True)
class TicketEntry:
    """What a ticket stands for."""

    ticket: bytes
    token_id: str
    sql: str
    expires: float
    truncate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def query_id(self) -> str:
        return self.ticket.decode()


class TicketStore:
    """In-memory tickets with a time-to-live."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._key = secrets.token_bytes(32)
        self._count = itertools.count(1)
        #: In issue order, so in expiry order (one TTL for all): expired ones are at the front.
        self._entries: OrderedDict[bytes, TicketEntry] = OrderedDict()
        self._lock = threading.Lock()

    def issue(
        self, principal: Principal, sql: str, *, truncate: bool = False, **extra: Any
    ) -> TicketEntry:
        ticket = PREFIX + self._random_part()
        entry = TicketEntry(
            ticket=ticket,
            token_id=principal.token_id,
            sql=sql,
            expires=time.monotonic() + self.ttl_s,
            truncate=truncate,
            extra=extra,
        )
        with self._lock:
            self._expire()
            self._entries[ticket] = entry
        return entry

    def _random_part(self) -> bytes:
        counter = next(self._count).to_bytes(16, "big")
        digest = hashlib.blake2b(counter, key=self._key, digest_size=20).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def redeem(self, principal: Principal, ticket: bytes) -> TicketEntry:
        """The entry behind `ticket`, if it is live and was issued to this token."""
        with self._lock:
            entry = self._entries.get(ticket)
        if entry is None or entry.expires < time.monotonic():
            raise NotFound("unknown or expired ticket: call GetFlightInfo again")
        if entry.token_id != principal.token_id:
            raise PermissionDenied("this ticket was issued to another token")
        return entry

    def discard(self, ticket: bytes) -> None:
        """Forget `ticket` (its call failed after it was issued)."""
        with self._lock:
            self._entries.pop(ticket, None)

    def _expire(self) -> None:
        # From the front until the first live one: a ticket's cost, not the store's size
        # (scanning every entry on each issue took 15% of a loaded server's GIL time).
        now = time.monotonic()
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires >= now:
                return
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
