from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from batches.domain.outputs import encode_line, is_success, output_line, unfinished_line

from .helpers import outcome

KEYS = {"id", "custom_id", "response", "error"}


class ResponseRecord(BaseModel):
    status_code: int
    request_id: str
    body: dict[str, Any]


class LineError(BaseModel):
    code: str
    message: str


class OutputLine(BaseModel):
    """A line of OpenAI's output/error files (reference/openai-batch-api.md)."""

    id: str
    custom_id: str | None
    response: ResponseRecord | None = None
    error: LineError | None = None


def test_success_line() -> None:
    o = outcome(1)
    line = output_line(o)
    assert set(line) == KEYS and is_success(o)
    assert line["id"] == o["request_id"] and line["custom_id"] == "req-1"
    assert line["response"] == {
        "status_code": 200,
        "request_id": o["request_id"],
        "body": o["body"],
    }
    assert line["error"] is None
    OutputLine.model_validate(line)


def test_http_failure_keeps_response() -> None:
    o = outcome(2, ok=False)
    line = output_line(o)
    assert not is_success(o)
    assert line["response"]["status_code"] == 500
    assert line["response"]["body"] == {"error": {"message": "boom"}}
    OutputLine.model_validate(line)


def test_transport_failure_has_null_response_and_error() -> None:
    o = outcome(3) | {
        "status_code": None,
        "body": None,
        "error": {"code": "timeout", "message": "t"},
    }
    line = output_line(o)
    assert line["response"] is None and line["error"] == {"code": "timeout", "message": "t"}
    assert not is_success(o)
    OutputLine.model_validate(line)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("not json", {"message": "not json"}),
        (None, {}),
        ("[1]", {"value": [1]}),
    ],
)
def test_body_is_always_an_object(body: object, expected: dict[str, object]) -> None:
    line = output_line(outcome(1, ok=False) | {"body": body})
    assert line["response"]["body"] == expected


@pytest.mark.parametrize(
    ("reason", "words"),
    [("batch_expired", "completion window expired"), ("batch_cancelled", "cancelled")],
)
def test_unfinished_lines(reason: str, words: str) -> None:
    line = unfinished_line("c-1", reason, "batch_req_1")  # type: ignore[arg-type]
    assert line["response"] is None and line["id"] == "batch_req_1" and line["custom_id"] == "c-1"
    assert line["error"]["code"] == reason and words in line["error"]["message"]
    OutputLine.model_validate(line)


def test_encode_line() -> None:
    raw = encode_line(output_line(outcome(1)))
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert isinstance(orjson.loads(raw)["response"]["body"], dict)
