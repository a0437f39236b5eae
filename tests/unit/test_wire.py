from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from batches.domain.wire import (
    SUPPORTED_ENDPOINTS,
    Batch,
    CreateBatchRequest,
    FileObject,
)

# Every field of the Batch object in reference/openai-batch-api.md.
BATCH_FIELDS = {
    "id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at",
    "model", "errors", "output_file_id", "error_file_id", "in_progress_at", "expires_at",
    "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
    "request_counts", "usage", "metadata",
}  # fmt: skip
NULL_WHEN_NEW = BATCH_FIELDS - {
    "id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at",
    "request_counts", "usage",
}  # fmt: skip


def new_batch() -> Batch:
    return Batch(
        id="batch_1",
        endpoint="/v1/chat/completions",
        input_file_id="file-1",
        completion_window="24h",
        status="validating",
        created_at=1,
    )


def test_batch_dump_has_every_field_with_nulls() -> None:
    dumped = new_batch().model_dump(mode="json")
    assert set(dumped) == BATCH_FIELDS
    assert all(dumped[name] is None for name in NULL_WHEN_NEW)
    assert dumped["object"] == "batch"
    assert dumped["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert dumped["usage"] == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


def test_batch_parses_with_openai_sdk_model() -> None:
    openai_batch = pytest.importorskip("openai.types.batch")
    sdk = openai_batch.Batch.model_validate(new_batch().model_dump(mode="json"))
    assert sdk.id == "batch_1" and sdk.status == "validating"


def test_file_objects() -> None:
    f = FileObject(id="file-1", bytes=10, created_at=1, filename="in.jsonl", purpose="batch")
    dumped = f.model_dump(mode="json")
    assert dumped == {
        "id": "file-1", "object": "file", "bytes": 10, "created_at": 1, "filename": "in.jsonl",
        "purpose": "batch", "status": "processed", "expires_at": None, "status_details": None,
    }  # fmt: skip


GOOD: dict[str, Any] = {
    "input_file_id": "file-1",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
}


@pytest.mark.parametrize("endpoint", SUPPORTED_ENDPOINTS)
def test_create_request_accepts_each_endpoint(endpoint: str) -> None:
    assert CreateBatchRequest.model_validate(GOOD | {"endpoint": endpoint}).endpoint == endpoint
    assert len(SUPPORTED_ENDPOINTS) == 5


def test_create_request_full_and_extras_ignored() -> None:
    req = CreateBatchRequest.model_validate(
        GOOD
        | {
            "metadata": {f"k{i}": "v" * 512 for i in range(16)},
            "output_expires_after": {"anchor": "created_at", "seconds": 3600},
            "idempotency_key": "a",
            "idem_tok": "b",
            "something_new": 1,
        }
    )
    assert (req.idempotency_key, req.idem_tok) == ("a", "b")  # kept apart, not merged
    assert req.output_expires_after is not None and req.output_expires_after.seconds == 3600
    assert not hasattr(req, "something_new")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 3599}},
            "output_expires_after",
        ),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 2_592_001}},
            "output_expires_after",
        ),
        (
            {"output_expires_after": {"anchor": "last_active_at", "seconds": 3600}},
            "output_expires_after",
        ),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "x" * 256}, "idempotency_key"),
        ({"idem_tok": ""}, "idem_tok"),
        ({"input_file_id": ""}, "input_file_id"),
    ],
)
def test_create_request_refuses(change: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as info:
        CreateBatchRequest.model_validate(GOOD | change)
    assert info.value.errors()[0]["loc"][0] == param


@pytest.mark.parametrize("missing", ["input_file_id", "endpoint", "completion_window"])
def test_create_request_requires(missing: str) -> None:
    with pytest.raises(ValidationError):
        CreateBatchRequest.model_validate({k: v for k, v in GOOD.items() if k != missing})
