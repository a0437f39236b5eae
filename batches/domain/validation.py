"""Streaming validation of a batch input file (JSONL), one line at a time.

Memory stays constant apart from the set of custom_ids (needed to spot duplicates).
Each error names its 1-based ``line``; blank lines are skipped but still numbered,
so line numbers match what an editor shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

REQUIRED_FIELDS: tuple[str, ...] = ("custom_id", "method", "url", "body")


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


def _error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


class _LineChecker:
    """Checks one line at a time; holds the cross-line facts (ids seen, the model)."""

    def __init__(self, endpoint: str, model_known: Callable[[str], bool]) -> None:
        self.endpoint = endpoint
        self.model_known = model_known
        self.custom_ids: set[str] = set()
        self.model: str | None = None
        # model_known may be a remote lookup: ask once per model, not once per line.
        self.checked_models: set[str] = set()

    def check(self, raw: bytes, n: int) -> dict[str, Any] | None:
        """The first problem of line ``n``, or None if it is a valid request."""
        try:
            obj = orjson.loads(raw)  # also refuses bytes that are not UTF-8
        except orjson.JSONDecodeError:
            return _error("invalid_json_line", f"Line {n} is not valid JSON.", n)
        if not isinstance(obj, dict):
            return _error("invalid_json_line", f"Line {n} is not a JSON object.", n)
        for name in REQUIRED_FIELDS:
            if name not in obj:
                return _error(
                    "missing_required_parameter", f"Line {n} is missing '{name}'.", n, name
                )
        return self._check_fields(obj, n)

    def _check_fields(self, obj: dict[str, Any], n: int) -> dict[str, Any] | None:
        custom_id, method, url, body = (obj[name] for name in REQUIRED_FIELDS)
        if not isinstance(custom_id, str) or not custom_id:
            return _error(
                "invalid_request",
                f"Line {n}: custom_id must be a non-empty string.",
                n,
                "custom_id",
            )
        if custom_id in self.custom_ids:
            return _error(
                "duplicate_custom_id",
                f"Line {n}: custom_id '{custom_id}' is used more than once.",
                n,
                "custom_id",
            )
        self.custom_ids.add(custom_id)
        if method != "POST":
            return _error("invalid_request", f"Line {n}: method must be 'POST'.", n, "method")
        if not isinstance(url, str):
            return _error("invalid_request", f"Line {n}: url must be a string.", n, "url")
        if url != self.endpoint:
            return _error(
                "invalid_url",
                f"Line {n}: url '{url}' does not match the batch endpoint '{self.endpoint}'.",
                n,
                "url",
            )
        if not isinstance(body, dict):
            return _error("invalid_request", f"Line {n}: body must be a JSON object.", n, "body")
        if body.get("stream") is True:
            return _error(
                "streaming_unsupported",
                f"Line {n}: stream=true is not supported.",
                n,
                "body.stream",
            )
        return self._check_model(body.get("model"), n)

    def _check_model(self, model: Any, n: int) -> dict[str, Any] | None:
        if not isinstance(model, str) or not model:
            return _error(
                "invalid_request",
                f"Line {n}: body.model must be a non-empty string.",
                n,
                "body.model",
            )
        if self.model is None:
            self.model = model
        elif model != self.model:
            return _error(
                "mismatched_model",
                f"Line {n}: model '{model}' differs from '{self.model}'; use one model per file.",
                n,
                "body.model",
            )
        if model in self.checked_models:
            return None  # known, or unknown and already reported on its first line
        self.checked_models.add(model)
        if not self.model_known(model):
            return _error(
                "model_not_found", f"Line {n}: model '{model}' is not available.", n, "body.model"
            )
        return None


def validate_input(
    lines: Iterable[bytes],
    endpoint: str,
    model_known: Callable[[str], bool],
    limits: ValidationLimits = ValidationLimits(),
    max_errors: int = 100,
) -> ValidationReport:
    """Validate a JSONL input file streamed as lines; stops after ``max_errors`` errors."""
    checker = _LineChecker(endpoint, model_known)
    errors: list[dict[str, Any]] = []
    total = size = 0
    for n, raw in enumerate(lines, start=1):
        size += len(raw)
        if size > limits.max_bytes:
            errors.append(
                _error("file_too_large", f"The input file exceeds {limits.max_bytes} bytes.", n)
            )
            break
        if not raw.strip():
            continue
        total += 1
        if total > limits.max_requests:
            errors.append(
                _error(
                    "too_many_requests",
                    f"The input file has more than {limits.max_requests} requests.",
                    n,
                )
            )
            break
        if len(raw) > limits.max_line_bytes:
            problem: dict[str, Any] | None = _error(
                "line_too_large", f"Line {n} exceeds {limits.max_line_bytes} bytes.", n
            )
        else:
            problem = checker.check(raw, n)
        if problem is not None:
            errors.append(problem)
            if len(errors) >= max_errors:
                break
    if total == 0 and not errors:
        errors.append(_error("empty_file", "The input file has no requests.", None))
    return ValidationReport(model=checker.model, total=total, errors=errors)


def iter_requests(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, parsed_line)`` for each request of an already validated file."""
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            yield n, orjson.loads(raw)
