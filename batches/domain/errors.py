"""Domain errors, each carrying what the façade needs to answer in OpenAI's shape.

Errors are raised as exceptions and shaped once (by the façade's handler) into
``{"error": {"message", "type", "param", "code"}}`` with ``http_status``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError


def error_envelope(
    code: str | None, message: str, type_: str, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope as a plain dict."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class DomainError(Exception):
    """Base of every refusal the domain makes."""

    default_code: ClassVar[str] = "internal_error"
    http_status: int = 500
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code or self.default_code
        self.param: str | None = param

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. telling the SDK not to retry)."""
        return {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.code, self.message, self.type, self.param)


class InvalidTransition(DomainError):
    """A command the batch's current status does not allow (e.g. cancel a completed batch)."""

    default_code = "invalid_batch_status"
    http_status = 409

    @property
    def headers(self) -> dict[str, str]:
        # Retrying cannot change a terminal status; stop the SDK's automatic 409 retries.
        return {"x-should-retry": "false"}


class NotFound(DomainError):
    default_code = "not_found"
    http_status = 404


class InvalidRequest(DomainError):
    default_code = "invalid_request"
    http_status = 400


class IdempotencyConflict(DomainError):
    """The key was already used with other parameters: retrying can never succeed."""

    default_code = "idempotency_key_reused"
    http_status = 409

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = "idempotency_key"
    ) -> None:
        super().__init__(message, code=code, param=param)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class ConflictingIdempotencyKeys(DomainError):
    """The body field, its alias and the header named different keys."""

    default_code = "conflicting_idempotency_keys"
    http_status = 400

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = "idempotency_key"
    ) -> None:
        super().__init__(message, code=code, param=param)


def invalid_request_from(exc: ValidationError) -> InvalidRequest:
    """Turn pydantic's first complaint into an OpenAI-style 400 naming the field."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first.get("loc", ())) or None
    message = str(first.get("msg", "Invalid request."))
    if param:
        message = f"Invalid value for '{param}': {message}"
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_request"
    return InvalidRequest(message, code=code, param=param)
