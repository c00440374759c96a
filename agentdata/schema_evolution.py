"""Schema evolution: which column type changes a table may absorb. The one rule for
every load: DoPut with `evolve` (`agentdata.ingest`) and the sync planner
(`workers.sync.plan`), which predicts what the server's load will do.

    type_change("INTEGER", "BIGINT")     -> WIDENING      (ALTER the column, keep every value)
    type_change("BIGINT", "INTEGER")     -> NARROWING     (load into the wider column as is)
    type_change("VARCHAR", "DOUBLE")     -> INCOMPATIBLE  (the load fails, nothing written)

Types are DuckDB type names in any spelling (`INT8`, `NUMERIC(10,2)`, `TIMESTAMP WITH
TIME ZONE`); `normalize_duckdb_type` folds them to the names DuckDB prints. A change is
a WIDENING when every value of the old type is a value of the new one:

    integers    a larger one of the same signedness (TINYINT < SMALLINT < INTEGER <
                BIGINT < HUGEINT, UTINYINT < ... < UHUGEINT), or unsigned into a
                strictly wider signed one; never signed into unsigned
    decimals    an integer into DECIMAL(p, s) when p - s holds all its digits; a DECIMAL
                into one with at least as many integer digits and as much scale, or into
                an integer that holds all its digits (DECIMAL(9,0) -> INTEGER)
    floating    FLOAT -> DOUBLE, and TINYINT / SMALLINT / INTEGER (and their unsigned
                kin) -> DOUBLE, whose 53-bit mantissa holds every such value exactly;
                never BIGINT or a DECIMAL into a floating type (values would round)
    time        TIMESTAMP_S / TIMESTAMP_MS -> TIMESTAMP
    text        VARCHAR(n) -> a longer or unbounded VARCHAR

The reverse of a widening is a NARROWING: the table's column already holds every new
value, so it keeps its type and the load is cast into it. Any other change (number <->
text, TIMESTAMP <-> TIMESTAMPTZ, exact <-> rounded) is INCOMPATIBLE.

A load's columns against the table's (`plan`):
- a column only in the load is ADDED (existing rows get NULL);
- a column in both whose type got wider is WIDENED in place (ALTER ... TYPE), a
  narrower one is loaded into the existing column;
- a column only in the table is KEPT and filled with NULL for new rows (reported as
  `missing`, so a sync can say the source dropped it);
- an INCOMPATIBLE change fails the load naming the column, and nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class TypeChange(StrEnum):
    """How a column's type changes from the table's to the load's (see `type_change`)."""

    SAME = "same"  # nothing to do
    WIDENING = "widening"  # ALTER the column to the new type; every old value still fits
    NARROWING = "narrowing"  # the new values fit the old column: keep the old (wider) type
    INCOMPATIBLE = "incompatible"  # neither holds the other: the load fails


#: The `reason` in the detail of an error refusing an incompatible change (a caller
#: branches on it, e.g. a sync that may resync instead).
INCOMPATIBLE_REASON = "incompatible_schema"

_TYPE_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\((.*)\))?\s*$", re.DOTALL)

