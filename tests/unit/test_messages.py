"""Every error message, checked against OpenAI's recorded wording where it is known."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from batches.domain import decider
from batches.domain import messages as msg
from batches.domain.errors import invalid_request_from
from batches.domain.wire import CREATE_CHOICES, CreateBatchRequest

GOOD = {"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}


def create_error(body: dict[str, Any]) -> tuple[int, str, str | None, str]:
    with pytest.raises(ValidationError) as info:
        CreateBatchRequest.model_validate(body)
    err = invalid_request_from(info.value, CREATE_CHOICES)
    return err.http_status, err.code, err.param, err.message


def test_invalid_endpoint_is_openais_message() -> None:
    assert create_error(GOOD | {"endpoint": "/v1/invalid/endpoint"}) == (
        400,
        "invalid_value",
        "endpoint",
        "Invalid endpoint: /v1/invalid/endpoint. Supported values: '/v1/chat/completions',"
        " '/v1/completions', '/v1/embeddings', '/v1/responses', and '/v1/moderations'.",
    )


@pytest.mark.parametrize("window", ["1h", "48h", "invalid", ""])
def test_invalid_completion_window(window: str) -> None:
    assert create_error(GOOD | {"completion_window": window}) == (
        400,
        "invalid_value",
        "completion_window",
        f"Invalid completion_window: {window}. Supported values: '24h'.",
    )


def test_metadata_wrong_type_is_openais_message() -> None:
    assert create_error(GOOD | {"metadata": {"tags": ["tag1", "tag2"]}}) == (
        400,
        "invalid_value",
        "metadata.tags",
        "Invalid type for 'metadata.tags': expected a string, but got an array instead.",
    )


@pytest.mark.parametrize(
    ("change", "code", "param", "words"),
    [
        ({"input_file_id": None}, "invalid_value", "input_file_id", "expected a string"),
        ({"input_file_id": ""}, "invalid_value", "input_file_id", "empty string"),
        ({"metadata": {"k": "v" * 513}}, "invalid_value", "metadata.k", "maximum length 512"),
        ({"metadata": {"k" * 65: "v"}}, "invalid_value", "metadata", "maximum length 64"),
        (
            {"metadata": {f"k{i}": "v" for i in range(17)}},
            "invalid_value",
            "metadata",
            "at most 16",
        ),
        ({"metadata": "x"}, "invalid_value", "metadata", "expected an object, but got a string"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 10}},
            "invalid_value",
            "output_expires_after.seconds",
            "Expected a value >= 3600, but got 10",
        ),
        (
            {"output_expires_after": {"anchor": "now", "seconds": 3600}},
            "invalid_value",
            "output_expires_after.anchor",
            "Supported values: 'created_at'.",
        ),
        ({"idempotency_key": "k" * 256}, "invalid_value", "idempotency_key", "maximum length 255"),
    ],
)
def test_create_parameter_errors(change: dict[str, Any], code: str, param: str, words: str) -> None:
    status, got_code, got_param, message = create_error(GOOD | change)
    assert (status, got_code, got_param) == (400, code, param)
    assert words in message and "Input should" not in message


@pytest.mark.parametrize("missing", ["input_file_id", "endpoint", "completion_window"])
def test_missing_create_parameter(missing: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != missing}
    assert create_error(body) == (
        400,
        "missing_required_parameter",
        missing,
        f"Missing required parameter: '{missing}'.",
    )


def test_echo_cuts_long_values() -> None:
    assert msg.echo("short") == "short"
    cut = msg.echo("x" * 1000)
    assert len(cut) == msg.MAX_ECHO_CHARS + 3 and cut.endswith("...")
    assert msg.invalid_value("endpoint", "y" * 10_000, ["a"]).count("y") == msg.MAX_ECHO_CHARS


def test_unknown_input_file_is_openais_error() -> None:
    """OpenAI's recorded error, with "organization <org>" as "this tenant"."""
    assert msg.input_file_not_found("file-x") == {
        "code": "invalid_request",
        "line": None,
        "param": "file_id",
        "message": "Cannot find file file-x, or this tenant does not have access to it.",
    }


def test_supported_lists_like_openai() -> None:
    assert msg.supported(["a"]) == "'a'"
    assert msg.supported(["a", "b"]) == "'a' and 'b'"
    assert msg.supported(["a", "b", "c"]) == "'a', 'b', and 'c'"


def test_bound_errors_caps_count_size_and_each_message() -> None:
    many = [msg.error("c", "m" * 500, n) for n in range(1, 1000)]
    bounded = msg.bound_errors(many)
    assert len(bounded) <= msg.MAX_ERRORS
    assert sum(len(e["message"]) for e in bounded) <= msg.MAX_ERRORS_CHARS
    one = msg.bound_errors([msg.error("c", "z" * 10**6, 1)])
    assert len(one) == 1 and len(one[0]["message"]) == msg.MAX_MESSAGE_CHARS + 3


def test_a_failed_batch_from_an_old_log_replays_bounded() -> None:
    """Events written before the bound existed (10 MB of errors) replay small."""
    created = decider.decide(
        None,
        decider.CreateBatch(
            batch_id="batch_1",
            tenant="t",
            input_file_id="file-1",
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=None,
            output_expires_after=None,
            idempotency_key=None,
            at=100,
        ),
    )
    old = [msg.error("duplicate_custom_id", "x" * 100_000, n) for n in range(1, 102)]
    state = decider.fold([*created, ("BatchValidationFailed", {"errors": old, "at": 101})])
    assert state.status == "failed" and state.errors is not None
    assert sum(len(e["message"]) for e in state.errors) <= msg.MAX_ERRORS_CHARS
    # and a new validation result is bounded before it reaches the log
    fresh = decider.fold(created)
    events = decider.decide(fresh, decider.RecordValidation(at=101, errors=old))
    assert sum(len(e["message"]) for e in events[0][1]["errors"]) <= msg.MAX_ERRORS_CHARS
