"""Sync specs: which Snowflake source feeds which table, how and when.

A spec (JSON through `POST /api/v1/syncs`, or YAML from `AGENTDATA_SYNCS_FILE`):

    name: orders                       # [a-z0-9_-], unique
    source: SHOP.PUBLIC.ORDERS         # DB.SCHEMA.TABLE, or a SELECT statement
    target: sales.orders               # schema.table in agentdata
    mode: incremental                  # full | incremental
    cursor: UPDATED_AT                 # incremental: the column that grows
    lookback: "1 hour"                 # re-read this much before the watermark
                                       # (an interval for time cursors, a number for numeric ones)
    primary_key: [ID]                  # merge (upsert) on it, and the table's PRIMARY KEY;
                                       # absent: the source table's own key, else append
    on_duplicate_key: fold             # fold (keep the latest row per key) | error
    null_cursor: include               # rows whose cursor is NULL: include | skip | error
                                       # (default: include with a key, error without)
    column_types: {ID: BIGINT}         # load NUMBER columns as another numeric type
    schedule: 15m                      # every N s/m/h/d, or a 5-field cron line; optional
    deletes: reconcile                 # off | reconcile
    reconcile_every: 1                 # with reconcile: every Nth run
    on_incompatible: fail              # fail | resync (full reload on incompatible schema change)

The watermark is never stored here: each incremental run derives it from the
committed table (max(cursor) - lookback), so state cannot disagree with data.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agentdata.bounds import MAX_INT64, MAX_SECONDS, PositiveCount, WholeSeconds
from agentdata.errors import Conflict, InvalidArgument, NotFound
from agentdata.meta import MetaStore
from agentdata.names import parse_table_ref

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_INTERVAL = re.compile(r"^(\d+)\s*([smhd])$")
_SOURCE_TABLE = re.compile(r'^("?[A-Za-z_][\w$]*"?\.){2}"?[A-Za-z_][\w$]*"?$')
#: What `column_types` may ask for: DuckDB's exact and floating numeric types.
OVERRIDE_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "DOUBLE")
_DECIMAL_TYPE = re.compile(r"^DECIMAL\((\d{1,2}),\s*(\d{1,2})\)$")
_TYPE_ALIASES = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "LONG": "BIGINT"}

#: A lookback: a duration ("1 hour") or a non-negative, finite number (seconds for
#: time cursors, the cursor's units for numeric ones).
Lookback = (
    Annotated[str, Field(max_length=100)]
    | Annotated[int, Field(ge=0, le=MAX_INT64)]
    | Annotated[float, Field(ge=0, le=MAX_INT64, allow_inf_nan=False)]
)
#: A schedule: whole seconds, "15m"/"2h"/"1d", or a cron line.
Schedule = Annotated[str, Field(max_length=200)] | WholeSeconds


class SyncSpec(BaseModel):
    """One sync, validated."""

    name: str
    source: str = Field(description="DB.SCHEMA.TABLE, or a SELECT statement run in Snowflake.")
    target: str = Field(description="schema.table in agentdata.")
    mode: Literal["full", "incremental"] = "full"
    cursor: str | None = Field(
        None, description="Incremental: the column whose maximum is the watermark."
    )
    lookback: Lookback | None = Field(
        None, description="Incremental: re-read this much before the watermark."
    )
    primary_key: list[str] | None = Field(
        None, description="Merge on these columns; append when absent."
    )
    schedule: Schedule | None = Field(
        None, description="Every N seconds, '15m'/'2h'/'1d', or a cron line."
    )
    deletes: Literal["off", "reconcile"] = "off"
    reconcile_every: PositiveCount = Field(
        1, description="With deletes=reconcile: reconcile on every Nth run."
    )
    on_incompatible: Literal["fail", "resync"] = "fail"
    on_duplicate_key: Literal["fold", "error"] = Field(
        "fold",
        description="Rows of one run sharing a key: keep the one with the greatest cursor "
        "(ties: the last read), or fail the run naming a key.",
    )
    null_cursor: Literal["include", "skip", "error"] | None = Field(
        None,
        description="Incremental: rows whose cursor is NULL are re-read every run and merged "
        "(include), left out and counted (skip), or fail the run (error). Default: include "
        "with a primary key, error without.",
    )
    column_types: dict[str, str] | None = Field(
        None,
        description="Source column -> DuckDB numeric type to load it as (e.g. ID: BIGINT); "
        "for NUMBER columns. A value that does not fit fails the run.",
        max_length=1000,
    )
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "name must be 1-64 of a-z, 0-9, '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        try:
            parse_table_ref(v)
        except InvalidArgument as e:
            raise ValueError(e.message) from None
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip().rstrip(";").strip()
        if not v:
            raise ValueError("source is empty")
        if not (_SOURCE_TABLE.match(v) or re.match(r"(?is)^(select|with)\b", v)):
            raise ValueError("source must be DB.SCHEMA.TABLE or a SELECT statement")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | int | None) -> str | int | None:
        if v is None:
            return None
        schedule_seconds(v)  # validates
        return v

    @field_validator("column_types")
    @classmethod
    def _column_types(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return None
        return {name: override_type(name, type_) for name, type_ in v.items()}

    @model_validator(mode="after")
    def _incremental(self) -> SyncSpec:
        if self.mode == "incremental" and not self.cursor:
            raise ValueError("incremental syncs need a cursor column")
        if self.deletes == "reconcile" and not self.primary_key:
            raise ValueError("deletes=reconcile needs a primary_key")
        return self

    @property
    def is_query(self) -> bool:
        return not _SOURCE_TABLE.match(self.source)


def override_type(column: str, type_: str) -> str:
    """A `column_types` entry's type, as DuckDB spells it; ValueError if not allowed."""
    if not column or len(column) > 255:
        raise ValueError("column_types: a column name is empty or too long")
    text = " ".join(str(type_).upper().split())
    text = _TYPE_ALIASES.get(text, text)
    if text in OVERRIDE_TYPES:
        return text
    m = _DECIMAL_TYPE.match(text)
    if m and 1 <= int(m.group(1)) <= 38 and int(m.group(2)) <= int(m.group(1)):
        return f"DECIMAL({int(m.group(1))},{int(m.group(2))})"
    raise ValueError(
        f"column_types: {column}: {type_!r} is not one of {', '.join(OVERRIDE_TYPES)} "
        "or DECIMAL(p,s)"
    )