# DuckDB's aliases, folded to the names DuckDB itself prints (DESCRIBE output).
_DUCKDB_ALIASES: dict[str, str] = {
    **dict.fromkeys(["TINYINT", "INT1"], "TINYINT"),
    **dict.fromkeys(["SMALLINT", "INT2", "SHORT"], "SMALLINT"),
    **dict.fromkeys(["INTEGER", "INT", "INT4", "SIGNED"], "INTEGER"),
    **dict.fromkeys(["BIGINT", "INT8", "LONG"], "BIGINT"),
    **dict.fromkeys(["HUGEINT", "INT128"], "HUGEINT"),
    **dict.fromkeys(["UTINYINT", "UINT8"], "UTINYINT"),
    **dict.fromkeys(["USMALLINT", "UINT16"], "USMALLINT"),
    **dict.fromkeys(["UINTEGER", "UINT32"], "UINTEGER"),
    **dict.fromkeys(["UBIGINT", "UINT64"], "UBIGINT"),
    **dict.fromkeys(["UHUGEINT", "UINT128"], "UHUGEINT"),
    **dict.fromkeys(["FLOAT", "FLOAT4", "REAL"], "FLOAT"),
    **dict.fromkeys(["DOUBLE", "FLOAT8", "DOUBLE PRECISION"], "DOUBLE"),
    **dict.fromkeys(["DECIMAL", "NUMERIC"], "DECIMAL"),
    **dict.fromkeys(["VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "NVARCHAR"], "VARCHAR"),
    **dict.fromkeys(["BLOB", "BYTEA", "BINARY", "VARBINARY"], "BLOB"),
    **dict.fromkeys(["BOOLEAN", "BOOL", "LOGICAL"], "BOOLEAN"),
    **dict.fromkeys(["TIMESTAMP", "DATETIME", "TIMESTAMP WITHOUT TIME ZONE"], "TIMESTAMP"),
    **dict.fromkeys(["TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"], "TIMESTAMPTZ"),
    **dict.fromkeys(["TIME", "TIME WITHOUT TIME ZONE"], "TIME"),
}

# Integer types by the decimal digits of their largest value (TINYINT: 127, 3 digits).
_SIGNED_DIGITS = {"TINYINT": 3, "SMALLINT": 5, "INTEGER": 10, "BIGINT": 19, "HUGEINT": 39}
_UNSIGNED_DIGITS = {"UTINYINT": 3, "USMALLINT": 5, "UINTEGER": 10, "UBIGINT": 20, "UHUGEINT": 39}
# The most digits of a DECIMAL(p,0) each signed integer type holds in full.
_SIGNED_HOLDS = {"TINYINT": 2, "SMALLINT": 4, "INTEGER": 9, "BIGINT": 18, "HUGEINT": 38}
# Integers whose every value a DOUBLE (53-bit mantissa) holds exactly.
_EXACT_IN_DOUBLE = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER", "FLOAT"}
)
# Timestamp resolutions that widen into TIMESTAMP (microseconds).
_COARSER_TIMESTAMPS = frozenset({"TIMESTAMP_S", "TIMESTAMP_MS"})


@dataclass(frozen=True)
class _DuckType:
    base: str
    params: tuple[int, ...] = ()


def _parse(type_text: str) -> _DuckType:
    match = _TYPE_TEXT.match(type_text)
    if not match:
        return _DuckType(type_text.strip().upper())
    base = " ".join(match.group(1).upper().split())
    base = _DUCKDB_ALIASES.get(base, base)
    params: tuple[int, ...] = ()
    if match.group(2) is not None:
        try:
            params = tuple(int(part) for part in match.group(2).split(","))
        except ValueError:
            return _DuckType(" ".join(type_text.upper().split()))
    if base == "DECIMAL":
        # DuckDB's defaults: DECIMAL = DECIMAL(18,3), DECIMAL(p) = DECIMAL(p,0).
        params = (18, 3) if not params else (params[0], params[1] if len(params) > 1 else 0)
    return _DuckType(base, params)


def normalize_duckdb_type(type_text: str) -> str:
    """A DuckDB type in the spelling DuckDB prints, so two spellings compare equal.

    `TIMESTAMP WITH TIME ZONE` -> `TIMESTAMPTZ`, `INT8` -> `BIGINT`, `NUMERIC` -> `DECIMAL(18,3)`.
    """
    parsed = _parse(type_text)
    if parsed.params:
        return f"{parsed.base}({','.join(str(p) for p in parsed.params)})"
    return parsed.base


def type_change(old_type: str, new_type: str) -> TypeChange:
    """Judge a column's change from `old_type` (in the table) to `new_type` (in the load).

    The rules are in the module docstring; both are DuckDB type names in any spelling.
    """
    old, new = _parse(old_type), _parse(new_type)
    if old == new:
        return TypeChange.SAME
    if _holds(new, old):
        return TypeChange.WIDENING
    if _holds(old, new):
        return TypeChange.NARROWING
    return TypeChange.INCOMPATIBLE


def _exact_digits(t: _DuckType) -> tuple[int, int] | None:
    """(integer digits, scale) that a signed exact numeric type holds in full, or None."""
    if t.base in _SIGNED_HOLDS:
        return _SIGNED_HOLDS[t.base], 0
    if t.base == "DECIMAL":
        precision, scale = t.params
        return precision - scale, scale
    return None


def _holds(wide: _DuckType, narrow: _DuckType) -> bool:
    """Whether every value of `narrow` is a value of `wide` (the two types differ)."""
    if narrow.base in _UNSIGNED_DIGITS:
        digits = _UNSIGNED_DIGITS[narrow.base]
        if wide.base in _UNSIGNED_DIGITS:
            return _UNSIGNED_DIGITS[wide.base] > digits
        if wide.base in _SIGNED_DIGITS:
            return _SIGNED_DIGITS[wide.base] > digits
        if wide.base == "DECIMAL":
            precision, scale = wide.params
            return precision - scale >= digits
    elif wide.base in _UNSIGNED_DIGITS:
        return False  # an unsigned type holds no negative value
    if wide.base in _SIGNED_DIGITS and narrow.base in _SIGNED_DIGITS:
        return _SIGNED_DIGITS[wide.base] > _SIGNED_DIGITS[narrow.base]
    if wide.base == "DECIMAL" and narrow.base in _SIGNED_DIGITS:
        precision, scale = wide.params
        return precision - scale >= _SIGNED_DIGITS[narrow.base]
    wide_digits, narrow_digits = _exact_digits(wide), _exact_digits(narrow)
    if wide_digits and narrow_digits:
        return wide_digits[0] >= narrow_digits[0] and wide_digits[1] >= narrow_digits[1]
    if wide.base == "DOUBLE":
        return narrow.base in _EXACT_IN_DOUBLE
    if wide.base == "TIMESTAMP":
        return narrow.base in _COARSER_TIMESTAMPS
    if wide.base == "VARCHAR" and narrow.base == "VARCHAR":
        # No length means unbounded; DuckDB ignores lengths, Snowflake does not.
        if not wide.params:
            return bool(narrow.params)
        return bool(narrow.params) and wide.params[0] > narrow.params[0]
    return False


@dataclass
class Plan:
    """What a load will do to the table's columns."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    widened: list[tuple[str, str, str]] = field(default_factory=list)  # (name, old, new)
    #: Loaded into the table's wider column as it is (name, old, new).
    narrowed: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    incompatible: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        """What a load reports as its `schema_changes`."""
        return {
            "added": [n for n, _ in self.added],
            "widened": [n for n, _, _ in self.widened],
            "missing": list(self.missing),
        }


def plan(table: dict[str, str], load: dict[str, str]) -> Plan:
    """Compare column -> type maps (table's, load's); names match case-insensitively."""
    out = Plan()
    by_lower = {name.lower(): (name, t) for name, t in table.items()}
    seen = set()
    for name, new_type in load.items():
        existing = by_lower.get(name.lower())
        if existing is None:
            out.added.append((name, new_type))
            continue
        seen.add(name.lower())
        old_name, old_type = existing
        change = type_change(old_type, new_type)
        if change is TypeChange.WIDENING:
            out.widened.append((old_name, old_type, new_type))
        elif change is TypeChange.NARROWING:
            out.narrowed.append((old_name, old_type, new_type))
        elif change is TypeChange.INCOMPATIBLE:
            out.incompatible.append((old_name, old_type, new_type))
    out.missing = [name for lower, (name, _) in by_lower.items() if lower not in seen]
    return out
