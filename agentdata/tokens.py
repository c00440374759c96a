"""Tokens: JWTs signed by the server, recorded (by id, never the secret) so they can be
listed and revoked, plus the bootstrap admin token.

A JWT carries `jti` (the record id), `sub` (the token's name), `role`, `exp`, and
the token's limits; verification pins the algorithm (HS256), so `alg=none` and
other-key tokens fail. Revocation is checked against the record on every call.
"""

from __future__ import annotations

import hmac
import json
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import jwt

from agentdata.bounds import MAX_INT64, MAX_SECONDS
from agentdata.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from agentdata.governance import Governance
from agentdata.meta import MetaStore
from agentdata.names import matches, parse_pattern, split_identifier, validate_name

if TYPE_CHECKING:
    from agentdata.jobs import JobStore

ALGORITHM = "HS256"
ADMIN_BOOTSTRAP_ID = "admin-bootstrap"


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do. Built from a verified token."""

    token_id: str
    name: str
    role: Role
    tables: tuple[str, ...] | None = None  # glob patterns on "schema.table"; None = all
    max_rows: int | None = None
    timeout_s: float | None = None
    expires_at: float | None = None
    #: Set when this is a job's delegated credential (see `TokenService.delegate`).
    job_id: str | None = None
    #: The cost guard: most rows a query may be estimated to scan (None = no limit).
    max_scan_rows: int | None = None
    #: Row filters and column masks (agentdata.governance); admins are exempt.
    governance: Governance | None = None
    #: Most queries this token may run at once (None = the server's default).
    max_concurrent: int | None = None

    @property
    def can_write(self) -> bool:
        return self.role in (Role.WRITER, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_read(self, schema: str, table: str) -> bool:
        """True if the table `schema.table` matches the allow-list, part by part
        (see `agentdata.names`: `crm.*` is any table directly in schema `crm`)."""
        if self.tables is None:
            return True
        return matches(self._patterns, schema, table)

    def can_read_table(self, qualified: str) -> bool:
        """`can_read` for a dotted name (quotes honoured; a bare name is in `main`)."""
        parts = split_identifier(qualified)
        if len(parts) == 1:
            parts = ["main", parts[0]]
        if len(parts) != 2:
            return False
        return self.can_read(parts[0], parts[1])

    @property
    def _patterns(self) -> tuple[tuple[str, str], ...]:
        # Parsed once per principal (frozen dataclass: cache in __dict__ directly).
        cached = self.__dict__.get("_parsed_patterns")
        if cached is None:
            cached = tuple(parse_pattern(p) for p in self.tables or ())
            object.__setattr__(self, "_parsed_patterns", cached)
        return cached

    def require_writer(self) -> None:
        if not self.can_write:
            raise PermissionDenied(f"role {self.role.value!r} may not write")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this call needs an admin token")


@dataclass
class TokenRecord:
    """A token as listed: everything but the secret."""

    id: str
    name: str
    role: str
    tables: list[str] | None
    max_rows: int | None
    timeout_s: float | None
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    created_by: str | None = None
    max_scan_rows: int | None = None
    row_filters: dict[str, str] | None = None
    column_masks: dict[str, dict[str, str]] | None = None
    max_concurrent: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tables": self.tables,
            "max_rows": self.max_rows,
            "timeout_s": self.timeout_s,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "created_by": self.created_by,
            "max_scan_rows": self.max_scan_rows,
            "row_filters": self.row_filters,
            "column_masks": self.column_masks,
            "max_concurrent": self.max_concurrent,
        }


class TokenVerifier(Protocol):
    """What an adapter's authentication needs of the token service (tests pass fakes)."""

    def verify(self, token: str | None) -> Principal:
        """The principal of a valid, unrevoked token; Unauthenticated otherwise."""
        ...


