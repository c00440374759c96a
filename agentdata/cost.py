"""The cost guard's estimate: how many rows a statement will make DuckDB handle, read
from DuckDB's own plan before anything runs.

`EXPLAIN (FORMAT JSON)` gives every operator with the optimizer's "Estimated
Cardinality". The estimate compared with a token's `max_scan_rows` is the larger of

- the rows the plan reads from its sources (table scans, table functions such as
  `range`): the sum over the plan's leaves, and
- the most rows any single operator is expected to produce (a join that multiplies
  rows costs as much as the scan it would take to read them).

A streaming LIMIT stops its pipeline early, so `SELECT * FROM big LIMIT 10` costs ten
rows, not the table: below a LIMIT, operators that stream (projections, filters,
scans) are scaled by the fraction of their output the LIMIT needs. An operator that
must see all its input first (ORDER BY, aggregates, joins, windows) stops the scaling:
what lies below it is counted whole. A filtered scan counts the rows DuckDB expects
it to return: the planner's statistics, not a promise. DuckDB's estimates are
estimates; the guard is a budget for agents, not an exact meter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

#: Operators that pass rows through as they come, so a LIMIT above them cuts them short.
STREAMING = frozenset(
    {
        "PROJECTION",
        "FILTER",
        "SEQ_SCAN",
        "TABLE_SCAN",
        "STREAMING_LIMIT",
        "LIMIT",
        "COLUMN_DATA_SCAN",
        "RANGE",
        "GENERATE_SERIES",
        "UNNEST",
        "DUMMY_SCAN",
        "CHUNK_SCAN",
    }
)
_LIMITS = frozenset({"STREAMING_LIMIT", "LIMIT"})
#: Detail keys shown in the rendered plan, in this order.
_DETAILS = ("Table", "Function", "Join Type", "Conditions", "Filters", "Aggregates", "Limit")


@dataclass(frozen=True)
class PlanEstimate:
    """What DuckDB's plan says a statement will cost."""

    rows: int  # the estimate the guard compares with max_scan_rows
    scanned_rows: int  # rows read from sources (scans, table functions)
    peak_rows: int  # the most rows any one operator produces
    plan: str  # the plan as indented text, one operator per line


def estimate(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    limit: int | None = None,
) -> PlanEstimate:
    """Plan `sql` on `cur` (nothing runs) and estimate its rows.

    `limit` is a row cap the server itself puts on the result (a token's max_rows, an
    MCP query's max_rows): it scales a streaming plan like a LIMIT in the SQL would.
    DuckDB errors propagate (the caller translates them).
    """
    rows = cur.execute(f"EXPLAIN (FORMAT JSON)\n{sql}", params).fetchall()
    roots: list[dict[str, Any]] = []
    for _key, value in rows:
        parsed = json.loads(value)
        roots.extend(parsed if isinstance(parsed, list) else [parsed])
    walk = _Walk()
    for root in roots:
        walk.visit(root, None if limit is None else float(limit), 0)
    scanned = math.ceil(walk.leaves)
    peak = math.ceil(walk.peak)
    return PlanEstimate(
        rows=max(scanned, peak), scanned_rows=scanned, peak_rows=peak, plan="\n".join(walk.lines)
    )


class _Walk:
    """One pass over the plan tree: sums, the peak, and the rendered lines."""

    def __init__(self) -> None:
        self.leaves = 0.0
        self.peak = 0.0
        self.lines: list[str] = []

    def visit(self, node: dict[str, Any], wanted: float | None, depth: int) -> None:
        """`wanted`: rows the consumer above will take from this node (None = all)."""
        name = str(node.get("name", "?")).strip()
        info = node.get("extra_info") or {}
        card = _rows_of(node)
        children = node.get("children") or []
        if name in _LIMITS:
            cap = _number(info.get("Limit"))
            if cap is not None:
                wanted = cap if wanted is None else min(wanted, cap)
        # Rows this node produces: all of them, or what the LIMIT above needs.
        produced = card if wanted is None else min(card, wanted)
        if name in _LIMITS:
            produced = wanted if wanted is not None else _largest_child(children)
        self.peak = max(self.peak, produced)
        self.lines.append(_render(name, info, produced, depth))
        if not children:
            self.leaves += produced
            return
        for child in children:
            child_wanted: float | None = None
            if wanted is not None and name in STREAMING:
                # Scale by the share of this node's output the consumer needs.
                child_card = _rows_of(child)
                share = 1.0 if card <= 0 or name in _LIMITS else min(1.0, wanted / card)
                child_wanted = min(child_card, math.ceil(child_card * share))
                if name in _LIMITS:
                    child_wanted = min(child_card, wanted)
            self.visit(child, child_wanted, depth + 1)


def _rows_of(node: Mapping[str, Any]) -> float:
    """The node's estimated output rows."""
    children = node.get("children") or []
    if str(node.get("name", "")).strip() == "CROSS_PRODUCT":
        # DuckDB prints no estimate for a cross product: it is the product.
        return math.prod(_rows_of(c) for c in children)
    value = _number((node.get("extra_info") or {}).get("Estimated Cardinality"))
    return value if value is not None else 0.0


def _largest_child(children: list[dict[str, Any]]) -> float:
    return max((_rows_of(c) for c in children), default=0.0)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", "").strip())
        except ValueError:
            return None
    return None


def _render(name: str, info: Mapping[str, Any], rows: float, depth: int) -> str:
    details = []
    for key in _DETAILS:
        value = info.get(key)
        if value in (None, "", []):
            continue
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        details.append(f"{key.lower()}: {' '.join(text.split())}")
    suffix = f" ({'; '.join(details)})" if details else ""
    return f"{'  ' * depth}{name}{suffix} ~{math.ceil(rows):,} rows"
