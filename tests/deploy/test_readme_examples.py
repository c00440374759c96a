"""The quick start flows: the README's shell blocks and Python cells, then docs/api.md's
examples, run in order, as written, against one fresh server, with the tokens the
README creates and nothing else.

As a new user would: a server that generated its own admin token into `data/admin.token`
(the shell runs next to `data/`, and `.venv/bin/agentdata` is this checkout's), each
shell block in bash with what the earlier ones exported (`export AGENTDATA_TOKEN=...`),
the README's Python cells in one namespace (a notebook) and the API reference's
examples each on their own. The only change to the text is the ports: the test server's
free ports replace 8815 and 8000, which the CLI gets from AGENTDATA_URL and
AGENTDATA_FLIGHT_URL. Blocks that cannot run here say why in their marker
(`<!-- example: skip (needs Snowflake credentials) -->`).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.deploy import API_DOC, README, REPO, Example, code_blocks, marked_examples
from tests.support.server import ServerProcess, start_server

#: Kinds that run against the plain server here (TLS examples run in test_tls.py).
RUNNABLE = {"shell", "python", "plain"}
DEMO_ROWS = 150_000  # more than the README's agent token may read at once (100,000)


@pytest.mark.parametrize("doc", [README, API_DOC], ids=lambda d: d.name)
def test_every_shell_and_python_block_is_marked(doc: Path) -> None:
    examples = marked_examples(doc)
    assert len(examples) == code_blocks(doc), f"{doc.name}: a block without a marker"
    assert {e.kind for e in examples} <= RUNNABLE | {"skip", "tls", "mtls"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server as `make serve` leaves it: the admin token generated into data/."""
    srv = start_server(
        tmp_path_factory.mktemp("readme") / "data",
        env={"AGENTDATA_ADMIN_TOKEN": ""},
        demo_rows=DEMO_ROWS,
    )
    yield srv
    srv.stop()


def _ports(code: str, server: ServerProcess) -> str:
    code = code.replace("127.0.0.1:8815", f"127.0.0.1:{server.flight_port}")
    for host in ("127.0.0.1:8000", "localhost:8000"):
        code = code.replace(host, f"{host.split(':')[0]}:{server.http_port}")
    return code


def _shell(code: str, env: dict[str, str], cwd: Path) -> tuple[dict[str, str], str]:
    """Run a shell block; the environment it leaves (its exports) and its output."""
    dump = cwd / ".env-after"
    script = f"set -eo pipefail\n{code}\nenv -0 > {dump}\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{code}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    after = dict(item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
    return after, done.stdout + done.stderr


def _python(code: str, namespace: dict[str, Any], env: dict[str, str], cwd: Path) -> str:
    out = io.StringIO()
    saved, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, "example", "exec"), namespace)
        # ADBC warns when a connection asks for transactions the server does not offer.
        noisy = [str(w.message) for w in caught if "autocommit" in str(w.message).lower()]
        assert not noisy, f"the example prints a warning: {noisy}\n{code}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(saved_cwd)
    return out.getvalue()


def test_readme_then_api_reference_run_in_order(fresh: ServerProcess) -> None:
    home = fresh.data_dir.parent  # where `cat data/admin.token` finds the token
    (home / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDATA_")}
    env.update(AGENTDATA_URL=fresh.http_url, AGENTDATA_FLIGHT_URL=fresh.flight_url)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"
    notebook: dict[str, Any] = {"__name__": "__notebook__"}
    ran: list[tuple[str, Example]] = []
    for doc in (README, API_DOC):
        for example in marked_examples(doc):
            if example.kind not in RUNNABLE:
                continue
            code = _ports(example.code, fresh)
            if example.lang == "sh":
                env, output = _shell(code, env, home)
            elif example.kind == "python":  # README cells share a namespace
                output = _python(code, notebook, env, home)
            else:  # the reference's examples each stand alone
                output = _python(code, {"__name__": "__example__"}, env, home)
            assert output.strip(), f"{doc.name}: an example shows what it did:\n{code}"
            ran.append((doc.name, example))
    assert sum(1 for name, _ in ran if name == "README.md") >= 5
    assert sum(1 for name, e in ran if name == "api.md" and e.lang == "sh") >= 3
    # What the examples said they would do, they did.
    first = (home / "first-100k-orders.csv").read_text().splitlines()
    assert len(first) == 1 + 100_000  # the agent's capped token, truncating
    assert pq.read_table(home / "orders.parquet").num_rows == DEMO_ROWS  # the notebook's
    assert pq.read_table(home / "orders-zstd.parquet").num_rows == DEMO_ROWS
    with fresh.http(env["AGENTDATA_TOKEN"]) as http:
        artefacts = http.get("/api/v1/artefacts").json()
    assert "notes.txt" in {a["name"] for a in artefacts["items"]}
