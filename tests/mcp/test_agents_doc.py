"""Every Python example in docs/agents.md runs, as written, against a real server."""

from __future__ import annotations

import re

import pytest

from tests.deploy import REPO, run_example
from tests.support.server import ServerProcess

AGENTS_DOC = REPO / "docs" / "agents.md"
_EXAMPLE = re.compile(r"<!-- example: agents -->\n```python\n(?P<code>.*?)\n```", re.S)
EXAMPLES = [m.group("code") for m in _EXAMPLE.finditer(AGENTS_DOC.read_text())]


def test_every_python_block_is_a_checked_example() -> None:
    blocks = len(re.findall(r"^```python$", AGENTS_DOC.read_text(), re.M))
    # One illustrative snippet (reading the freshness key off a Flight stream) is a fragment.
    assert len(EXAMPLES) == blocks - 1 >= 4


@pytest.fixture(scope="module")
def agent_token(mcp_srv: ServerProcess) -> str:
    return str(mcp_srv.create_token("reader", name="doc-agent", tables=["demo.*"])["token"])


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_agents_doc_example_runs(
    mcp_srv: ServerProcess, agent_token: str, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    monkeypatch.setenv("AGENTDATA_TOKEN", agent_token)
    output = run_example(
        EXAMPLES[index], flight_port=mcp_srv.flight_port, http_port=mcp_srv.http_port
    )
    assert output.strip(), "an example shows its result"
    assert not re.search(r"\[[a-z]+_[a-z_]+\]", output), output  # no "[code]" error text
