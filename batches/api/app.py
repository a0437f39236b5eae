"""Wires settings, the coordinator handle and the routers into one FastAPI app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from batches.api import batches, errors, files, live, models
from batches.api.auth import TENANT_KEY
from batches.api.gate import Gate
from batches.filestore import LocalFileStore
from batches.settings import Settings


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
    app.add_middleware(Gate, settings=settings)
    for module in (files, batches, live, models):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> Any:
        """Without a key (when keys are configured) only the status: batch ids and
        counts are for tenants."""
        report: dict[str, Any] = await coordinator.health.remote()
        status = 200 if report.get("status") == "ok" else 503
        if request.scope.get("state", {}).get(TENANT_KEY) is None:
            report = {"status": report.get("status")}
        return ORJSONResponse(report, status_code=status)

    return app