def schedule_seconds(schedule: str | int) -> float | None:
    """Seconds between runs for an interval schedule; None for a cron line (validated)."""
    if isinstance(schedule, int | float) and not isinstance(schedule, bool):
        # Compared before any float(): a huge int would overflow it (a 500, not a 422).
        if not 0 < schedule <= MAX_SECONDS:
            raise ValueError(f"schedule interval must be 1 to {MAX_SECONDS} seconds")
        return float(schedule)
    text = str(schedule).strip().lower()
    if text.isdigit():
        return schedule_seconds(int(text))
    m = _INTERVAL.match(text)
    if m:
        return schedule_seconds(
            int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        )
    from croniter import croniter

    if not croniter.is_valid(text):
        raise ValueError(f"schedule must be N, Ns/Nm/Nh/Nd or a cron line (got {schedule!r})")
    return None


def parse_spec(data: Any) -> SyncSpec:
    """Validate user input into a spec (InvalidArgument naming the field otherwise)."""
    try:
        return SyncSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "spec"
        raise InvalidArgument(f"invalid sync spec: {where}: {first.get('msg')}") from None


class SyncStore:
    """Sync specs in the meta store."""

    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta

    def create(self, spec: SyncSpec, *, origin: str = "api") -> SyncSpec:
        now = time.time()
        if self._meta.one("SELECT 1 FROM syncs WHERE name = ?", (spec.name,)):
            raise Conflict(f"a sync named {spec.name!r} exists already")
        self._meta.execute(
            "INSERT INTO syncs (name, spec, origin, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (spec.name, spec.model_dump_json(), origin, now, now),
        )
        return spec

    def upsert(self, spec: SyncSpec, *, origin: str) -> None:
        now = time.time()
        self._meta.execute(
            "INSERT INTO syncs (name, spec, origin, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, origin = excluded.origin,"
            " updated_at = excluded.updated_at",
            (spec.name, spec.model_dump_json(), origin, now, now),
        )

    def update(self, name: str, changes: dict[str, Any]) -> SyncSpec:
        current = self.get(name)
        if "name" in changes and changes["name"] != name:
            raise InvalidArgument("a sync cannot be renamed; delete and create it")
        spec = parse_spec({**current.model_dump(), **changes})
        self._meta.execute(
            "UPDATE syncs SET spec = ?, updated_at = ? WHERE name = ?",
            (spec.model_dump_json(), time.time(), name),
        )
        return spec

    def get(self, name: str) -> SyncSpec:
        row = self._meta.one("SELECT spec FROM syncs WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no sync named {name!r}")
        return SyncSpec.model_validate_json(row["spec"])

    def record(self, name: str) -> dict[str, Any]:
        row = self._meta.one("SELECT * FROM syncs WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no sync named {name!r}")
        return {
            "spec": json.loads(row["spec"]),
            "origin": row["origin"],
            "runs": row["runs"],
            "last_job_id": row["last_job_id"],
            "last_run_at": row["last_run_at"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    def list(self) -> list[dict[str, Any]]:
        return [
            self.record(r["name"]) for r in self._meta.all("SELECT name FROM syncs ORDER BY name")
        ]

    def delete(self, name: str) -> None:
        if not self._meta.execute("DELETE FROM syncs WHERE name = ?", (name,)):
            raise NotFound(f"no sync named {name!r}")

    def started(self, name: str, job_id: str) -> int:
        """Count a run; returns its number (1 for the first), used for reconcile_every."""
        with self._meta.transaction() as tx:
            tx.execute(
                "UPDATE syncs SET runs = runs + 1, last_job_id = ?, last_run_at = ? WHERE name = ?",
                (job_id, time.time(), name),
            )
            row = tx.execute("SELECT runs FROM syncs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no sync named {name!r}")
        return int(row["runs"])

    def load_file(self, path: Path) -> builtins.list[str]:
        """Load specs from a YAML file (a list, or {"syncs": [...]}); returns their names."""
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise InvalidArgument(f"cannot read syncs file {path}: {e}") from None
        items = doc.get("syncs", []) if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise InvalidArgument(f"syncs file {path} must hold a list of specs (or syncs: [...])")
        specs = [parse_spec(item) for item in items]
        for spec in specs:
            self.upsert(spec, origin="file")
        return [s.name for s in specs]
