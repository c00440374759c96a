"""One run of a sync at a time: a lock per spec that expires if its holder dies.

    lock = sync_lock(settings, "orders", owner=f"{job_id}:{attempt_id}")
    if lock.try_acquire():          # SET agentdata:sync-lock:orders <owner> NX PX <ttl>
        try:
            ...                     # a thread refreshes the expiry every ttl/3
            if lock.lost.is_set():  # the refresh failed: another run may hold it now
                abort()
        finally:
            lock.release()          # deletes the key only if we still own it

With Redis (Celery mode) the lock is a Redis key, so it holds across worker processes
and machines; without Redis (embedded mode) it is an in-process table with the same
expiry rules. Either way a holder that dies (a `kill -9`ed worker) stops refreshing,
and the lock frees itself `sync_lock_ttl_s` later: a re-delivered run then takes it.

Refresh and release compare the owner first (one Lua script each, atomic in Redis),
so a run that lost its lock (it stalled past the expiry and another run took over)
can never extend or delete the new holder's lock. A refresh that cannot reach Redis
keeps trying; once the expiry has passed without a successful refresh the lock counts
as lost and the run must stop before it commits anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Protocol

from agentdata.errors import Unavailable
from agentdata.settings import Settings

log = logging.getLogger("agentdata.worker.sync")

KEY_PREFIX = "agentdata:sync-lock:"

# KEYS[1] = lock key, ARGV[1] = owner, ARGV[2] = ttl in ms.
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class SyncLock(Protocol):
    """A named lock with an owner and an expiry, refreshed while held."""

    name: str
    owner: str
    ttl_s: float
    #: Set when the lock could not be kept (expired without refresh, taken by another).
    lost: threading.Event

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""
        ...

    def holder(self) -> str | None:
        """The current owner, or None if the lock is free."""
        ...

    def release(self) -> None:
        """Stop refreshing and free the lock if this owner still holds it."""
        ...


class _Refreshing:
    """The refresh thread and the `lost` flag, shared by both implementations."""

    def __init__(self, name: str, owner: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("lock ttl must be positive")
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = 0.0

    def _extend(self) -> bool:
        """Push the expiry out; False if the lock is no longer ours."""
        raise NotImplementedError

    def _start_refreshing(self) -> None:
        self._last_ok = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"sync-lock-{self.name}", daemon=True
        )
        self._thread.start()

    def _stop_refreshing(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _loop(self) -> None:
        every = max(0.05, self.ttl_s / 3)
        while not self._stop.wait(every):
            try:
                if self._extend():
                    self._last_ok = time.monotonic()
                    continue
                log.warning("sync lock %s: taken over by %s", self.name, self.holder())
            except Exception as e:  # the store is unreachable: retry until the expiry
                if time.monotonic() - self._last_ok < self.ttl_s:
                    log.warning("sync lock %s: refresh failed (%s), retrying", self.name, e)
                    continue
                log.warning("sync lock %s: not refreshed within its ttl: lost", self.name)
            self.lost.set()
            return

    def holder(self) -> str | None:
        raise NotImplementedError


class RedisLock(_Refreshing):
    """The lock as a Redis key (`SET NX PX`), for Celery workers on many machines."""

    def __init__(self, client: Any, name: str, owner: str, ttl_s: float) -> None:
        super().__init__(name, owner, ttl_s)
        self._redis = client
        self.key = KEY_PREFIX + name

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def try_acquire(self) -> bool:
        with _redis_errors("acquire the sync lock"):
            taken = bool(self._redis.set(self.key, self.owner, nx=True, px=self._ttl_ms))
        if taken:
            self.lost.clear()
            self._start_refreshing()
        return taken

    def holder(self) -> str | None:
        with _redis_errors("read the sync lock"):
            value = self._redis.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def _extend(self) -> bool:
        return bool(self._redis.eval(_REFRESH, 1, self.key, self.owner, self._ttl_ms))

    def release(self) -> None:
        self._stop_refreshing()
        try:
            self._redis.eval(_RELEASE, 1, self.key, self.owner)
        except Exception as e:  # it expires on its own
            log.warning(
                "sync lock %s: release failed (%s); it expires in %gs", self.name, e, self.ttl_s
            )
        with contextlib.suppress(Exception):
            self._redis.close()


class LocalLock(_Refreshing):
    """The lock in this process's memory, for the embedded runner (one server process)."""

    _table: dict[str, tuple[str, float]] = {}
    _guard = threading.Lock()

    def try_acquire(self) -> bool:
        now = time.monotonic()
        with self._guard:
            current = self._table.get(self.name)
            if current is not None and current[1] > now:
                return False
            self._table[self.name] = (self.owner, now + self.ttl_s)
        self.lost.clear()
        self._start_refreshing()
        return True

    def holder(self) -> str | None:
        with self._guard:
            current = self._table.get(self.name)
        if current is None or current[1] <= time.monotonic():
            return None
        return current[0]

    def _extend(self) -> bool:
        now = time.monotonic()
        with self._guard:
            current = self._table.get(self.name)
            if current is None or current[0] != self.owner or current[1] <= now:
                return False
            self._table[self.name] = (self.owner, now + self.ttl_s)
        return True

    def release(self) -> None:
        self._stop_refreshing()
        with self._guard:
            current = self._table.get(self.name)
            if current is not None and current[0] == self.owner:
                del self._table[self.name]


@contextlib.contextmanager
def _redis_errors(action: str) -> Any:
    try:
        yield
    except Exception as e:
        from redis.exceptions import RedisError

        if isinstance(e, RedisError | OSError):
            # The URL (and its password) stays out of the message.
            raise Unavailable(f"cannot {action}: Redis is unreachable ({type(e).__name__})") from e
        raise


def sync_lock(settings: Settings, name: str, owner: str) -> SyncLock:
    """The lock for sync `name`: in Redis when `redis_url` is set, in-process otherwise."""
    ttl = settings.sync_lock_ttl_s
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        return RedisLock(client, name, owner, ttl)
    return LocalLock(name, owner, ttl)


def owner_job(owner: str | None) -> str | None:
    """The job id part of an owner string (`<job_id>:<attempt id>`)."""
    if not owner:
        return None
    return owner.split(":", 1)[0]
