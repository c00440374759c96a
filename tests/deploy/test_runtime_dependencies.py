"""The image's dependency set is enough to run agentdata.

The Dockerfile installs pyproject's runtime dependencies (pinned by requirements.lock),
not the development tools this test environment also has (pandas, polars, pytest,
fakesnow, ...). A module that imports one of those works here and breaks in the image.
So these tests run the code with every installed distribution outside the runtime
dependency closure made unimportable (a `sitecustomize` that refuses them), as in the
image: every module imports, a real server serves queries and runs an export, and the
CLI prints a result.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.deploy import dependency_closure, runtime_requirements
from tests.support.server import REPO, ServerProcess, start_server

PROJECT_PACKAGES = ("agentdata", "flight_server", "control_api", "workers")


def _not_in_image() -> set[str]:
    """Top-level import names that only development distributions provide."""
    runtime = dependency_closure(runtime_requirements()) | {"agentdata"}
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        if module in PROJECT_PACKAGES:
            continue
        names = {d.lower().replace("_", "-").replace(".", "-") for d in dists}
        if not names & runtime:
            blocked.add(module)
    return blocked


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables that make a Python process see only the image's packages."""
    blocked = sorted(_not_in_image())
    assert {"polars", "pytest", "fakesnow", "matplotlib"} <= set(blocked)
    site = tmp_path_factory.mktemp("image-site")
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import sys

            BLOCKED = frozenset({blocked!r})

            class NotInImage:
                def find_spec(self, name, path=None, target=None):
                    if name.partition(".")[0] in BLOCKED:
                        raise ModuleNotFoundError(
                            f"No module named {{name!r}} (not a runtime dependency)", name=name
                        )
                    return None

            sys.meta_path.insert(0, NotInImage())
            """
        )
    )
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def test_the_blocker_blocks(image_env: dict[str, str]) -> None:
    check = "import polars"
    result = subprocess.run(
        [sys.executable, "-c", check], env={**os.environ, **image_env}, capture_output=True
    )
    assert result.returncode != 0 and b"not a runtime dependency" in result.stderr


def test_every_module_imports_with_the_runtime_dependencies_only(
    image_env: dict[str, str],
) -> None:
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil
        failed = []
        for top in {PROJECT_PACKAGES!r}:
            package = importlib.import_module(top)
            for info in pkgutil.walk_packages(package.__path__, top + "."):
                if info.name.endswith(".__main__"):  # runs the CLI when imported
                    continue
                try:
                    importlib.import_module(info.name)
                except ImportError as e:
                    failed.append(f"{{info.name}}: {{e}}")
        print("\\n".join(failed))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **image_env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", "modules that need a package the image lacks"


@pytest.fixture(scope="module")
def image_server(
    image_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("image") / "data", env=image_env, demo_rows=5_000)
    yield srv
    srv.stop()


def test_server_exports_with_the_runtime_dependencies_only(image_server: ServerProcess) -> None:
    with image_server.http() as api:
        job = api.post(
            "/api/v1/exports", json={"sql": "SELECT * FROM demo.orders", "format": "csv"}
        ).json()
        deadline = time.monotonic() + 120
        while True:
            state = api.get(f"/api/v1/jobs/{job['job_id']}").json()
            if state["state"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["state"] == "succeeded", json.dumps(state.get("error"))
        artefact = state["result"]["artefact_id"]
        content = api.get(f"/api/v1/artefacts/{artefact}/content")
    assert content.status_code == 200
    assert content.text.count("\n") == 5_000 + 1  # header and every row


def test_sql_cli_with_the_runtime_dependencies_only(
    image_server: ServerProcess, image_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentdata", "sql", "SELECT count(*) AS n FROM demo.orders"],
        env={
            **os.environ,
            **image_env,
            "AGENTDATA_FLIGHT_URL": image_server.flight_url,
            "AGENTDATA_TOKEN": image_server.admin_token,
        },
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "5000" in result.stdout
