"""Idempotent create: same key + same params -> same batch; other params -> 409, no retry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from batches.testing import Service
from tests.e2e.conftest import chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def _create(client: openai.OpenAI, file_id: str, key: str, **extra: object) -> openai.types.Batch:
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"idempotency_key": key},
        **extra,  # type: ignore[arg-type]
    )


def _created_events(service: Service, batch_id: str) -> int:
    events = httpx.get(f"{service.url}/batches/{batch_id}/events", params={"limit": 1000}).json()
    return sum(e["type"] == "BatchCreated" for e in events["data"])


def test_same_key_same_params_returns_the_same_batch(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(2))
    first = _create(client, source.id, "key-same", metadata={"a": "1", "b": "2"})
    # Metadata key order does not matter; the alias and the header name the same key.
    again = _create(client, source.id, "key-same", metadata={"b": "2", "a": "1"})
    assert again.id == first.id
    via_alias = client.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"a": "1", "b": "2"},
        extra_body={"idem_tok": "key-same"},
    )
    assert via_alias.id == first.id
    via_header = client.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"a": "1", "b": "2"},
        extra_headers={"Idempotency-Key": '"key-same"'},
    )
    assert via_header.id == first.id
    wait_for(client, first.id, {"completed"})
    assert (
        _create(client, source.id, "key-same", metadata={"a": "1", "b": "2"}).status == "completed"
    )


def test_same_key_other_params_is_409_and_not_retried(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(2))
    _create(client, source.id, "key-mismatch")
    raw = httpx.post(
        f"{service.url}/batches",
        json={
            "input_file_id": source.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"other": "params"},
            "idempotency_key": "key-mismatch",
        },
    )
    assert raw.status_code == 409
    assert raw.headers["x-should-retry"] == "false"
    assert raw.json()["error"]["code"] == "idempotency_key_reused"
    with pytest.raises(openai.ConflictError):
        _create(client, source.id, "key-mismatch", metadata={"other": "params"})


def test_two_different_keys_in_one_request_is_400(service: Service) -> None:
    client = service.client(max_retries=0)
    source = upload(client, chat_lines(1))
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=source.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"idempotency_key": "one"},
            extra_headers={"Idempotency-Key": "two"},
        )


def test_concurrent_creates_with_one_key_make_one_batch(service: Service) -> None:
    client = service.client()
    source = upload(client, chat_lines(2))
    with ThreadPoolExecutor(max_workers=20) as pool:
        batches = list(pool.map(lambda _: _create(client, source.id, "key-race"), range(20)))
    ids = {b.id for b in batches}
    assert len(ids) == 1
    (batch_id,) = ids
    assert _created_events(service, batch_id) == 1
    listed = [b.id for b in client.batches.list(limit=100) if b.input_file_id == source.id]
    assert listed == [batch_id]
