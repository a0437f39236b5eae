"""GET /v1/batches/{id} from the façade's copies (docs/read-cache.md), over the real
stack: `batchlog serve`, its coordinator actor, a batch actor, the fake upstream."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def test_a_running_batch_is_answered_while_the_coordinator_is_stopped(
    service: Service, upstream: FakeUpstream
) -> None:
    """With the coordinator's process stopped (SIGSTOP), a GET that needs it waits; a
    GET of the batch being polled does not: the façade answers from its copy, which the
    batch's progress keeps current."""
    client = service.client()
    upstream.configure(latency_ms=3000)  # 400 lines, 64 at a time: ~20 s
    (coordinator,) = service.pids("ray::Coordinator")
    http = httpx.Client(base_url=service.url, headers={"Authorization": "Bearer none"}, timeout=3.0)
    try:
        source = upload(client, chat_lines(400, prefix="rc"))
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(client, batch.id, {"in_progress"})
        answered = None
        for _ in range(5):  # the copy comes with the batch's next change: give it a moment
            time.sleep(0.5)
            os.kill(coordinator, signal.SIGSTOP)
            try:
                answered = http.get(f"/batches/{batch.id}")
                break
            except httpx.TimeoutException:
                continue
            finally:
                os.kill(coordinator, signal.SIGCONT)
        assert answered is not None, "no GET was answered while the coordinator was stopped"
        assert answered.status_code == 200, answered.text
        got = answered.json()
        assert got["id"] == batch.id and got["status"] == "in_progress"
        assert got["request_counts"]["total"] == 400
        # Read your writes: the cancel's effect shows in the very next GET.
        cancelled = client.batches.cancel(batch.id)
        assert cancelled.status in ("cancelling", "cancelled")
        assert client.batches.retrieve(batch.id).status in ("cancelling", "cancelled")
        # Meanwhile a GET only the coordinator can answer waits (so the one above was
        # answered from the copy): an id the façade has no copy of.
        os.kill(coordinator, signal.SIGSTOP)
        try:
            with pytest.raises(httpx.TimeoutException):
                http.get(f"/batches/{batch.id}x")
        finally:
            os.kill(coordinator, signal.SIGCONT)
        done = wait_for(client, batch.id, {"cancelled"})
        assert client.batches.retrieve(batch.id).model_dump() == done.model_dump()
    finally:
        os.kill(coordinator, signal.SIGCONT)
        http.close()
        upstream.reset()


def test_a_new_batch_is_found_by_the_next_get(service: Service, upstream: FakeUpstream) -> None:
    """Read your writes on create: the GET right after it finds the batch, and the batch's
    counts reach their end through the copies."""
    client = service.client()
    source = upload(client, chat_lines(30, prefix="rn"))
    for _ in range(3):
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert client.batches.retrieve(batch.id).id == batch.id
    done = wait_for(client, batch.id, {"completed"})
    assert done.request_counts.completed == 30 and done.output_file_id
