"""Wires settings, the coordinator handle and the routers into one FastAPI app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from batches.api import batches, errors, files, models
from batches.api.errors import envelope
from batches.filestore import LocalFileStore
from batches.settings import Settings


class Backpressure:
    """A flood gets 503 in the OpenAI envelope instead of queueing without bound.

    Plain ASGI: BaseHTTPMiddleware costs a task group per request (measured in the
    service benchmark's profile).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            overloaded = envelope(503, "The server is overloaded; retry later.", "overloaded", None)
            await overloaded(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def create_app(settings: Settings, coordinator: Any) -> FastAPI:
    app = FastAPI(
        title="batchlog",
        version="0.1.0",
        description="OpenAI-compatible Files and Batches API on an event-sourced actor system.",
    )
    app.state.settings = settings
    app.state.coordinator = coordinator
    app.state.files = LocalFileStore(settings.data_dir)
    errors.install(app)
    app.add_middleware(Backpressure, limit=settings.max_inflight_requests)
    for module in (files, batches, models):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health() -> Any:
        return await coordinator.health.remote()

    return app
