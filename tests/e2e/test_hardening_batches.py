"""Hardening of the batch side (issue 10, items 1 and 7): a file in use cannot be
deleted, a batch whose actor keeps failing ends `failed` instead of holding its slot
forever, tenants are admitted round-robin and have quotas (429 + Retry-After).
Real `batchlog serve`, real Ray, real kill -9 of the batch actor."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import openai
import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

pytestmark = pytest.mark.e2e

STORED_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def service(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_API_KEYS": "key-a:alice,key-b:bob,key-c:carol",
        "BATCHLOG_MAX_ACTIVE_BATCHES": "1",
        "BATCHLOG_BATCH_MAX_RESTARTS": "1",
        "BATCHLOG_BATCH_RESTART_BACKOFF_S": "0.2",
        "BATCHLOG_TENANT_MAX_QUEUED_BATCHES": "3",
        "BATCHLOG_TENANT_MAX_STORED_BYTES": str(STORED_LIMIT),
        **FAST_RETRIES,
    }
    with Service(tmp_path_factory.mktemp("hb") / "data", env) as svc:
        yield svc


def client(service: Service, key: str) -> openai.OpenAI:
    return service.client(api_key=key, max_retries=0)


def create(c: openai.OpenAI, file_id: str) -> openai.types.Batch:
    return c.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def wait_running(c: openai.OpenAI, batch_id: str) -> None:
    deadline = time.monotonic() + 120
    while c.batches.retrieve(batch_id).request_counts.completed == 0:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, c.batches.retrieve(batch_id)
        time.sleep(0.2)


def test_a_file_in_use_cannot_be_deleted(service: Service, upstream: FakeUpstream) -> None:
    upstream.configure(latency_ms=200)
    try:
        alice = client(service, "key-a")
        source = upload(alice, chat_lines(200, prefix="del"))
        batch = create(alice, source.id)
        wait_running(alice, batch.id)
        with pytest.raises(openai.ConflictError) as refused:
            alice.files.delete(source.id)
        assert refused.value.code == "file_in_use"
        alice.batches.cancel(batch.id)
        wait_for(alice, batch.id, {"cancelled"})
        assert alice.files.delete(source.id).deleted
    finally:
        upstream.reset()


def test_a_batch_that_keeps_failing_ends_failed_and_frees_its_slot(
    service: Service, upstream: FakeUpstream
) -> None:
    """Its input vanishes under it (deleted on disk, behind the API's back) and its
    actor is killed: every new incarnation fails. With one slot, another tenant's
    batch waits behind it; it must still run, and the broken one must end."""
    upstream.configure(latency_ms=200)
    alice, bob = client(service, "key-a"), client(service, "key-b")
    try:
        source = upload(alice, chat_lines(300, prefix="crash"))
        broken = create(alice, source.id)
        wait_running(alice, broken.id)
        waiting = create(bob, upload(bob, chat_lines(5, prefix="bob")).id)
        os.unlink(service.data_dir / "files" / source.id)
        pids = service.pids("BatchActor")
        assert pids, "no batch actor process"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        upstream.reset()
        failed = wait_for(alice, broken.id, {"failed", "completed", "cancelled"}, timeout=180)
        assert failed.status == "failed", failed
        assert failed.errors is not None and failed.errors.data[0].code == "batch_crashed"
        done = wait_for(bob, waiting.id, {"completed", "failed"}, timeout=180)
        assert done.status == "completed", done
    finally:
        upstream.reset()


def test_tenants_take_turns_and_have_quotas(service: Service, upstream: FakeUpstream) -> None:
    upstream.configure(latency_ms=500)
    alice, bob = client(service, "key-a"), client(service, "key-b")
    made = []
    try:
        source = upload(alice, chat_lines(400, prefix="slow")).id
        made.append(create(alice, source))
        wait_running(alice, made[0].id)
        small = upload(alice, chat_lines(2, prefix="q")).id
        made += [create(alice, small) for _ in range(3)]  # the tenant's queue is full now
        with pytest.raises(openai.RateLimitError) as limited:
            create(alice, small)
        assert limited.value.code == "rate_limit_exceeded"
        assert int(limited.value.response.headers["retry-after"]) >= 1
        assert limited.value.body["type"] == "rate_limit_error"  # type: ignore[index]
        # bob's first batch goes before alice's queued ones, not behind them.
        turn = create(bob, upload(bob, chat_lines(2, prefix="turn")).id)
        assert turn.model_extra is not None and turn.model_extra["queue_position"] == 1, turn
    finally:
        for batch in made:
            alice.batches.cancel(batch.id)
        upstream.reset()


def test_stored_bytes_are_limited_per_tenant(service: Service) -> None:
    carol = client(service, "key-c")
    content = chat_lines(1000, prefix="bytes")[: STORED_LIMIT * 3 // 4]
    content = content[: content.rindex(b"\n") + 1]
    first = upload(carol, content)
    with pytest.raises(openai.RateLimitError) as limited:
        upload(carol, content)
    assert "limit per tenant" in str(limited.value)
    assert [f.id for f in carol.files.list()] == [first.id]  # the refused one left nothing
    carol.files.delete(first.id)
    upload(carol, content)  # room again


def test_cancel_finishes_without_the_input_file(service: Service, upstream: FakeUpstream) -> None:
    """The log knows which lines have no outcome: a cancel does not need to re-read the
    input (here removed behind the API's back) to write its error file."""
    upstream.configure(latency_ms=200)
    alice = client(service, "key-a")
    try:
        source = upload(alice, chat_lines(200, prefix="gone"))
        batch = create(alice, source.id)
        wait_running(alice, batch.id)
        os.unlink(service.data_dir / "files" / source.id)
        alice.batches.cancel(batch.id)
        done = wait_for(alice, batch.id, {"cancelled", "failed"}, timeout=180)
        assert done.status == "cancelled", done
        counts = done.request_counts
        assert counts is not None and counts.completed + counts.failed == 200
        errors = read_lines(alice, done.error_file_id)
        unfinished = [e for e in errors if e["error"]["code"] == "batch_cancelled"]
        assert len(unfinished) == counts.failed and all(e["custom_id"] is None for e in unfinished)
    finally:
        upstream.reset()
