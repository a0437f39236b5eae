from __future__ import annotations

import re

import pytest

from batches.domain import events as ev
from batches.domain.errors import (
    ConflictingIdempotencyKeys,
    DomainError,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    error_envelope,
    error_type,
)
from batches.domain.ids import DEFAULT_TENANT, new_batch_id, new_file_id, new_request_id


def test_ids() -> None:
    assert re.fullmatch(r"batch_[0-9a-f]{24}", new_batch_id())
    assert re.fullmatch(r"file-[0-9a-f]{24}", new_file_id())
    assert re.fullmatch(r"batch_req_[0-9a-f]{24}", new_request_id())
    assert new_batch_id() != new_batch_id()
    assert DEFAULT_TENANT == "default"


def test_streams() -> None:
    assert ev.batch_stream("batch_1") == "batch-batch_1"
    assert ev.batch_id_of_stream("batch-batch_1") == "batch_1"
    assert ev.batch_id_of_stream("files") is None


CHAT = {
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
}


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("/v1/chat/completions", CHAT, (10, 4, 14, 3, 2)),
        (
            "/v1/completions",
            {"usage": {"prompt_tokens": 5, "completion_tokens": 1}},
            (5, 1, 6, 0, 0),
        ),
        (
            "/v1/responses",
            {
                "usage": {
                    "input_tokens": 7,
                    "output_tokens": 3,
                    "total_tokens": 10,
                    "input_tokens_details": {"cached_tokens": 1},
                    "output_tokens_details": {"reasoning_tokens": 2},
                }
            },
            (7, 3, 10, 1, 2),
        ),
        ("/v1/embeddings", {"usage": {"prompt_tokens": 8, "total_tokens": 8}}, (8, 0, 8, 0, 0)),
        ("/v1/moderations", {"results": []}, (0, 0, 0, 0, 0)),
        ("/v1/chat/completions", None, (0, 0, 0, 0, 0)),
        (
            "/v1/chat/completions",
            {"usage": {"prompt_tokens": None, "total_tokens": "x"}},
            (0, 0, 0, 0, 0),
        ),
    ],
)
def test_usage_from_body(endpoint: str, body: dict | None, expected: tuple[int, ...]) -> None:
    u = ev.usage_from_body(endpoint, body)
    keys = ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
    assert tuple(u[k] for k in keys) == expected  # type: ignore[literal-required]


def test_outcome_event_keeps_given_usage() -> None:
    given = {
        "input_tokens": 1,
        "output_tokens": 2,
        "total_tokens": 3,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }
    event_type, data = ev.outcome_event(
        "/v1/chat/completions",
        {
            "line": 1,
            "custom_id": "c",
            "request_id": "r",
            "status_code": 201,
            "body": CHAT,
            "usage": given,
        },
    )
    assert event_type == ev.REQUEST_SUCCEEDED and data["usage"] == given and data["attempts"] == 0


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (InvalidTransition, 409, "invalid_batch_status"),
        (NotFound, 404, "not_found"),
        (InvalidRequest, 400, "invalid_request"),
        (IdempotencyConflict, 409, "idempotency_key_reused"),
        (ConflictingIdempotencyKeys, 400, "conflicting_idempotency_keys"),
    ],
)
def test_domain_errors(cls: type[DomainError], status: int, code: str) -> None:
    err = cls("msg")
    assert isinstance(err, DomainError) and isinstance(err, Exception)
    assert (err.http_status, err.code, err.message) == (status, code, "msg")
    assert err.envelope() == {
        "error": {
            "message": "msg",
            "type": "invalid_request_error",
            "param": err.param,
            "code": code,
        }
    }


def test_error_envelope() -> None:
    assert error_envelope("m", param="p", code="c") == {
        "error": {"message": "m", "type": "invalid_request_error", "param": "p", "code": "c"}
    }
    assert error_envelope("m", type="server_error")["error"] == {
        "message": "m",
        "type": "server_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind
