"""OpenAI's recorded behaviour, through the real openai SDK against `batchlog serve`."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest

from batches.testing import Service
from tests.e2e.conftest import chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"


def test_unknown_input_file_creates_a_batch_that_fails_validation(service: Service) -> None:
    """As OpenAI: the create succeeds (`validating`); polling sees it fail validation."""
    client = service.client(max_retries=0)
    first = client.batches.create(
        input_file_id="file-nonexistent-xyz",
        endpoint=CHAT,
        completion_window="24h",
        extra_body={"idempotency_key": "unknown-file"},
    )
    assert (first.status, first.errors, first.failed_at) == ("validating", None, None)
    failed = wait_for(client, first.id, {"failed"})
    assert failed.failed_at is not None and failed.errors is not None
    assert [e.model_dump() for e in failed.errors.data] == [
        {
            "code": "invalid_request",
            "line": None,
            "param": "file_id",
            "message": "Cannot find file file-nonexistent-xyz, "
            "or this tenant does not have access to it.",
        }
    ]
    again = client.batches.create(
        input_file_id="file-nonexistent-xyz",
        endpoint=CHAT,
        completion_window="24h",
        extra_body={"idempotency_key": "unknown-file"},
    )
    assert again.id == first.id and again.status == "failed"
    # The log says what happened: created, then (by validation) failed.
    events = httpx.get(f"{service.url}/batches/{first.id}/events").json()["data"]
    assert [e["type"] for e in events][:2] == ["BatchCreated", "BatchValidationFailed"]
    with pytest.raises(openai.ConflictError):  # same key, other parameters
        client.batches.create(
            input_file_id="file-other",
            endpoint=CHAT,
            completion_window="24h",
            extra_body={"idempotency_key": "unknown-file"},
        )


def test_body_fields_are_checked_per_line(service: Service) -> None:
    """llama-stack's test_batch_missing_required_body_fields, with OpenAI's messages."""
    client = service.client()
    lines = [
        {"custom_id": "no-model", "body": {"messages": [{"role": "user", "content": "hi"}]}},
        {"custom_id": "no-messages", "body": {"model": "fake-chat", "max_tokens": 10}},
        {"custom_id": "ok", "body": {"model": "fake-chat", "messages": []}},
        {"custom_id": "stream", "body": {"model": "fake-chat", "messages": [], "stream": True}},
    ]
    content = b"".join(
        orjson.dumps({"method": "POST", "url": CHAT, **line}) + b"\n" for line in lines
    )
    batch = client.batches.create(
        input_file_id=upload(client, content).id, endpoint=CHAT, completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed" and failed.errors is not None
    assert [(e.line, e.code, e.param, e.message) for e in failed.errors.data] == [
        (1, "invalid_request", "body.model", "Model parameter is required."),
        (2, "invalid_request", "body.messages", "Messages parameter is required."),
        (
            4,
            "streaming_unsupported",
            "body.stream",
            "Chat Completions: Streaming is not supported in the Batch API.",
        ),
    ]


def test_unknown_model_is_openais_error(service: Service) -> None:
    client = service.client()
    content = chat_lines(2, model="nonexistent-model-xyz")
    batch = client.batches.create(
        input_file_id=upload(client, content).id, endpoint=CHAT, completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.errors is not None
    assert [(e.line, e.code, e.param, e.message) for e in failed.errors.data] == [
        (
            1,
            "model_not_found",
            "body.model",
            "The provided model 'nonexistent-model-xyz' is not supported by the Batch API.",
        )
    ]


def test_create_parameter_errors_are_openais(service: Service) -> None:
    client = service.client(max_retries=0)
    source = upload(client, chat_lines(1))
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/invalid/endpoint",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert (bad.value.code, bad.value.param) == ("invalid_value", "endpoint")
    assert bad.value.body is not None and bad.value.body["message"].startswith(  # type: ignore[index]
        "Invalid endpoint: /v1/invalid/endpoint. Supported values: '/v1/chat/completions',"
    )
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(
            input_file_id=source.id,
            endpoint=CHAT,
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert (bad.value.code, bad.value.param) == ("invalid_value", "completion_window")
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(
            input_file_id=source.id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"tags": ["tag1", "tag2"]},  # type: ignore[dict-item]
        )
    assert bad.value.body["message"] == (  # type: ignore[index]
        "Invalid type for 'metadata.tags': expected a string, but got an array instead."
    )
    # A bad query parameter is worded the same way, never as pydantic's "Input should be".
    raw = httpx.get(f"{service.url}/batches", params={"limit": 1000})
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "limit"
    assert "Input should" not in raw.json()["error"]["message"]


def test_missing_batch_is_404_saying_not_found(service: Service) -> None:
    client = service.client(max_retries=0)
    for call in (client.batches.retrieve, client.batches.cancel):
        with pytest.raises(openai.NotFoundError) as missing:
            call("batch-nonexistent-xyz")
        assert missing.value.body["message"] == (  # type: ignore[index]
            "No batch found with id 'batch-nonexistent-xyz'."
        )


def test_a_huge_custom_id_does_not_bloat_the_batch(service: Service) -> None:
    """Issue 10 item 3: 101 lines sharing a 100 KB custom_id used to make GET 10 MB
    (here 2 KB ids, under this service's 256 KiB upload limit: 200 KB before)."""
    client = service.client()
    huge = "x" * 2_000
    line = {
        "custom_id": huge,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "fake-chat", "messages": []},
    }
    content = b"".join(orjson.dumps(line) + b"\n" for _ in range(101))
    batch = client.batches.create(
        input_file_id=upload(client, content).id, endpoint=CHAT, completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed"
    raw = httpx.get(f"{service.url}/batches/{batch.id}")
    assert len(raw.content) < 32 * 1024
    assert failed.errors is not None and huge not in raw.text
