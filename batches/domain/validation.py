"""Streaming validation of a batch input file (JSONL), one line at a time.

Memory stays constant apart from the set of custom_ids (needed to spot duplicates).
Each error names its 1-based ``line``; blank lines are skipped but still numbered,
so line numbers match what an editor shows. Every bad line gets one error (its first
problem), up to the bound of ``messages.bound_errors``; the wording of each is in
``batches/domain/messages.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batches.domain import messages as msg

REQUIRED_FIELDS: tuple[str, ...] = ("custom_id", "method", "url", "body")

# Per endpoint: the body fields a request must carry and the JSON types each may have
# (what OpenAI checks at validation; anything finer is left to the model server).
_STRING_OR_ARRAY = ((str, list), "a string or an array")
BODY_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "/v1/chat/completions": {"messages": ((list,), "an array")},
    "/v1/completions": {"prompt": _STRING_OR_ARRAY},
    "/v1/embeddings": {"input": _STRING_OR_ARRAY},
    "/v1/responses": {"input": _STRING_OR_ARRAY},
    "/v1/moderations": {"input": _STRING_OR_ARRAY},
}


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    max_requests: int = 50_000
    max_bytes: int = 200 * 2**20
    # One request line may not exceed this; bounds what a single parse can allocate.
    max_line_bytes: int = 10 * 2**20


@dataclass(slots=True)
class ValidationReport:
    model: str | None
    total: int
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _LineChecker:
    """Checks one line at a time; holds the cross-line facts (ids seen, the model)."""

    def __init__(self, endpoint: str, model_known: Callable[[str], bool]) -> None:
        self.endpoint = endpoint
        self.body_fields = BODY_FIELDS.get(endpoint, {})
        self.model_known = model_known
        self.custom_ids: set[str] = set()
        self.model: str | None = None
        # model_known may be a remote lookup: ask once per model, not once per line.
        self.checked_models: set[str] = set()

    def check(self, raw: bytes, n: int) -> msg.Error | None:
        """The first problem of line ``n``, or None if it is a valid request."""
        try:
            obj = orjson.loads(raw)  # also refuses bytes that are not UTF-8
        except orjson.JSONDecodeError:
            return msg.invalid_json_line(n)
        if not isinstance(obj, dict):
            return msg.not_an_object_line(n)
        for name in REQUIRED_FIELDS:
            if name not in obj:
                return msg.missing_line_field(n, name)
        return self._check_fields(obj, n)

    def _check_fields(self, obj: dict[str, Any], n: int) -> msg.Error | None:
        custom_id, method, url, body = (obj[name] for name in REQUIRED_FIELDS)
        problem = self._check_custom_id(custom_id, n)
        if problem is not None:
            return problem
        if method != "POST":
            return msg.invalid_method(n, method)
        if not isinstance(url, str):
            return msg.line_wrong_type(n, "url", "a string", url)
        if url != self.endpoint:
            return msg.url_mismatch(n)
        if not isinstance(body, dict):
            return msg.line_wrong_type(n, "body", "an object", body)
        return self._check_body(body, n)

    def _check_custom_id(self, custom_id: Any, n: int) -> msg.Error | None:
        if not isinstance(custom_id, str):
            return msg.line_wrong_type(n, "custom_id", "a string", custom_id)
        if not custom_id:
            return msg.empty_custom_id(n)
        if len(custom_id) > msg.MAX_CUSTOM_ID_CHARS:
            return msg.custom_id_too_long(n, len(custom_id))
        if custom_id in self.custom_ids:
            return msg.duplicate_custom_id(n, custom_id)
        self.custom_ids.add(custom_id)
        return None

    def _check_body(self, body: dict[str, Any], n: int) -> msg.Error | None:
        model = body.get("model")
        if model is None:
            return msg.body_field_required(n, "model")
        if not isinstance(model, str):
            return msg.line_wrong_type(n, "body.model", "a string", model)
        if not model:
            return msg.error("invalid_request", msg.empty_string("body.model"), n, "body.model")
        if body.get("stream") is True:
            return msg.streaming_unsupported(n, self.endpoint)
        for name, (types, expected) in self.body_fields.items():
            value = body.get(name)
            if value is None:
                return msg.body_field_required(n, name)
            if not isinstance(value, types):
                return msg.line_wrong_type(n, f"body.{name}", expected, value)
        return self._check_model(model, n)

    def _check_model(self, model: str, n: int) -> msg.Error | None:
        if self.model is None:
            self.model = model
        elif model != self.model:
            return msg.mismatched_model(n, model, self.model)
        if model in self.checked_models:
            return None  # known, or unknown and already reported on its first line
        self.checked_models.add(model)
        if not self.model_known(model):
            return msg.model_not_found(n, model)
        return None


def validate_input(
    lines: Iterable[bytes],
    endpoint: str,
    model_known: Callable[[str], bool],
    limits: ValidationLimits = ValidationLimits(),
    max_errors: int = msg.MAX_ERRORS,
) -> ValidationReport:
    """Validate a JSONL input file streamed as lines; one error per bad line.

    Stops after ``max_errors`` errors or MAX_ERRORS_CHARS of messages, so a failed
    batch's ``errors`` stays small whatever the file holds.
    """
    checker = _LineChecker(endpoint, model_known)
    errors: list[dict[str, Any]] = []
    chars = total = size = 0
    for n, raw in enumerate(lines, start=1):
        size += len(raw)
        if size > limits.max_bytes:
            errors.append(msg.file_too_large(n, limits.max_bytes))
            break
        if not raw.strip():
            continue
        total += 1
        if total > limits.max_requests:
            errors.append(msg.too_many_requests(n, limits.max_requests))
            break
        if len(raw) > limits.max_line_bytes:
            problem: msg.Error | None = msg.line_too_large(n, limits.max_line_bytes)
        else:
            problem = checker.check(raw, n)
        if problem is not None:
            chars += len(problem["message"])
            if chars > msg.MAX_ERRORS_CHARS:
                break
            errors.append(problem)
            if len(errors) >= max_errors:
                break
    if total == 0 and not errors:
        errors.append(msg.empty_file())
    return ValidationReport(model=checker.model, total=total, errors=errors)


def iter_requests(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, parsed_line)`` for each request of an already validated file."""
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            yield n, orjson.loads(raw)
