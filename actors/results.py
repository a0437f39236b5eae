"""Errors cross actor boundaries as data: pickled exception classes are fragile in Ray.

An actor method catches a `DomainError` and returns `error_result(err)`; the caller's
side (`actors.gateway`, the Ray-driver client) turns the record back into a
`DomainError` with `raise_if_error`, so the façade sees the same error it would in-process.
"""

from __future__ import annotations

from typing import Any

from batches.domain.errors import DomainError, error_type

ERROR_KEY = "__error__"


def error_result(err: DomainError) -> dict[str, Any]:
    return {
        ERROR_KEY: {
            "status": err.http_status,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "headers": err.headers,
        }
    }


def is_error(result: Any) -> bool:
    return isinstance(result, dict) and ERROR_KEY in result


class RelayedError(DomainError):
    """A DomainError raised in another actor, rebuilt from its record."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["message"], code=record["code"], param=record["param"])
        self.http_status = int(record["status"])
        self.type = error_type(self.http_status)
        self._headers: dict[str, str] = dict(record.get("headers") or {})

    @property
    def headers(self) -> dict[str, str]:
        return self._headers


def raise_if_error(result: Any) -> Any:
    """The value of an actor answer, or its error raised as a DomainError."""
    if is_error(result):
        raise RelayedError(result[ERROR_KEY])
    return result
