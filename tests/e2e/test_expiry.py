"""A batch not finished within its completion window expires; unfinished lines are reported."""

from __future__ import annotations

import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def test_expiry_reports_unfinished_lines(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_COMPLETION_WINDOW_S": "6",
        "BATCHLOG_CHUNKS_IN_FLIGHT": "1",
        "BATCHLOG_CHUNK_SIZE": "2",
        **FAST_RETRIES,
    }
    upstream.configure(latency_ms=200)
    try:
        with Service(tmp_path_factory.mktemp("exp") / "data", env) as svc:
            client = svc.client()
            source = upload(client, chat_lines(200, prefix="e"))
            batch = client.batches.create(
                input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            assert batch.expires_at == batch.created_at + 6
            done = wait_for(client, batch.id, {"expired", "completed"}, timeout=90)
            outputs = read_lines(client, done.output_file_id)
            errors = read_lines(client, done.error_file_id)
    finally:
        upstream.reset()
    assert done.status == "expired"
    assert done.expired_at is not None
    expired = [e for e in errors if e["error"] and e["error"]["code"] == "batch_expired"]
    assert expired and all(e["response"] is None for e in expired)
    assert {e["error"]["message"] for e in expired} == {
        "This request could not be executed before the completion window expired."
    }
    ids = sorted(line["custom_id"] for line in outputs + errors)
    assert ids == sorted(f"e-{i}" for i in range(200))
    assert done.request_counts.completed == len(outputs)
    assert done.request_counts.completed + done.request_counts.failed == 200
