"""Artefacts: files users upload and exports produce, stored atomically under generated ids.

Layout: the bytes live in `<data_dir>/artefacts/<id>` (32 hex digits, mode 0600);
name, content type, size, SHA-256, owner, source, job and expiry live in the meta
store's `artefacts` table. The user's filename is display metadata only (see
`safe_name`), so no name can reach the file system; a name with a control character
or longer than 255 bytes is refused.

Writing is always: temp file `.tmp-<uuid>` in the same directory → bytes counted and
hashed as they arrive (beyond `max_bytes`: `PayloadTooLarge`; beyond the owner's
quota: `QuotaExceeded`) → fsync → one meta transaction that checks the quota again,
inserts the record and renames the temp file into place → fsync of the directory.
A writer that fails or disappears leaves nothing; a crash leaves at most a temp file
or an orphan, which `reconcile()` (run at start-up) removes.

Python API (in-process writers, maintenance, metrics)::

    store = core.artefacts
    with store.open_temp() as tmp:              # file-like: write / tell / flush
        for chunk in chunks:
            tmp.write(chunk)                    # or let a native writer fill tmp.path
        art = tmp.commit(name="orders.parquet", content_type="application/vnd.apache.parquet",
                         owner=job.owner, source="export", job_id=job.id,
                         expires_in_s=store.export_ttl_s)
    # leaving the block without commit() discards the temp file

    store.add_file(path, name=..., owner=...)   # move a finished file in (hashes it)
    store.get(id) / store.get_for(principal, id)
    store.list(owner=, source=, name_prefix=, job_id=, created_before=,
               include_expired=, limit=, offset=)     -> (artefacts, total)
    store.list_expired(now)                     # expires_at <= now, oldest first
    store.delete(id)                            # file and record together
    store.usage()                               # per owner and total, with the quota
    store.reconcile()                           # drop stray temp files, orphans, dangling rows

Expired artefacts are invisible to `get`/`list` (unless asked) but keep their disk
space until maintenance deletes them.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agentdata.errors import (
    ChecksumMismatch,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
)
from agentdata.meta import MetaStore
from agentdata.names import validate_name
from agentdata.tokens import Principal

log = logging.getLogger(__name__)

SOURCES = ("upload", "export")
TEMP_PREFIX = ".tmp-"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# type/subtype with optional parameters, RFC 9110 token characters only.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(
    rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*$"
)
_MAX_EXPIRY_S = 100 * 365 * 24 * 3600


@dataclass(frozen=True)
class Artefact:
    """One stored artefact's metadata (as the REST API shows it)."""

    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    owner: str | None
    created_at: float
    expires_at: float | None
    source: str
    job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())


# -- names and content types ---------------------------------------------------
def safe_name(raw: str | None, default: str = "artefact") -> str:
    """The display name for a client's file name: its last path component, without
    leading dots or spaces (`default` when nothing is left, or none was given).

    A name with a control character (NUL, newline, escape, bidi overrides, ...) or
    longer than 255 bytes of UTF-8 is refused (InvalidArgument), never repaired: the
    client learns its name was not kept, and nothing is stored.
    """
    if not raw:
        return default
    name = validate_name(unicodedata.normalize("NFC", raw), "artefact name")
    name = re.split(r"[/\\]", name)[-1]
    name = name.strip().lstrip(". ").strip()
    return name or default


def safe_content_type(raw: str | None) -> str:
    """The content type if it is a well-formed media type, else application/octet-stream."""
    value = (raw or "").strip()
    if not value or len(value) > 200 or not _CONTENT_TYPE.match(value):
        return DEFAULT_CONTENT_TYPE
    return value


def check_sha256(value: str | None) -> str | None:
    """Normalise a hex SHA-256 from a client (None passes through)."""
    if value is None:
        return None
    v = value.strip().lower()
    if not _SHA256.match(v):
        raise InvalidArgument("X-Checksum-SHA256 must be 64 hex digits")
    return v


def _check_id(artefact_id: str) -> None:
    if not _ID.match(artefact_id):
        raise NotFound(f"no artefact with id {artefact_id[:64]!r}")


