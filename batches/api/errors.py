"""Every error leaves as OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from batches.domain.errors import DomainError, error_envelope, error_type
from batches.domain.messages import parameter_error

log = logging.getLogger("batchlog.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


def envelope(
    status: int,
    message: str,
    code: str | None,
    param: str | None,
    headers: dict[str, str] | None = None,
) -> ORJSONResponse:
    body = error_envelope(message, type=error_type(status), param=param, code=code)
    return ORJSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    from batches.api.gate import BodyTooSlow  # the gate imports this module

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> ORJSONResponse:
        return envelope(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> ORJSONResponse:
        return envelope(exc.http_status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(BodyTooSlow)
    async def _slow(_: Request, exc: BodyTooSlow) -> ORJSONResponse:
        message = "The request body arrived too slowly."
        return envelope(408, message, "request_timeout", None, {"connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        # A bad query or path parameter, worded as OpenAI does (never pydantic's words).
        code, message, param = parameter_error(exc.errors())
        return envelope(400, message, code, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ORJSONResponse:
        return envelope(exc.status_code, str(exc.detail), None, None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ORJSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return envelope(
            500, "The server had an error while processing your request.", "server_error", None
        )
