"""The OpenAI Batch API through the official SDK: the happy path and every refusal."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import chat_lines, read_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def test_batch_runs_to_completion(service: Service, upstream: FakeUpstream) -> None:
    client = service.client()
    source = upload(client, chat_lines(40))
    assert source.purpose == "batch" and source.bytes > 0
    batch = client.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "e2e"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"job": "e2e"}
    done = wait_for(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    assert done.request_counts.total == 40
    assert done.request_counts.completed == 40
    assert done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.error_file_id is None
    assert done.usage is not None and done.usage.total_tokens > 0
    lines = read_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(40))
    for line in lines:
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert isinstance(line["response"]["body"], dict)
        assert line["response"]["body"]["object"] == "chat.completion"
    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"


def test_list_pages_newest_first(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(2))
    ids = [
        client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == ids[0]
    seen = [b.id for b in client.batches.list(limit=1)]  # the SDK pages through everything
    assert set(ids) <= set(seen)
    for batch_id in ids:
        wait_for(client, batch_id, {"completed"})


def test_all_failed_batch_completes_without_output(
    service: Service, upstream: FakeUpstream
) -> None:
    client = service.client()
    upstream.configure(fail_first_n=100, fail_status=500)
    try:
        source = upload(client, chat_lines(5, prefix="bad"))
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_for(client, batch.id, {"completed", "failed"})
    finally:
        upstream.reset()
    assert done.status == "completed"
    assert done.output_file_id is None
    assert done.request_counts.failed == 5
    errors = read_lines(client, done.error_file_id)
    assert len(errors) == 5
    for line in errors:
        assert line["response"]["status_code"] == 500  # an HTTP failure keeps its response
        assert isinstance(line["response"]["body"], dict)


def test_transient_upstream_faults_are_retried(service: Service, upstream: FakeUpstream) -> None:
    client = service.client()
    upstream.configure(fail_first_n=2, fail_status=429, retry_after=0)
    try:
        source = upload(client, chat_lines(6, prefix="retry"))
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_for(client, batch.id, {"completed"})
        log = upstream.requests()
    finally:
        upstream.reset()
    assert done.request_counts.completed == 6
    attempts = [r for r in log if r["key"] and r["key"].endswith("retry-0")]
    assert len(attempts) == 3  # two 429s, then the success


def test_invalid_input_fails_validation_with_line_numbers(service: Service) -> None:
    client = service.client()
    content = (
        chat_lines(1)
        + b"{not json\n"
        + chat_lines(1)  # duplicate custom_id req-0
        + b'{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"model": "fake-chat"}}\n'
    )
    source = upload(client, content)
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed"
    assert failed.failed_at is not None
    by_line = {e.line: e.code for e in failed.errors.data}
    assert by_line[2] == "invalid_json_line"
    assert by_line[3] == "duplicate_custom_id"
    assert by_line[4] == "invalid_url"


def test_unknown_model_fails_validation(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(2, model="no-such-model"))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed"
    assert {e.code for e in failed.errors.data} == {"model_not_found"}


def test_models_lists_upstream_models(service: Service) -> None:
    ids = {m.id for m in service.client().models.list()}
    assert {"fake-chat", "fake-embed"} <= ids


def test_errors_use_the_openai_envelope(service: Service) -> None:
    client = service.client(max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_doesnotexist")
    unknown = client.batches.create(  # created, then failed: OpenAI's behaviour
        input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_for(client, unknown.id, {"failed"}).errors.data[0].param == "file_id"
    source = upload(client, chat_lines(1))
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={f"k{i}": "v" for i in range(17)},
        )
    raw = httpx.post(
        f"{service.url}/batches", content=b"{broken", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    empty = httpx.post(
        f"{service.url}/files", files={"file": ("e.jsonl", b"")}, data={"purpose": "batch"}
    )
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"


def test_cancel_finished_batch_is_409(service: Service) -> None:
    client = service.client(max_retries=0)
    source = upload(client, chat_lines(1))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, {"completed"})
    with pytest.raises(openai.ConflictError) as conflict:
        client.batches.cancel(batch.id)
    assert "Cannot cancel a batch with status 'completed'" in conflict.value.message


def test_cancel_mid_batch_keeps_partial_results(service: Service, upstream: FakeUpstream) -> None:
    client = service.client()
    upstream.configure(latency_ms=100)
    try:
        source = upload(client, chat_lines(300, prefix="c"))
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        wait_for(client, batch.id, {"in_progress"})
        while client.batches.retrieve(batch.id).request_counts.completed < 10:
            pass
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = wait_for(client, batch.id, {"cancelled"})
    finally:
        upstream.reset()
    assert done.cancelling_at and done.cancelled_at
    outputs = read_lines(client, done.output_file_id)
    errors = read_lines(client, done.error_file_id)
    ids = [line["custom_id"] for line in outputs + errors]
    assert sorted(ids) == sorted(f"c-{i}" for i in range(300))  # each exactly once
    assert outputs, "partial results are kept"
    cancelled = [e for e in errors if e["error"] and e["error"]["code"] == "batch_cancelled"]
    assert cancelled and all(e["response"] is None for e in cancelled)
    assert {e["error"]["message"] for e in cancelled} == {
        "This request could not be executed before the batch was cancelled."
    }
    assert done.request_counts.completed == len(outputs)
    assert done.request_counts.completed + done.request_counts.failed == 300


def test_answers_are_logged_while_their_chunk_still_waits(
    service: Service, upstream: FakeUpstream
) -> None:
    """Outcomes are recorded as they come back: 8 lines are one chunk (chunk_size 16), half
    of them hang at the upstream (seed 0 draws 4 of the first 8 under 0.5), and the
    others' outcomes are counted while those still hang (before: only once the chunk's
    slowest request was back, here after the 10 s upstream timeout and its retries)."""
    client = service.client()
    upstream.configure(timeout_rate=0.5, seed=0, timeout_sleep_s=60)
    try:
        source = upload(client, chat_lines(8, prefix="hang"))
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        seen = client.batches.retrieve(batch.id)
        while seen.request_counts.completed == 0 and seen.status in ("validating", "in_progress"):
            time.sleep(0.05)
            seen = client.batches.retrieve(batch.id)
        counts = seen.request_counts
        assert seen.status == "in_progress", seen
        assert counts.completed > 0 and counts.completed + counts.failed < 8, counts
        client.batches.cancel(batch.id)
        wait_for(client, batch.id, {"cancelled"})
    finally:
        upstream.reset()


def test_timeline_extension(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(3, prefix="t"))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(client, batch.id, {"completed"})
    page = httpx.get(f"{service.url}/batches/{batch.id}/events", params={"limit": 2}).json()
    assert [e["type"] for e in page["data"]] == ["BatchCreated", "BatchValidated"]
    assert page["has_more"]
    rest = httpx.get(
        f"{service.url}/batches/{batch.id}/events", params={"after": page["data"][-1]["version"]}
    ).json()
    types = [e["type"] for e in rest["data"]]
    assert types.count("RequestSucceeded") == 3 and types[-1] == "BatchCompleted"
    missing = httpx.get(f"{service.url}/batches/batch_nope/events")
    assert missing.status_code == 404
