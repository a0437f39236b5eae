"""Domain errors, each carrying what the façade needs to answer in OpenAI's shape.

Errors are raised as exceptions and shaped once (by the façade's handler) into
``{"error": {"message", "type", "param", "code"}}`` with ``http_status``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError

from batches.domain.messages import parameter_error


def error_envelope(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope as a plain dict: the one builder (façade, executors)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class DomainError(Exception):
    """Base of every refusal the domain makes."""

    default_code: ClassVar[str] = "internal_error"
    http_status: int = 500
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str | None = code or self.default_code
        self.param: str | None = param

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. telling the SDK not to retry)."""
        return {}

    def envelope(self) -> dict[str, Any]:
        # The type follows the status, as the façade shapes it (a 503 is a server_error).
        return error_envelope(
            self.message, type=error_type(self.http_status), param=self.param, code=self.code
        )


class Refused(DomainError):
    """A refusal with its own status and code (the gate's, an upload's, a route's): the
    cases are built in ``batches.domain.refusals``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.http_status = status
        self.code = code  # OpenAI leaves some codes null (an unknown URL)
        self._headers = dict(headers or {})

    @property
    def headers(self) -> dict[str, str]:
        return self._headers


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


class ConcurrentUpdate(DomainError):
    """The stream moved since the decision was made: a stale writer is refused, never merged."""

    default_code = "concurrent_update"
    http_status = 409


class ConflictingIdempotencyKeys(DomainError):
    """The body field, its alias and the header named different keys."""

    default_code = "conflicting_idempotency_keys"
    http_status = 400

    def __init__(
        self, message: str, *, code: str | None = None, param: str | None = "idempotency_key"
    ) -> None:
        super().__init__(message, code=code, param=param)


def invalid_request_from(
    exc: ValidationError, allowed: Mapping[str, Sequence[str]] | None = None
) -> InvalidRequest:
    """Turn pydantic's first complaint into OpenAI's 400 naming the field, in OpenAI's
    words (``messages.parameter_error``), never pydantic's ("Input should be ...")."""
    code, message, param = parameter_error(exc.errors(include_url=False), allowed)
    return InvalidRequest(message, code=code, param=param)


class StorageUnavailable(DomainError):
    """The event log or the disk refused a write (ENOSPC, EIO): nothing was changed.
    The service reopens its store once the fault clears (docs/recovery.md)."""

    default_code = "storage_unavailable"
    http_status = 503

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": "5"}


class RateLimited(DomainError):
    """A per-tenant limit (queued batches, stored bytes, create rate): retry later."""

    default_code = "rate_limit_exceeded"
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: float, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, int(self.retry_after_s + 0.999)))}


class FileInUse(DomainError):
    """Deleting a file that a batch still reads."""

    default_code = "file_in_use"
    http_status = 409

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}
