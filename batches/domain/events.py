"""Event type names, stream names and the shapes of their data payloads.

Events are stored as ``(type, data)`` with ``data`` a plain JSON dict; the TypedDicts
below document the shapes and the helpers build them, so every writer agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

# Payloads are decoded JSON, so shape checks below test for dict (fast) rather than
# the Mapping ABC: they run several times per request.

# Streams.
FILES_STREAM = "files"
COORDINATOR_STREAM = "coordinator"
BATCH_STREAM_PREFIX = "batch-"

# Batch stream events.
BATCH_CREATED = "BatchCreated"
BATCH_VALIDATED = "BatchValidated"
BATCH_VALIDATION_FAILED = "BatchValidationFailed"
REQUEST_SUCCEEDED = "RequestSucceeded"
REQUEST_FAILED = "RequestFailed"
BATCH_FINALIZING = "BatchFinalizing"
BATCH_COMPLETED = "BatchCompleted"
BATCH_CANCEL_REQUESTED = "BatchCancelRequested"
BATCH_CANCELLED = "BatchCancelled"
BATCH_EXPIRED = "BatchExpired"
# The batch's actor kept crashing: the coordinator gave up on it (docs/recovery.md).
BATCH_FAILED = "BatchFailed"
BATCH_EVENT_TYPES: frozenset[str] = frozenset(
    {
        BATCH_CREATED,
        BATCH_VALIDATED,
        BATCH_VALIDATION_FAILED,
        REQUEST_SUCCEEDED,
        REQUEST_FAILED,
        BATCH_FINALIZING,
        BATCH_COMPLETED,
        BATCH_CANCEL_REQUESTED,
        BATCH_CANCELLED,
        BATCH_EXPIRED,
        BATCH_FAILED,
    }
)
OUTCOME_EVENT_TYPES: frozenset[str] = frozenset({REQUEST_SUCCEEDED, REQUEST_FAILED})
# The last event of a batch's stream: after it the stream never grows.
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset(
    {BATCH_VALIDATION_FAILED, BATCH_COMPLETED, BATCH_CANCELLED, BATCH_EXPIRED, BATCH_FAILED}
)

# Files stream events.
FILE_UPLOADED = "FileUploaded"
FILE_DELETED = "FileDeleted"
FILE_EXPIRED = "FileExpired"  # its expires_at passed: gone from the API, bytes deleted

# Coordinator stream events.
IDEMPOTENCY_KEY_CLAIMED = "IdempotencyKeyClaimed"

Event = tuple[str, dict[str, Any]]


def batch_stream(batch_id: str) -> str:
    return BATCH_STREAM_PREFIX + batch_id


def batch_id_of_stream(stream_id: str) -> str | None:
    """The batch id of a ``batch-<id>`` stream, or None for any other stream."""
    if stream_id.startswith(BATCH_STREAM_PREFIX):
        return stream_id[len(BATCH_STREAM_PREFIX) :]
    return None


class UsageData(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int


class LineErrorData(TypedDict):
    code: str
    message: str


class OutcomeData(TypedDict):
    """Data of ``RequestSucceeded`` / ``RequestFailed``."""

    line: int
    custom_id: str
    request_id: str
    status_code: int | None
    body: dict[str, Any] | None
    error: LineErrorData | None
    attempts: int
    latency_ms: float
    started_at: float
    finished_at: float
    usage: UsageData


class BatchCreatedData(TypedDict):
    batch_id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: dict[str, Any] | None
    idempotency_key: str | None
    created_at: int
    expires_at: int


class ValidationErrorData(TypedDict):
    code: str
    message: str
    param: str | None
    line: int | None


class FileUploadedData(TypedDict):
    file_id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: str
    sha256: str
    lines: int | None


class FileExpiredData(TypedDict):
    file_id: str
    at: int  # when it was expired (unix seconds), at or after its expires_at
    expires_at: int


class IdempotencyKeyClaimedData(TypedDict):
    tenant: str
    key: str
    digest: str
    batch_id: str
    params: dict[str, Any]
    at: int


def zero_usage() -> UsageData:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }


def _int(value: Any) -> int:
    # Upstreams vary: missing, null or odd values count as zero rather than failing a line.
    # Exact type checks: bool is not a count, and this runs for every request.
    kind = type(value)
    if kind is int or kind is float:
        return int(value) if value > 0 else 0
    return 0


def _sub(body: Mapping[str, Any], key: str, field: str) -> int:
    details = body.get(key)
    return _int(details.get(field)) if isinstance(details, dict) else 0


def usage_from_body(endpoint: str, body: Mapping[str, Any] | None) -> UsageData:
    """Token usage of one upstream reply, normalised to the Batch ``usage`` counters."""
    usage = zero_usage()
    raw = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(raw, dict) or endpoint == "/v1/moderations":
        return usage
    if endpoint == "/v1/responses":
        usage["input_tokens"] = _int(raw.get("input_tokens"))
        usage["output_tokens"] = _int(raw.get("output_tokens"))
        usage["cached_tokens"] = _sub(raw, "input_tokens_details", "cached_tokens")
        usage["reasoning_tokens"] = _sub(raw, "output_tokens_details", "reasoning_tokens")
    else:  # chat/completions, completions, embeddings: the prompt/completion naming
        usage["input_tokens"] = _int(raw.get("prompt_tokens"))
        usage["output_tokens"] = _int(raw.get("completion_tokens"))
        usage["cached_tokens"] = _sub(raw, "prompt_tokens_details", "cached_tokens")
        usage["reasoning_tokens"] = _sub(raw, "completion_tokens_details", "reasoning_tokens")
    total = raw.get("total_tokens")
    usage["total_tokens"] = (
        _int(total) if total is not None else usage["input_tokens"] + usage["output_tokens"]
    )
    return usage


def is_success(outcome: Mapping[str, Any]) -> bool:
    """A 2xx status with a body and no error is a success; anything else is a failure
    (a 2xx whose body was not a JSON object carries an error: it goes to the error file)."""
    status = outcome.get("status_code")
    return (
        type(status) is int
        and 200 <= status < 300
        and isinstance(outcome.get("body"), dict)
        and not outcome.get("error")
    )


def outcome_event(endpoint: str, outcome: Mapping[str, Any]) -> Event:
    """Normalise an executor outcome into a ``RequestSucceeded``/``RequestFailed`` event."""
    body = outcome.get("body")
    usage = outcome.get("usage")
    data: OutcomeData = {
        "line": int(outcome["line"]),
        "custom_id": str(outcome["custom_id"]),
        "request_id": str(outcome.get("request_id") or ""),
        "status_code": outcome.get("status_code"),
        "body": body if isinstance(body, dict) else None,
        "error": _line_error(outcome.get("error")),
        "attempts": int(outcome.get("attempts") or 0),
        "latency_ms": float(outcome.get("latency_ms") or 0.0),
        "started_at": float(outcome.get("started_at") or 0.0),
        "finished_at": float(outcome.get("finished_at") or 0.0),
        "usage": _usage(usage) if isinstance(usage, dict) else usage_from_body(endpoint, body),
    }
    kind = REQUEST_SUCCEEDED if is_success(outcome) else REQUEST_FAILED
    return kind, cast(dict[str, Any], data)


def _line_error(error: Any) -> LineErrorData | None:
    if not isinstance(error, dict):
        return None
    return {"code": str(error.get("code") or "error"), "message": str(error.get("message") or "")}


def _usage(raw: Mapping[str, Any]) -> UsageData:
    return {
        "input_tokens": _int(raw.get("input_tokens")),
        "output_tokens": _int(raw.get("output_tokens")),
        "total_tokens": _int(raw.get("total_tokens")),
        "cached_tokens": _int(raw.get("cached_tokens")),
        "reasoning_tokens": _int(raw.get("reasoning_tokens")),
    }
