"""The governance lab: a real server holding a table some tokens see filtered and masked.

    sales.people  (id, region, name, ssn, email, salary)
        EU rows 1, 2: the filtered tokens see these, with name/ssn/email/salary masked
        US rows 3, 4: no filtered token may ever receive anything of them
    sales.dept    (region, boss)            unfiltered: for joins
    sales.people_v   a view over `people` (unqualified: bound in schema sales)
    main.rich        a view over sales.people in another schema
    sales.w       (id, region, note)        the writers' target

Markers: every raw value a filtered/masked token must never see, in results or errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.flight as fl
import pytest

from agentdata.governance import mask_salt
from tests.security.conftest import Outcome, leaks, run_flight
from tests.support.server import ServerProcess, start_server

SETUP_SQL = [
    "CREATE SCHEMA IF NOT EXISTS sales",
    "CREATE OR REPLACE TABLE sales.people (id INTEGER, region VARCHAR, name VARCHAR,"
    " ssn VARCHAR, email VARCHAR, salary INTEGER)",
    "INSERT INTO sales.people VALUES"
    " (1, 'EU', 'Alice Qeuro', '111-22-3331', 'alice.q@eu.example', 731337),"
    " (2, 'EU', 'Bob Qeuro', '111-22-3332', 'bob.q@eu.example', 731338),"
    " (3, 'US', 'Zed Hiddenrow', '999-88-7773', 'zed.h@us.example', 842001),"
    " (4, 'US', 'Yara Hiddenrow', '999-88-7774', 'yara.h@us.example', 842002)",
    "CREATE OR REPLACE TABLE sales.dept (region VARCHAR, boss VARCHAR)",
    "INSERT INTO sales.dept VALUES ('EU', 'Eve'), ('US', 'Uma')",
    "CREATE OR REPLACE VIEW sales.people_v AS SELECT * FROM people",
    "CREATE OR REPLACE VIEW main.rich AS SELECT name, salary, region FROM sales.people WHERE salary > 0",
    "CREATE OR REPLACE TABLE sales.w (id INTEGER, region VARCHAR, note VARCHAR)",
    "INSERT INTO sales.w VALUES (1, 'EU', 'eu-one'), (2, 'US', 'us-two')",
]

#: Out-of-filter values (rows 3 and 4): no filtered token may see any of them.
ROW_MARKERS = ("hiddenrow", "999-88", "zed.h", "yara.h", "842001", "842002")
#: Raw values of masked columns of the in-filter rows.
MASK_MARKERS = ("qeuro", "111-22", "alice.q", "bob.q", "731337", "731338")

ROW_FILTERS = {"sales.people": "region = 'EU'"}
COLUMN_MASKS = {
    "sales.people": {"name": "redact", "ssn": "last4", "email": "hash", "salary": "null"}
}


@dataclass(frozen=True)
class GovLab:
    server: ServerProcess
    tokens: dict[str, str]
    ids: dict[str, str]
    markers: tuple[str, ...]
    client: fl.FlightClient

    def run(self, who: str, sql: str) -> Outcome:
        return run_flight(self.server, self.tokens[who], sql, client=self.client)

    def run_as(self, token: str, sql: str) -> Outcome:
        return run_flight(self.server, token, sql, client=self.client)

    def admin(self, sql: str) -> None:
        self.server.execute(self.server.admin_token, sql)

    def assert_no_leak(self, text: str, *, echo: str = "") -> None:
        found = leaks(text, self.markers, echo)
        assert not found, f"leaked {found} in: {text[:800]}"


def open_gov_lab(data_dir: Path, env: dict[str, str] | None = None) -> GovLab:
    secret = "jwt_gov_" + os.urandom(24).hex()
    server = start_server(
        data_dir, env={"AGENTDATA_JWT_SECRET": secret, **(env or {})}, demo_rows=2000
    )
    try:
        for sql in SETUP_SQL:
            server.execute(server.admin_token, sql)
        records = {
            "masked": server.create_token(
                "reader", name="masked-reader", row_filters=ROW_FILTERS, column_masks=COLUMN_MASKS
            ),
            "us": server.create_token(
                "reader", name="us-reader", row_filters={"sales.people": "region = 'US'"}
            ),
            "eu_only": server.create_token(
                "reader", name="eu-reader", row_filters={"sales.people": "region = 'EU'"}
            ),
            "writer": server.create_token(
                "writer",
                name="eu-writer",
                row_filters={"sales.w": "region = 'EU'", **ROW_FILTERS},
                column_masks=COLUMN_MASKS,
            ),
        }
        return GovLab(
            server=server,
            tokens={
                **{k: str(r["token"]) for k, r in records.items()},
                "admin": server.admin_token,
            },
            ids={k: str(r["id"]) for k, r in records.items()},
            markers=(*ROW_MARKERS, *MASK_MARKERS, mask_salt(secret)),
            client=server.flight(),
        )
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="package")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovLab]:
    lab = open_gov_lab(
        tmp_path_factory.mktemp("gov") / "data",
        env={"AGENTDATA_EMBEDDED_WORKERS": "1", "AGENTDATA_QUERY_TIMEOUT_S": "60"},
    )
    yield lab
    lab.client.close()
    lab.server.stop()
