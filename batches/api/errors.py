"""Every error leaves as OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.

The cases themselves (status, code, message) are built in ``batches.domain.refusals``
and raised as ``DomainError``s; this module only shapes them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from batches.api.responses import OrjsonResponse
from batches.domain import refusals
from batches.domain.errors import DomainError, error_envelope, error_type
from batches.domain.messages import parameter_error

log = logging.getLogger("batchlog.api")


def envelope(
    status: int,
    message: str,
    code: str | None,
    param: str | None,
    headers: dict[str, str] | None = None,
) -> OrjsonResponse:
    body = error_envelope(message, type=error_type(status), param=param, code=code)
    return OrjsonResponse(body, status_code=status, headers=headers)


def respond(err: DomainError, headers: dict[str, str] | None = None) -> OrjsonResponse:
    """``err`` as OpenAI's envelope, with its headers (and ``headers`` added)."""
    return envelope(
        err.http_status, err.message, err.code, err.param, {**err.headers, **(headers or {})}
    )


def install(app: FastAPI) -> None:
    from batches.api.gate import BodyTooSlow  # the gate imports this module

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> OrjsonResponse:
        return respond(exc)

    @app.exception_handler(BodyTooSlow)
    async def _slow(_: Request, exc: BodyTooSlow) -> OrjsonResponse:
        return respond(refusals.body_too_slow())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        # A bad query or path parameter, worded as OpenAI does (never pydantic's words).
        code, message, param = parameter_error(exc.errors())
        return envelope(400, message, code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        # The framework's own refusals (no such route, wrong method), in OpenAI's words.
        if exc.status_code == 404:
            refusal = refusals.invalid_url(request.method, request.url.path)
        elif exc.status_code == 405:
            refusal = refusals.invalid_method(request.method, request.url.path)
        else:
            refusal = refusals.http_error(exc.status_code)
        return respond(refusal, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unhandled error", exc_info=exc)
        return respond(refusals.server_error())
