"""Fuzzing the REST API from its OpenAPI schema: no 5xx, every error in OpenAI's envelope.

In-process (the ASGI app over a core on a real log in a temp dir, no Ray): the façade's
parsing and error shaping are what is fuzzed; the Ray gateway below it only relays.
schemathesis's pytest plugin does not run under pytest 9 here, so its hypothesis
strategies are driven directly, one operation at a time.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.test_api import make_app


def test_no_server_errors_and_enveloped_errors(tmp_path: Path) -> None:
    # schemathesis's ASGI client calls itself "testserver": the Host gate must let it in.
    app, log = make_app(tmp_path / "data", trusted_hosts=["testserver"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
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
    log.close()
