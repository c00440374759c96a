"""Schema-driven fuzzing: schemathesis generates requests for every operation in the
control plane's OpenAPI document and sends them, with an admin token, to a real
`agentdata serve`; no answer may be a 5xx. Examples per operation are bounded so the
module stays well under a minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.server import ServerProcess

EXAMPLES = 10  # per operation and mode: bounded, so the module runs in seconds


@pytest.fixture(scope="module")
def api_schema(server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{server.http_url}/openapi.json", timeout=30)


# The generation loop is driven here rather than by `schemathesis.pytest.from_fixture`,
# whose lazy fixture support breaks on pytest 9 (it rewrites `node._nodeid`).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema: Any, server: ServerProcess, mode: GenerationMode) -> None:
    """Valid (positive) and schema-violating (negative) requests to every operation."""
    failures: list[str] = []
    sent: set[str] = set()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,  # the same inputs every run: a failure is reproducible
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            sent.add(case.operation.label)
            response = case.call(
                base_url=server.http_url,
                headers={"Authorization": f"Bearer {server.admin_token}"},
                timeout=30,
            )
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        try:
            run()
        except Unsatisfiable:
            # No input can violate (negative) or vary (positive) a parameterless operation.
            pass
    assert not failures, "\n".join(failures[:20]) + f"\n(see {server.log_path})"
    assert server.proc.poll() is None
    assert {"POST /api/v1/artefacts", "POST /api/v1/jobs/{job_id}/events"} <= sent, sent


def test_artefact_and_job_routes_are_documented(api_schema: Any) -> None:
    """The OpenAPI document (what the fuzz run draws from) lists every artefact and job route."""
    raw = api_schema.raw_schema["paths"]
    expected = {
        "/api/v1/artefacts": {"get", "post"},
        "/api/v1/artefacts/usage": {"get"},
        "/api/v1/artefacts/{artefact_id}": {"get", "delete"},
        "/api/v1/artefacts/{artefact_id}/content": {"get"},
        "/api/v1/jobs": {"get"},
        "/api/v1/jobs/{job_id}": {"get", "delete"},
        "/api/v1/jobs/{job_id}/events": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(raw[path]), path
    upload = raw["/api/v1/artefacts"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file"]
