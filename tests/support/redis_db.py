"""The Redis the tests use, and databases in it that a test claims for itself.

The server comes from `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`, the one
`.ci/run` starts); its database number, if any, is ignored. A test never uses a fixed
database number and never flushes one it did not create: `scratch_database()` claims
an empty database (a marker key set with NX, so two test processes cannot both claim
it), hands out its URL, and on exit flushes it only if the marker is still its own.

    with scratch_database() as url:      # "redis://127.0.0.1:6379/5"
        start_server(..., env={"AGENTDATA_REDIS_URL": url})
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import redis

#: The variable that points the tests at another Redis.
VARIABLE = "TEST_REDIS_URL"
DEFAULT_URL = "redis://127.0.0.1:6379"
MARKER = "agentdata-tests:claimed-by"


def server_url() -> str:
    """The tests' Redis server, without a database number."""
    parts = urlsplit(os.environ.get(VARIABLE) or DEFAULT_URL)
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))


def database_url(db: int) -> str:
    parts = urlsplit(server_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


@contextmanager
def scratch_database() -> Iterator[str]:
    """Claim an empty database of the tests' Redis for the duration; yield its URL."""
    owner = f"{os.getpid()}-{secrets.token_hex(8)}"
    admin = redis.Redis.from_url(database_url(0))
    try:
        count = int(admin.config_get("databases").get("databases") or 16)
    except redis.ResponseError:  # CONFIG may be disabled: Redis's default
        count = 16
    finally:
        admin.close()
    claimed: tuple[int, redis.Redis] | None = None
    for db in range(1, count):
        client = redis.Redis.from_url(database_url(db))
        # Empty, and the marker ours: a database anyone else uses has keys in it.
        if client.dbsize() == 0 and client.set(MARKER, owner, nx=True):
            claimed = (db, client)
            break
        client.close()
    if claimed is None:
        raise RuntimeError(f"no empty database in the Redis at {server_url()} ({VARIABLE})")
    db, client = claimed
    try:
        yield database_url(db)
    finally:
        if client.get(MARKER) == owner.encode():
            client.flushdb()
        client.close()