class TokenService:
    """Issues, verifies, lists and revokes tokens."""

    def __init__(
        self,
        meta: MetaStore,
        *,
        secret: str,
        admin_token: str,
        default_ttl_s: int,
        jobs: JobStore,
    ) -> None:
        if len(secret) < 32:
            raise InvalidArgument("the JWT secret must be at least 32 characters")
        self._meta = meta
        #: Whose states end delegated job credentials (see `_check_delegation`).
        self._jobs = jobs
        self._secret = secret
        self._admin_token = admin_token
        self._default_ttl_s = default_ttl_s
        self._admin = Principal(
            token_id=ADMIN_BOOTSTRAP_ID, name="admin (bootstrap)", role=Role.ADMIN
        )
        #: token id -> revoked? (see `_require_live`)
        self._live: dict[str, bool] = {}
        #: bearer token -> its verified principal, until it expires (no JWT decode on
        #: the hot path); delegated job credentials are not kept (their job may end).
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    # -- issuing -------------------------------------------------------------
    def create(
        self,
        *,
        name: str,
        role: str,
        tables: list[str] | None = None,
        ttl_seconds: int | None = None,
        max_rows: int | None = None,
        timeout_s: float | None = None,
        created_by: str | None = None,
        max_scan_rows: int | None = None,
        governance: Governance | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[TokenRecord, str]:
        """Create a token; returns its record and the JWT (shown once, never stored).

        `governance` must come from `agentdata.governance.validate` (checked against
        the database); it travels in the signed claims and the record."""
        try:
            role_v = Role(role)
        except ValueError:
            raise InvalidArgument(
                f"role must be one of reader, writer, admin (got {role!r})"
            ) from None
        validate_name(name, "token name")
        # Chained comparisons also refuse NaN; the bounds keep SQLite and JWT `exp` happy.
        if ttl_seconds is not None and not 0 < ttl_seconds <= MAX_SECONDS:
            raise InvalidArgument(f"ttl_seconds must be 1 to {MAX_SECONDS}")
        if max_rows is not None and not 0 < max_rows <= MAX_INT64:
            raise InvalidArgument(f"max_rows must be 1 to {MAX_INT64}")
        if timeout_s is not None and not 0 < timeout_s <= MAX_SECONDS:
            raise InvalidArgument(f"timeout_s must be positive and at most {MAX_SECONDS}")
        if max_scan_rows is not None and not 0 < max_scan_rows <= MAX_INT64:
            raise InvalidArgument(f"max_scan_rows must be 1 to {MAX_INT64}")
        if max_concurrent is not None and not 0 < max_concurrent <= 1_000_000:
            raise InvalidArgument("max_concurrent must be 1 to 1000000")
        if tables is not None:
            if not isinstance(tables, list):
                raise InvalidArgument("tables must be a list of 'schema.table' patterns")
            for pattern in tables:
                parse_pattern(pattern)  # raises InvalidArgument naming what is wrong
        now = time.time()
        record = TokenRecord(
            id=uuid.uuid4().hex,
            name=name,
            role=role_v.value,
            tables=list(tables) if tables is not None else None,
            max_rows=max_rows,
            timeout_s=timeout_s,
            created_at=now,
            expires_at=now + (ttl_seconds or self._default_ttl_s),
            created_by=created_by,
            max_scan_rows=max_scan_rows,
            row_filters=governance.row_filter_map() if governance else None,
            column_masks=governance.column_mask_map() if governance else None,
            max_concurrent=max_concurrent,
        )
        self._meta.execute(
            "INSERT INTO tokens (id, name, role, tables, max_rows, timeout_s, created_at, expires_at,"
            " created_by, max_scan_rows, row_filters, column_masks, max_concurrent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.name,
                record.role,
                json.dumps(record.tables) if record.tables is not None else None,
                record.max_rows,
                record.timeout_s,
                record.created_at,
                record.expires_at,
                created_by,
                record.max_scan_rows,
                _json_or_none(record.row_filters),
                _json_or_none(record.column_masks),
                max_concurrent,
            ),
        )
        claims = {
            "jti": record.id,
            "sub": record.name,
            "role": record.role,
            "iat": int(now),
            "exp": math.ceil(record.expires_at),
            "tables": record.tables,
            "max_rows": record.max_rows,
            "timeout_s": record.timeout_s,
            "max_scan_rows": record.max_scan_rows,
            **_governance_claims(governance, max_concurrent),
        }
        return record, jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def delegate(self, principal: Principal, *, job_id: str, ttl_s: int) -> str:
        """A short-lived credential for one job, acting as `principal` with its limits.

        A task (an export on a worker) calls the server with it: it has the caller's
        role, table allow-list, max_rows, max_scan_rows and timeout, and verifies as the caller's
        token id, so what it reads, uploads and reports belongs to the caller. It
        stops working when its job finishes, when the caller's token is revoked, or
        after `ttl_s` (never later than the caller's own expiry). Recorded like any
        token, so it can be listed and revoked.
        """
        now = time.time()
        expires = now + ttl_s
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        record_id = uuid.uuid4().hex
        gov = principal.governance
        self._meta.execute(
            "INSERT INTO tokens (id, name, role, tables, max_rows, timeout_s, created_at, expires_at,"
            " created_by, max_scan_rows, row_filters, column_masks, max_concurrent, job_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record_id,
                f"job {job_id} (delegated)",
                principal.role.value,
                json.dumps(list(principal.tables)) if principal.tables is not None else None,
                principal.max_rows,
                principal.timeout_s,
                now,
                expires,
                principal.token_id,
                principal.max_scan_rows,
                _json_or_none(gov.row_filter_map() if gov else None),
                _json_or_none(gov.column_mask_map() if gov else None),
                principal.max_concurrent,
                job_id,
            ),
        )
        claims = {
            "jti": record_id,
            "sub": principal.name,
            "role": principal.role.value,
            "iat": int(now),
            "exp": math.ceil(expires),
            "tables": list(principal.tables) if principal.tables is not None else None,
            "max_rows": principal.max_rows,
            "timeout_s": principal.timeout_s,
            "max_scan_rows": principal.max_scan_rows,
            **_governance_claims(gov, principal.max_concurrent),
            "for": principal.token_id,
            "job": job_id,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def redelegate(self, job_id: str, *, ttl_s: int) -> str:
        """A fresh credential for a job whose task must run again after a server restart
        (its first credential lived only in the lost task): the same identity and limits
        as the job's first credential, which its record keeps. NotFound if it has none,
        Unauthenticated if the caller's token is revoked or expired meanwhile."""
        row = self._meta.one(
            "SELECT * FROM tokens WHERE job_id = ? ORDER BY created_at DESC LIMIT 1",
            (job_id,),
        )
        if row is None or row["created_by"] is None:
            raise NotFound(f"job {job_id} has no delegated credential to renew")
        parent = str(row["created_by"])
        parent_expiry: float | None = None
        if parent != ADMIN_BOOTSTRAP_ID:
            caller = self._meta.one(
                "SELECT revoked_at, expires_at FROM tokens WHERE id = ?", (parent,)
            )
            if caller is None or caller["revoked_at"] is not None:
                raise Unauthenticated("the token this job was started with is revoked")
            parent_expiry = float(caller["expires_at"])
            if parent_expiry <= time.time():
                raise Unauthenticated("the token this job was started with has expired")
        tables = json.loads(row["tables"]) if row["tables"] else None
        acting = Principal(
            token_id=parent,
            name=f"job {job_id}",
            role=Role(row["role"]),
            tables=tuple(tables) if tables is not None else None,
            max_rows=row["max_rows"],
            timeout_s=row["timeout_s"],
            expires_at=parent_expiry,
            max_scan_rows=row["max_scan_rows"],
            governance=Governance.from_maps(
                _json_load(row["row_filters"]), _json_load(row["column_masks"])
            ),
            max_concurrent=row["max_concurrent"],
        )
        return self.delegate(acting, job_id=job_id, ttl_s=ttl_s)

    def _check_delegation(self, parent: str, job_id: str | None) -> None:
        """A delegated credential lives only while its caller's token and its job do."""
        if parent != ADMIN_BOOTSTRAP_ID:
            row = self._meta.one("SELECT revoked_at FROM tokens WHERE id = ?", (parent,))
            if row is None or row["revoked_at"] is not None:
                raise Unauthenticated("the token this credential was delegated from is revoked")
        if job_id is not None:
            state = self._jobs.state_of(job_id)
            if state is None or state.finished:
                raise Unauthenticated("this job credential ended with its job")

    def delete_expired_job_credentials(self, now: float) -> int:
        """Delete the records of delegated job credentials expired before `now` (they can
        never be used again); returns how many. User tokens stay listed until revoked."""
        return self._meta.execute(
            "DELETE FROM tokens WHERE job_id IS NOT NULL AND expires_at < ?", (now,)
        )

    # -- verifying -----------------------------------------------------------
    def _require_live(self, token_id: str) -> None:
        """Refuse unknown and revoked token ids. Each id's state is read from the meta
        store once and then kept here, where `revoke` updates it: the hot path of every
        call touches no SQLite, and revocation is still immediate (this process is the
        only one that revokes)."""
        revoked = self._live.get(token_id)
        if revoked is None:
            row = self._meta.one("SELECT revoked_at FROM tokens WHERE id = ?", (token_id,))
            if row is None:
                raise Unauthenticated("unknown token (not issued by this server)")
            revoked = row["revoked_at"] is not None
            self._live[token_id] = revoked
        if revoked:
            raise Unauthenticated("token revoked")

    def verify(self, token: str | None) -> Principal:
        """The principal a bearer token stands for; raises Unauthenticated otherwise."""
        if not token:
            raise Unauthenticated("missing token: send 'authorization: Bearer <token>'")
        cached = self._verified.get(token)
        if cached is not None and (cached.expires_at is None or cached.expires_at > time.time()):
            self._require_live(cached.token_id)
            return cached
        principal = self._verify(token)
        if principal.job_id is None and principal is not self._admin:
            self._verified[token] = principal
            while len(self._verified) > 4096:
                self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> Principal:
        if hmac.compare_digest(token.encode(), self._admin_token.encode()):
            return self._admin
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "jti", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as e:
            # The library's message names the failed check, never the token.
            raise Unauthenticated(f"invalid token: {e}") from None
        self._require_live(str(claims["jti"]))
        tables = claims.get("tables")
        parent = claims.get("for")
        if parent is not None:
            self._check_delegation(str(parent), claims.get("job"))
        return Principal(
            token_id=str(parent) if parent is not None else claims["jti"],
            name=claims.get("sub", ""),
            role=Role(claims["role"]),
            tables=tuple(tables) if tables is not None else None,
            max_rows=claims.get("max_rows"),
            timeout_s=claims.get("timeout_s"),
            expires_at=float(claims["exp"]),
            job_id=claims.get("job"),
            max_scan_rows=claims.get("max_scan_rows"),
            governance=Governance.from_maps(claims.get("row_filters"), claims.get("column_masks")),
            max_concurrent=claims.get("max_concurrent"),
        )

    # -- listing and revoking ------------------------------------------------
    def list(self) -> list[TokenRecord]:
        rows = self._meta.all("SELECT * FROM tokens ORDER BY created_at")
        return [_record(r) for r in rows]

    def get(self, token_id: str) -> TokenRecord:
        row = self._meta.one("SELECT * FROM tokens WHERE id = ?", (token_id,))
        if row is None:
            raise NotFound(f"no token with id {token_id!r}")
        return _record(row)

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke a token; its very next call on Flight or REST is refused."""
        changed = self._meta.execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), token_id),
        )
        self._live[token_id] = True
        record = self.get(token_id)
        if not changed and record.revoked_at is None:
            raise NotFound(f"no token with id {token_id!r}")
        return record


def _record(r: Any) -> TokenRecord:
    return TokenRecord(
        id=r["id"],
        name=r["name"],
        role=r["role"],
        tables=json.loads(r["tables"]) if r["tables"] is not None else None,
        max_rows=r["max_rows"],
        timeout_s=r["timeout_s"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
        created_by=r["created_by"],
        max_scan_rows=r["max_scan_rows"],
        row_filters=_json_load(r["row_filters"]),
        column_masks=_json_load(r["column_masks"]),
        max_concurrent=r["max_concurrent"],
    )


def _json_or_none(value: Any) -> str | None:
    return json.dumps(value) if value else None


def _json_load(text: str | None) -> Any:
    return json.loads(text) if text else None


def _governance_claims(gov: Governance | None, max_concurrent: int | None) -> dict[str, Any]:
    """The claims of a token's governance and admission limit (only those it has: a
    plain token's JWT stays as it was)."""
    claims: dict[str, Any] = {}
    if gov is not None:
        claims["row_filters"] = gov.row_filter_map()
        claims["column_masks"] = gov.column_mask_map()
    if max_concurrent is not None:
        claims["max_concurrent"] = max_concurrent
    return claims
