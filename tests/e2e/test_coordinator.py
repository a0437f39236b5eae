"""The coordinator: admission control, and kill -9 of the coordinator under create load."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def one_slot(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_MAX_ACTIVE_BATCHES": "1",
        "BATCHLOG_MAX_INFLIGHT_REQUESTS": "8",
        **FAST_RETRIES,
    }
    with Service(tmp_path_factory.mktemp("slot") / "data", env) as svc:
        yield svc


def test_batches_beyond_the_limit_wait_and_say_so(
    one_slot: Service, upstream: FakeUpstream
) -> None:
    client = one_slot.client()
    upstream.configure(latency_ms=50)
    try:
        source = upload(client, chat_lines(60, prefix="q"))
        first = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        second = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        waiting = client.batches.retrieve(second.id)
        assert waiting.status == "validating"
        assert (waiting.model_extra or {}).get("queue_position") == 1
        assert client.batches.retrieve(first.id).status in ("validating", "in_progress")
        done = wait_for(client, second.id, {"completed"})
    finally:
        upstream.reset()
    assert "queue_position" not in (done.model_extra or {})
    assert client.batches.retrieve(first.id).status == "completed"


def test_kill_coordinator_under_create_load(one_slot: Service) -> None:
    client = one_slot.client(max_retries=5)
    source = upload(client, chat_lines(1, prefix="load"))
    keys = [f"load-{i}" for i in range(30)]

    def create(key: str) -> str:
        return client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"idempotency_key": key},
        ).id

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(create, key) for key in keys]
        time.sleep(0.5)
        (pid,) = one_slot.pids("ray::Coordinator")
        os.kill(pid, signal.SIGKILL)
        first_ids = dict(zip(keys, [f.result(timeout=120) for f in futures], strict=True))
    # Restarted from its log, the coordinator's index gives every key its first batch.
    again = {key: create(key) for key in keys}
    assert again == first_ids
    assert len(set(first_ids.values())) == len(keys)
    for batch_id in first_ids.values():
        events = httpx.get(f"{one_slot.url}/batches/{batch_id}/events", params={"limit": 1}).json()
        assert events["data"][0]["type"] == "BatchCreated"
    for batch_id in first_ids.values():
        wait_for(client, batch_id, {"completed"}, timeout=240)


def test_a_flood_gets_503_not_a_crash(one_slot: Service) -> None:
    payload = chat_lines(2000, prefix="flood")  # a few hundred KB: uploads overlap

    def post(_: int) -> int:
        files = {"file": ("f.jsonl", payload)}
        response = httpx.post(
            f"{one_slot.url}/files", files=files, data={"purpose": "batch"}, timeout=120
        )
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "overloaded"
        return response.status_code

    with ThreadPoolExecutor(max_workers=48) as pool:
        codes = list(pool.map(post, range(96)))
    assert set(codes) <= {200, 503}, codes
    assert 503 in codes and 200 in codes
    assert httpx.get(f"http://127.0.0.1:{one_slot.port}/health").status_code == 200
