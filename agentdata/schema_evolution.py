"""Schema evolution for loads: which column changes a table may absorb.

A load with `evolve` on compares the staged columns with the table's:
- a column only in the load is ADDED (existing rows get NULL);
- a column in both whose type got wider is WIDENED in place (ALTER ... TYPE);
- a column only in the table is KEPT and filled with NULL for new rows (reported
  as `missing`, so a sync can say the source dropped it);
- any other type change is INCOMPATIBLE: the load fails naming the column, and
  nothing is written.

Widening, on DuckDB type names:
    TINYINT < SMALLINT < INTEGER < BIGINT < HUGEINT     (and UTINYINT.. into a wider signed/unsigned)
    integer -> DECIMAL(p, s) when p - s holds all its digits
    DECIMAL(p1, s1) -> DECIMAL(p2, s2) when s2 >= s1 and p2 - s2 >= p1 - s1
    FLOAT -> DOUBLE;  TINYINT/SMALLINT/INTEGER -> DOUBLE (exact in a double)
    TIMESTAMP_S / TIMESTAMP_MS -> TIMESTAMP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

_INT_DIGITS = {
    "TINYINT": 3,
    "SMALLINT": 5,
    "INTEGER": 10,
    "BIGINT": 19,
    "HUGEINT": 39,
    "UTINYINT": 3,
    "USMALLINT": 5,
    "UINTEGER": 10,
    "UBIGINT": 20,
    "UHUGEINT": 39,
}
_SIGNED_ORDER = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"]
_UNSIGNED_ORDER = ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"]
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


class Change(Enum):
    SAME = "same"
    WIDEN = "widen"
    INCOMPATIBLE = "incompatible"


def _decimal(t: str) -> tuple[int, int] | None:
    m = _DECIMAL.match(t)
    return (int(m.group(1)), int(m.group(2))) if m else None


def classify(old: str, new: str) -> Change:
    """How a column typed `old` in the table relates to `new` in the load."""
    old, new = old.upper().strip(), new.upper().strip()
    if old == new:
        return Change.SAME
    if old in _INT_DIGITS and new in _INT_DIGITS:
        for order in (_SIGNED_ORDER, _UNSIGNED_ORDER):
            if old in order and new in order:
                return Change.WIDEN if order.index(new) > order.index(old) else Change.INCOMPATIBLE
        # unsigned -> strictly wider signed
        if old in _UNSIGNED_ORDER and new in _SIGNED_ORDER:
            return Change.WIDEN if _INT_DIGITS[new] > _INT_DIGITS[old] else Change.INCOMPATIBLE
        return Change.INCOMPATIBLE
    new_dec = _decimal(new)
    if old in _INT_DIGITS and new_dec is not None:
        p, s = new_dec
        return Change.WIDEN if p - s >= _INT_DIGITS[old] else Change.INCOMPATIBLE
    old_dec = _decimal(old)
    if old_dec is not None and new_dec is not None:
        (p1, s1), (p2, s2) = old_dec, new_dec
        return Change.WIDEN if s2 >= s1 and p2 - s2 >= p1 - s1 else Change.INCOMPATIBLE
    if new == "DOUBLE" and old in (
        "FLOAT",
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
    ):
        return Change.WIDEN
    if new == "TIMESTAMP" and old in ("TIMESTAMP_S", "TIMESTAMP_MS"):
        return Change.WIDEN
    return Change.INCOMPATIBLE


@dataclass
class Plan:
    """What a load will do to the table's columns."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    widened: list[tuple[str, str, str]] = field(default_factory=list)  # (name, old, new)
    missing: list[str] = field(default_factory=list)
    incompatible: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, list]:
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
        change = classify(old_type, new_type)
        if change is Change.WIDEN:
            out.widened.append((old_name, old_type, new_type))
        elif change is Change.INCOMPATIBLE:
            out.incompatible.append((old_name, old_type, new_type))
    out.missing = [name for lower, (name, _) in by_lower.items() if lower not in seen]
    return out
