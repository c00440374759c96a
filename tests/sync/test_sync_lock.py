"""The per-spec sync lock: one holder at a time, refreshed while held, freed when its
holder dies. Against the real Redis (a database this module claims, see
tests/support/redis_db.py) and the in-process equivalent of embedded mode."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from agentdata.settings import Settings
from tests.support.redis_db import scratch_database
from workers.sync.lock import KEY_PREFIX, LocalLock, RedisLock, owner_job, sync_lock


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    for key in c.scan_iter(KEY_PREFIX + "*"):
        c.delete(key)
    c.close()


#: How long a test watches a held lock: over two of its 0.5 s ttls, so only the refresh
#: thread can have kept it. A window in which nothing may change, not a wait for something.
WATCH_S = 1.2


def holds_throughout(check: Callable[[], bool], window: float = WATCH_S) -> None:
    """Assert `check()` at every look during `window` seconds."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert check()
        time.sleep(0.05)


def _redis_lock(client: redis.Redis, owner: str, ttl: float = 0.5) -> RedisLock:
    return RedisLock(redis.Redis(connection_pool=client.connection_pool), "orders", owner, ttl)


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_one_holder_at_a_time_and_refreshed_while_held(kind: str, client: redis.Redis) -> None:
    make = (
        functools.partial(_redis_lock, client)
        if kind == "redis"
        else (lambda o, ttl=0.5: LocalLock("orders", o, ttl))
    )
    first, second = make("job1:a"), make("job2:b")
    assert first.try_acquire()
    try:
        assert not second.try_acquire()
        assert owner_job(second.holder()) == "job1"
        holds_throughout(lambda: not second.try_acquire() and not first.lost.is_set())
        if kind == "redis":
            assert client.get(KEY_PREFIX + "orders") == b"job1:a"
    finally:
        first.release()
    assert second.holder() is None
    assert second.try_acquire()
    second.release()


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_a_dead_holders_lock_expires_and_release_never_frees_anothers(
    kind: str, client: redis.Redis
) -> None:
    make = (
        functools.partial(_redis_lock, client)
        if kind == "redis"
        else (lambda o, ttl=0.5: LocalLock("orders", o, ttl))
    )
    dead, heir = make("job1:dead"), make("job1:heir")
    assert dead.try_acquire()
    dead._stop_refreshing()  # the holder stops refreshing, as a killed worker does
    assert not heir.try_acquire()
    deadline = time.monotonic() + 10
    while not heir.try_acquire():  # until it expires: then the re-run takes it
        assert time.monotonic() < deadline, "a lock nobody refreshes never expired"
        time.sleep(0.05)
    try:
        dead.release()  # late release of the dead owner: a no-op
        holds_throughout(lambda: heir.holder() == "job1:heir" and not heir.lost.is_set())
    finally:
        heir.release()


def test_a_lock_taken_over_is_reported_lost(client: redis.Redis) -> None:
    lock = _redis_lock(client, "job1:a", ttl=0.5)
    assert lock.try_acquire()
    try:
        client.set(KEY_PREFIX + "orders", "job2:b")  # someone else holds it now
        assert lock.lost.wait(2)
    finally:
        lock.release()
    assert client.get(KEY_PREFIX + "orders") == b"job2:b"  # not freed by the loser


def test_redis_with_a_url_in_process_without(redis_url: str) -> None:
    assert isinstance(sync_lock(Settings(redis_url=redis_url), "x", "j:1"), RedisLock)
    assert isinstance(sync_lock(Settings(redis_url=None), "x", "j:1"), LocalLock)
