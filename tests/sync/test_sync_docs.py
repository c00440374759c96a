"""docs/sync.md stays true: its type table is the mapping the code applies, row by row,
and every sync setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentdata.settings import Settings
from tests.sync.test_extract import EXPECTED
from workers.sync.types import SourceColumn, UnmappedTypeError, map_column

DOC = Path(__file__).resolve().parents[2] / "docs" / "sync.md"


def type_table() -> list[tuple[str, str]]:
    """(example Snowflake type, documented DuckDB type) for each row of the table."""
    text = DOC.read_text()
    block = text.split("<!-- type-mapping:start -->")[1].split("<!-- type-mapping:end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:  # skip the header and the rule
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        example = cells[1].strip("`")
        duckdb = cells[2].strip("`")
        rows.append((example, duckdb))
    return rows


ROWS = type_table()


def test_the_table_covers_every_family() -> None:
    assert len(ROWS) >= 20

    def family(duckdb_type: str) -> str:
        return re.sub(r"\(.*\)", "", duckdb_type)

    documented = {family(duckdb) for _, duckdb in ROWS}
    # Every DuckDB type a synced column can have (the end-to-end test's table) is there.
    assert {family(duckdb) for duckdb, _, _ in EXPECTED.values()} <= documented


@pytest.mark.parametrize(("example", "duckdb"), ROWS, ids=[r[0] for r in ROWS])
def test_each_documented_row_is_what_the_mapping_does(example: str, duckdb: str) -> None:
    column = SourceColumn.parse("C", example)
    if duckdb.startswith("error"):
        with pytest.raises(UnmappedTypeError, match="'C'"):
            map_column(column)
    else:
        assert map_column(column).duckdb_type == duckdb


def test_every_sync_setting_is_documented() -> None:
    text = DOC.read_text()
    names = [n for n in Settings.model_fields if n.startswith("sync") or n == "syncs_file"]
    names.append("broker_visibility_timeout_s")
    assert len(names) >= 8
    missing = [n for n in names if not re.search(rf"`{n}`", text)]
    assert not missing, f"not in docs/sync.md: {missing}"
