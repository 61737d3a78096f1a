"""The OpenAPI document: valid OpenAPI 3.0 on both planes, and a bounded
schemathesis run against a live server from it: no request it generates
makes the server answer 5xx, and the server still answers correctly after."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from tests.integration.reference import cancer_rows
from tests.support import ServerProcess


def test_the_documents_are_valid_openapi(server: ServerProcess) -> None:
    public = httpx.get(f"{server.url}/openapi.json").json()
    validate(public)
    assert "/v2/models/{model}/infer" in public["paths"]
    admin = httpx.get(f"{server.admin_url}/openapi.json").json()
    validate(admin)
    assert "/v2/models/{model}/infer" not in admin["paths"]
    assert "/v2/repository/models/{model}/load" in admin["paths"]
    assert "/v2/routing/{model}/rollout/{operation}" in admin["paths"]
    assert "/v2/routing/{model}" not in public["paths"]
    assert "/v2/models/{model}/feedback" in public["paths"]


def test_no_generated_request_makes_the_server_fail(server: ServerProcess) -> None:
    """Every operation, a bounded number of generated requests each (schemathesis's
    strategies driven by hypothesis directly: its pytest plugin does not run on
    this pytest)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    failures: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        call()
    assert not failures, failures
    assert len(statuses) >= 5 * len(operations)  # it did exercise the server
    assert {200, 404} <= set(statuses)  # answers and refusals both reached


def test_the_server_still_answers_correctly_after_the_fuzzing(server: ServerProcess) -> None:
    rows = cancer_rows(2)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 30], "data": rows.ravel().tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/breast_cancer/versions/1/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
