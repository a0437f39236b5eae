"""Output-file and error-file lines, shaped as in OpenAI's Batch API.

Successes go to the output file, failures (and unfinished lines) to the error file.
``response.body`` is always a JSON object, never a JSON-encoded string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson

from batches.domain import line_errors
from batches.domain.events import is_success
from batches.domain.executor import LineError

__all__ = ["encode_line", "is_success", "output_line", "unfinished_line"]

UNFINISHED: dict[str, Callable[[], LineError]] = {
    "batch_expired": line_errors.batch_expired,
    "batch_cancelled": line_errors.batch_cancelled,
}


def _as_object(body: Any) -> dict[str, Any]:
    # Upstreams sometimes answer with a JSON string or nothing; the wire wants an object.
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, str | bytes):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {"message": body if isinstance(body, str) else body.decode("utf-8", "replace")}
        return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {} if body is None else {"value": body}


def output_line(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The output/error file line of one outcome (event data or executor outcome).

    An HTTP failure keeps its ``response`` (non-2xx status and error body); a failure
    with no HTTP response (timeout, refused) has ``response: null`` and an ``error``.
    """
    request_id = str(outcome.get("request_id") or "")
    status = outcome.get("status_code")
    response = (
        {"status_code": status, "request_id": request_id, "body": _as_object(outcome.get("body"))}
        if status is not None
        else None
    )
    error = outcome.get("error")
    return {
        "id": request_id,
        "custom_id": outcome["custom_id"],
        "response": response,
        "error": (
            {"code": str(error.get("code")), "message": str(error.get("message"))}
            if isinstance(error, Mapping)
            else None
        ),
    }


def unfinished_line(
    custom_id: str | None, reason: Literal["batch_cancelled", "batch_expired"], request_id: str
) -> dict[str, Any]:
    """The error-file line of a request that never ran before cancel or expiry."""
    return {
        "id": request_id,
        "custom_id": custom_id,
        "response": None,
        "error": UNFINISHED[reason](),
    }


def encode_line(obj: Any) -> bytes:
    """One JSONL line: compact JSON plus a newline."""
    return orjson.dumps(obj) + b"\n"