# -- writing ---------------------------------------------------------------------
class PendingArtefact:
    """A temp file being written: counts and hashes bytes, then commits or vanishes.

    File-like enough for pyarrow and csv writers (`write`, `tell`, `flush`, `closed`).
    `close()` only stops writing; `commit()` publishes; leaving a `with` block without
    committing (or `discard()`) removes the temp file.
    """

    def __init__(self, store: ArtefactStore, path: Path, *, max_bytes: int) -> None:
        self._store = store
        self.path = path
        self.max_bytes = max_bytes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=1024 * 1024)
        self._hash = hashlib.sha256()
        self.size = 0
        self.committed: Artefact | None = None
        self._discarded = False

    # file-like surface -----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append bytes; raises PayloadTooLarge past `max_bytes` (the caller discards)."""
        if self._file is None:
            raise ValueError("write to a closed artefact")
        n = len(data)
        if self.size + n > self.max_bytes:
            raise PayloadTooLarge(
                f"artefact larger than the limit of {self.max_bytes} bytes",
                detail={"limit_bytes": self.max_bytes},
            )
        try:
            self._file.write(data)
        except OSError as e:
            raise _storage_error(e) from None
        self._hash.update(data)
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        """Finish writing: flush and fsync (idempotent). Does not publish."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            raise _storage_error(e) from None
        finally:
            f.close()

    # publishing ------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def commit(
        self,
        *,
        name: str | None,
        owner: str | None,
        content_type: str | None = None,
        source: str = "upload",
        job_id: str | None = None,
        expires_in_s: float | None = None,
        expected_sha256: str | None = None,
    ) -> Artefact:
        """Publish the file under a new id (atomic); checks checksum, size and quota."""
        if self.committed is not None:
            return self.committed
        if self._discarded:
            raise ValueError("artefact already discarded")
        self.close()
        on_disk = self.path.stat().st_size
        if on_disk != self.size:
            # A native writer filled `self.path` directly: count and hash what it wrote.
            self.size, self._hash = on_disk, _hash_file(self.path)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(
                    f"artefact larger than the limit of {self.max_bytes} bytes",
                    detail={"limit_bytes": self.max_bytes},
                )
        expected = check_sha256(expected_sha256)
        if expected is not None and expected != self.sha256:
            raise ChecksumMismatch(
                "the content's SHA-256 does not match X-Checksum-SHA256; nothing was stored",
                detail={"expected": expected, "actual": self.sha256},
            )
        self.committed = self._store._publish(
            self,
            name=safe_name(name),
            owner=owner,
            content_type=safe_content_type(content_type),
            source=source,
            job_id=job_id,
            expires_in_s=expires_in_s,
        )
        return self.committed

    def discard(self) -> None:
        """Drop the temp file (idempotent; a no-op after commit)."""
        if self.committed is not None or self._discarded:
            return
        self._discarded = True
        if self._file is not None:
            f, self._file = self._file, None
            with contextlib.suppress(OSError):
                f.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._store._forget_temp(self.path)

    def __enter__(self) -> PendingArtefact:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


# -- the store ---------------------------------------------------------------------
class ArtefactStore:
    """Artefact files plus their records in the meta store; see the module docstring."""

    def __init__(
        self,
        meta: MetaStore,
        directory: Path,
        *,
        max_bytes: int,
        quota_bytes: int,
        export_ttl_s: float,
    ) -> None:
        self._meta = meta
        self.directory = directory
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self.export_ttl_s = export_ttl_s
        # Serialises publish / delete / reconcile, so reconcile never sees a file
        # that is renamed into place but whose record is not yet committed.
        self._lock = threading.Lock()
        self._temps: set[Path] = set()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # writing ---------------------------------------------------------------------
    def open_temp(self, *, max_bytes: int | None = None) -> PendingArtefact:
        """A new temp file in the artefacts directory (see `PendingArtefact`)."""
        path = self.directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        with self._lock:
            self._temps.add(path)
        try:
            return PendingArtefact(self, path, max_bytes=max_bytes or self.max_bytes)
        except OSError as e:
            self._forget_temp(path)
            raise _storage_error(e) from None

    def add_file(self, src: Path, *, name: str | None = None, **meta: Any) -> Artefact:
        """Move (or copy, across file systems) a finished file in as a new artefact."""
        with self.open_temp() as tmp, open(src, "rb") as f:
            while chunk := f.read(1024 * 1024):
                tmp.write(chunk)
            art = tmp.commit(name=name if name is not None else src.name, **meta)
        with contextlib.suppress(FileNotFoundError):
            src.unlink()
        return art

    def _forget_temp(self, path: Path) -> None:
        with self._lock:
            self._temps.discard(path)

    def _publish(
        self,
        tmp: PendingArtefact,
        *,
        name: str,
        owner: str | None,
        content_type: str,
        source: str,
        job_id: str | None,
        expires_in_s: float | None,
    ) -> Artefact:
        if source not in SOURCES:
            raise InvalidArgument(f"source must be one of {', '.join(SOURCES)} (got {source!r})")
        if expires_in_s is not None and not (0 < expires_in_s <= _MAX_EXPIRY_S):
            raise InvalidArgument("expires_in_s must be positive (and under 100 years)")
        now = time.time()
        art = Artefact(
            id=uuid.uuid4().hex,
            name=name,
            content_type=content_type,
            size=tmp.size,
            sha256=tmp.sha256,
            owner=owner,
            created_at=now,
            expires_at=now + expires_in_s if expires_in_s is not None else None,
            source=source,
            job_id=job_id,
        )
        final = self.directory / art.id
        replaced: list[str] = []
        with self._lock, self._meta.transaction() as tx:
            if source == "export" and job_id is not None:
                # One artefact per export job and name: a retried export's upload
                # replaces what an earlier attempt of the job stored (idempotent retries).
                replaced = [
                    r["id"]
                    for r in tx.execute(
                        "SELECT id FROM artefacts WHERE source = 'export' AND job_id = ? AND name = ?",
                        (job_id, name),
                    ).fetchall()
                ]
                for old_id in replaced:
                    tx.execute("DELETE FROM artefacts WHERE id = ?", (old_id,))
            if owner is not None and self.quota_bytes > 0:
                used = _live_bytes(tx, owner, now)
                if used + art.size > self.quota_bytes:
                    raise QuotaExceeded(
                        f"owner quota of {self.quota_bytes} bytes exceeded "
                        f"({used} used, {art.size} more requested)",
                        detail={"quota_bytes": self.quota_bytes, "used_bytes": used},
                    )
            tx.execute(
                "INSERT INTO artefacts (id, name, content_type, size, sha256, owner, source,"
                " job_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    art.id,
                    art.name,
                    art.content_type,
                    art.size,
                    art.sha256,
                    art.owner,
                    art.source,
                    art.job_id,
                    art.created_at,
                    art.expires_at,
                ),
            )
            # Inside the transaction: if the rename fails, the record is rolled back.
            os.rename(tmp.path, final)
            self._temps.discard(tmp.path)
        # After the commit: a file whose record is gone is at worst an orphan, which
        # `reconcile` removes; a record whose file is gone would be a broken artefact.
        for old_id in replaced:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / old_id).unlink()
        if replaced:
            log.info("artefact %s replaces %s (export job %s)", art.id, ", ".join(replaced), job_id)
        _fsync_dir(self.directory)
        log.info(
            "artefact %s stored: %d bytes, source %s, owner %s", art.id, art.size, source, owner
        )
        return art

    def remaining_quota(self, owner: str | None) -> int | None:
        """Bytes `owner` may still store, or None without a quota."""
        if owner is None or self.quota_bytes <= 0:
            return None
        return max(0, self.quota_bytes - self.used_bytes(owner))

    def used_bytes(self, owner: str) -> int:
        """Bytes of `owner`'s live (unexpired) artefacts: what counts against the quota."""
        row = self._meta.one(
            "SELECT coalesce(sum(size), 0) FROM artefacts"
            " WHERE owner = ? AND (expires_at IS NULL OR expires_at > ?)",
            (owner, time.time()),
        )
        return int(row[0]) if row else 0

    # reading ---------------------------------------------------------------------
    def get(self, artefact_id: str, *, include_expired: bool = False) -> Artefact:
        """An artefact's metadata; expired ones are not found unless asked for."""
        _check_id(artefact_id)
        row = self._meta.one("SELECT * FROM artefacts WHERE id = ?", (artefact_id,))
        if row is None:
            raise NotFound(f"no artefact with id {artefact_id!r}")
        art = _artefact(row)
        if not include_expired and art.expired():
            raise NotFound(f"artefact {artefact_id!r} has expired")
        return art

    def get_for(self, principal: Principal, artefact_id: str) -> Artefact:
        """An artefact the principal may see: its own, or any for an admin (else not found)."""
        art = self.get(artefact_id)
        if not principal.is_admin and art.owner != principal.token_id:
            raise NotFound(f"no artefact with id {artefact_id!r}")
        return art

    def open(self, art: Artefact) -> BinaryIO:
        """The artefact's bytes, opened now: a later delete does not cut a reader short."""
        try:
            return open(self.directory / art.id, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise NotFound(f"artefact {art.id!r} was deleted") from None

    def path(self, art: Artefact) -> Path:
        return self.directory / art.id

    def list(
        self,
        *,
        owner: str | None = None,
        source: str | None = None,
        name_prefix: str | None = None,
        job_id: str | None = None,
        created_before: float | None = None,
        include_expired: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Artefact], int]:
        """Artefacts, newest first, with the total count for paging."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("owner", owner), ("source", source), ("job_id", job_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if name_prefix:
            where.append("substr(name, 1, length(?)) = ?")
            params += [name_prefix, name_prefix]
        if created_before is not None:
            where.append("created_at < ?")
            params.append(created_before)
        if not include_expired:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(time.time())
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total_row = self._meta.one(f"SELECT count(*) FROM artefacts{clause}", params)
        rows = self._meta.all(
            f"SELECT * FROM artefacts{clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_artefact(r) for r in rows], int(total_row[0]) if total_row else 0

    def list_expired(
        self, now: float | None = None, *, limit: int = 1000
    ) -> builtins.list[Artefact]:
        """Artefacts whose expiry has passed (oldest expiry first), for maintenance."""
        rows = self._meta.all(
            "SELECT * FROM artefacts WHERE expires_at IS NOT NULL AND expires_at <= ?"
            " ORDER BY expires_at LIMIT ?",
            (now if now is not None else time.time(), limit),
        )
        return [_artefact(r) for r in rows]

    def usage(self, owner: str | None = None) -> dict[str, Any]:
        """Per-owner live bytes and counts (against the quota) and totals on disk.

        `owners[].bytes` counts unexpired artefacts (what the quota limits);
        `total` counts every stored file, including expired ones awaiting cleanup.
        """
        now = time.time()
        owner_clause, params = ("WHERE owner IS ?", [owner]) if owner is not None else ("", [])
        rows = self._meta.all(
            "SELECT owner, count(*), coalesce(sum(size), 0) FROM artefacts "
            f"{owner_clause}{' AND' if owner_clause else 'WHERE'} "
            "(expires_at IS NULL OR expires_at > ?) GROUP BY owner ORDER BY owner",
            [*params, now],
        )
        quota = self.quota_bytes if self.quota_bytes > 0 else None
        owners = [
            {
                "owner": r[0],
                "count": int(r[1]),
                "bytes": int(r[2]),
                "quota_bytes": quota if r[0] is not None else None,
                "remaining_bytes": max(0, quota - int(r[2]))
                if quota is not None and r[0] is not None
                else None,
            }
            for r in rows
        ]
        if owner is not None and not owners:
            owners = [
                {
                    "owner": owner,
                    "count": 0,
                    "bytes": 0,
                    "quota_bytes": quota,
                    "remaining_bytes": quota,
                }
            ]
        tot = self._meta.one(
            "SELECT count(*), coalesce(sum(size), 0),"
            " coalesce(sum(CASE WHEN expires_at <= ? THEN 1 ELSE 0 END), 0),"
            " coalesce(sum(CASE WHEN expires_at <= ? THEN size ELSE 0 END), 0)"
            f" FROM artefacts {owner_clause}",
            [now, now, *params],
        )
        assert tot is not None
        return {
            "owners": owners,
            "total": {
                "count": int(tot[0]),
                "bytes": int(tot[1]),
                "expired_count": int(tot[2]),
                "expired_bytes": int(tot[3]),
            },
            "quota_bytes": quota,
            "max_upload_bytes": self.max_bytes,
        }

    def bytes_by_source(self) -> dict[str, tuple[int, int]]:
        """source -> (count, bytes) of every stored artefact (for the metrics gauges)."""
        rows = self._meta.all(
            "SELECT source, count(*), coalesce(sum(size), 0) FROM artefacts GROUP BY source"
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    # deleting --------------------------------------------------------------------
    def delete(self, artefact_id: str) -> Artefact:
        """Remove the file and its record together; raises NotFound if there is none."""
        _check_id(artefact_id)
        with self._lock, self._meta.transaction() as tx:
            row = tx.execute("SELECT * FROM artefacts WHERE id = ?", (artefact_id,)).fetchone()
            if row is None:
                raise NotFound(f"no artefact with id {artefact_id!r}")
            tx.execute("DELETE FROM artefacts WHERE id = ?", (artefact_id,))
            # Inside the transaction: if the unlink fails, the record stays (no
            # record without a file, no file without a record).
            with contextlib.suppress(FileNotFoundError):
                (self.directory / artefact_id).unlink()
        art = _artefact(row)
        log.info("artefact %s deleted (%d bytes)", art.id, art.size)
        return art

    def delete_for(self, principal: Principal, artefact_id: str) -> Artefact:
        """Delete an artefact the principal owns (admins: any)."""
        art = self.get(artefact_id, include_expired=True)
        if not principal.is_admin and art.owner != principal.token_id:
            raise NotFound(f"no artefact with id {artefact_id!r}")
        return self.delete(artefact_id)

    def reconcile(self) -> dict[str, int]:
        """Make files and records agree: remove temp files no writer holds, files
        without a record, and records whose file is gone. Returns what it removed."""
        removed = {"temp_files": 0, "orphan_files": 0, "dangling_records": 0}
        with self._lock:
            ids = {r[0] for r in self._meta.all("SELECT id FROM artefacts")}
            for entry in os.scandir(self.directory):
                path = Path(entry.path)
                if entry.name.startswith(TEMP_PREFIX) and path not in self._temps:
                    kind = "temp_files"
                elif _ID.match(entry.name) and entry.name not in ids:
                    kind = "orphan_files"
                else:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed[kind] += 1
            present = {e.name for e in os.scandir(self.directory)}
            missing = sorted(ids - present)
            for artefact_id in missing:
                self._meta.execute("DELETE FROM artefacts WHERE id = ?", (artefact_id,))
            removed["dangling_records"] = len(missing)
        if any(removed.values()):
            log.warning("artefact store reconciled: %s", removed)
        return removed

    def temp_files(self) -> builtins.list[Path]:
        """Temp files present now (tests and diagnostics)."""
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def check_owner_filter(principal: Principal, owner: str | None) -> str | None:
    """The owner filter a principal may use: admins any (or none), others only their own."""
    if principal.is_admin:
        return owner
    if owner is not None and owner != principal.token_id:
        raise PermissionDenied("only an admin may list another token's artefacts")
    return principal.token_id


def _live_bytes(tx: Any, owner: str, now: float) -> int:
    row = tx.execute(
        "SELECT coalesce(sum(size), 0) FROM artefacts"
        " WHERE owner = ? AND (expires_at IS NULL OR expires_at > ?)",
        (owner, now),
    ).fetchone()
    return int(row[0])


def _hash_file(path: Path) -> Any:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(e: OSError) -> Exception:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaExceeded("the server's disk is full")
    return e


def _artefact(r: Any) -> Artefact:
    return Artefact(
        id=r["id"],
        name=r["name"],
        content_type=r["content_type"],
        size=int(r["size"]),
        sha256=r["sha256"],
        owner=r["owner"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        source=r["source"],
        job_id=r["job_id"],
    )


def iter_file(f: BinaryIO, start: int, length: int, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """Read `length` bytes from `start` in chunks (for range responses)."""
    f.seek(start)
    left = length
    while left > 0:
        data = f.read(min(chunk, left))
        if not data:
            break
        left -= len(data)
        yield data
