"""Fair admission: no token can take the whole server.

Every query (from its check to the end of its stream) holds two slots:

- one of its token's `max_concurrent` (the token's own field, else the setting
  `token_max_concurrent`). A token over it is refused at once: it is the one
  flooding, and waiting would only let it fill the queue;
- one of the server's `max_concurrent_queries`. When all are taken, the query waits
  in a FIFO queue of at most `admission_queue` entries for up to `admission_wait_s`;
  a full queue refuses at once, a wait that runs out refuses then.

Refusals are `[resource_exhausted]` with a retry hint (`detail.retry_after_s`, and in
the message). Admins are exempt from the per-token limit, not from the server's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from agentdata import metrics
from agentdata.errors import ResourceExhausted
from agentdata.tokens import Principal

Release = Callable[[], None]


class Admission:
    """Per-token and server-wide concurrency, with a bounded wait queue."""

    def __init__(
        self, *, max_concurrent: int, queue: int, wait_s: float, token_default: int
    ) -> None:
        self.max_concurrent = max_concurrent
        self.queue = queue
        self.wait_s = wait_s
        self.token_default = token_default
        self._lock = threading.Lock()
        self._running = 0
        self._per_token: dict[str, int] = {}
        #: Waiters in arrival order; each is woken when a slot is handed to it.
        self._waiting: deque[threading.Event] = deque()

    def admit(self, principal: Principal) -> Release:
        """Take the slots for one query (waiting for a server slot if need be); returns
        the function that gives them back. Raises ResourceExhausted when refused."""
        token = principal.token_id
        limit = principal.max_concurrent or self.token_default
        with self._lock:
            held = self._per_token.get(token, 0)
            if not principal.is_admin and held >= limit:
                metrics.ADMISSION_REFUSED.labels("token").inc()
                raise ResourceExhausted(
                    f"this token already runs {held} queries, its max_concurrent; retry when "
                    "one of them finishes (in about 1 s)",
                    detail={"retry_after_s": 1, "max_concurrent": limit},
                )
            self._per_token[token] = held + 1
            if self._running < self.max_concurrent and not self._waiting:
                self._running += 1
                return self._releaser(token)
            if len(self._waiting) >= self.queue:
                self._give_back_token(token)
                metrics.ADMISSION_REFUSED.labels("server").inc()
                raise self._busy(f"{len(self._waiting)} queries are waiting already")
            turn = threading.Event()
            self._waiting.append(turn)
            metrics.ADMISSION_WAITING.inc()
        started = time.monotonic()
        admitted = turn.wait(self.wait_s)
        with self._lock:
            if not admitted and not turn.is_set():
                self._waiting.remove(turn)
                metrics.ADMISSION_WAITING.dec()
                self._give_back_token(token)
                metrics.ADMISSION_REFUSED.labels("server").inc()
                raise self._busy(f"waited {time.monotonic() - started:.1f}s for a slot")
        # The releaser that woke us handed its server slot over (running unchanged).
        return self._releaser(token)

    def _busy(self, why: str) -> ResourceExhausted:
        retry = max(1, round(self.wait_s / 2))
        return ResourceExhausted(
            f"the server is at its limit of {self.max_concurrent} concurrent queries ({why}); "
            f"retry in about {retry} s",
            detail={"retry_after_s": retry, "max_concurrent_queries": self.max_concurrent},
        )

    def _give_back_token(self, token: str) -> None:
        held = self._per_token.get(token, 0) - 1
        if held > 0:
            self._per_token[token] = held
        else:
            self._per_token.pop(token, None)

    def _releaser(self, token: str) -> Release:
        done = False

        def release() -> None:
            nonlocal done
            with self._lock:
                if done:
                    return
                done = True
                self._give_back_token(token)
                if self._waiting:
                    # Hand the slot to the longest waiter: `running` stays as it is.
                    self._waiting.popleft().set()
                    metrics.ADMISSION_WAITING.dec()
                else:
                    self._running -= 1

        return release

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)
