"""Errors cross actor boundaries as data: pickled exception classes are fragile in Ray."""

from __future__ import annotations

from typing import Any

from batches.domain.errors import DomainError

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
