"""Fuzzing the REST API from its OpenAPI schema: no 5xx, every error in OpenAI's envelope.

schemathesis's pytest plugin does not run under pytest 9 here, so its hypothesis
strategies are driven directly, one operation at a time.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from batches.testing import Service

pytestmark = pytest.mark.e2e


def test_no_server_errors_and_enveloped_errors(service: Service) -> None:
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{service.port}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            where = f"{case.method} {case.formatted_path}: {response.text[:300]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}, where

        fuzz()
