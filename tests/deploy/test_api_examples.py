"""Every Python example in docs/api.md runs, as written, against a real server.

The examples read their token from AGENTDATA_TOKEN and use the default ports; the test
points them at the module's server. TLS examples run in test_tls.py.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow.flight as fl
import pytest

from tests.deploy import API_DOC, doc_examples, run_example
from tests.support.server import ServerProcess

PLAIN = doc_examples("plain")


def test_every_python_block_is_a_checked_example() -> None:
    text = API_DOC.read_text()
    blocks = len(re.findall(r"^```python$", text, re.M))
    checked = sum(len(doc_examples(kind)) for kind in ("plain", "tls", "mtls"))
    assert blocks == checked, "every ```python block needs an <!-- example: KIND --> marker"
    assert len(PLAIN) >= 8


@pytest.mark.parametrize("index", range(len(PLAIN)))
def test_api_doc_example_runs(
    server: ServerProcess, writer_token: str, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    monkeypatch.setenv("AGENTDATA_TOKEN", writer_token)
    output = run_example(PLAIN[index], flight_port=server.flight_port, http_port=server.http_port)
    assert output.strip(), "an example shows its result"


def test_write_examples_did_what_they_say(
    server: ServerProcess, writer_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DoPut/execute and ADBC ingest examples leave the rows they promise."""
    monkeypatch.setenv("AGENTDATA_TOKEN", writer_token)
    opts = ServerProcess.options(writer_token)
    client = server.flight()

    def rows(sql: str) -> list[dict[str, Any]]:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()), opts)
        return client.do_get(info.endpoints[0].ticket, opts).read_all().to_pylist()

    def visits() -> int:
        try:
            return int(rows("SELECT coalesce(sum(visits), 0) AS n FROM web.visits")[0]["n"])
        except Exception:  # the table does not exist yet
            return 0

    before = visits()
    (upsert,) = [code for code in PLAIN if '"mode": "upsert"' in code]
    (ingest,) = [code for code in PLAIN if "adbc_ingest" in code]
    for code in (upsert, ingest):
        run_example(code, flight_port=server.flight_port, http_port=server.http_port)
    # Upsert then UPDATE: the same three rows however often it runs.
    assert rows("SELECT id, name FROM crm.people ORDER BY id") == [
        {"id": 1, "name": "ADA"},
        {"id": 2, "name": "Grace"},
        {"id": 3, "name": "Edsger"},
    ]
    assert visits() == before + 218
