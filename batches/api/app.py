"""Wires settings, a BatchService, a file store and the routers into one FastAPI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request

from batches.api import batches, errors, files, live, models
from batches.api.auth import TENANT_KEY
from batches.api.gate import Gate
from batches.api.responses import OrjsonResponse
from batches.backends import open_file_store
from batches.core.ports import BatchService
from batches.filestore import FileStore
from batches.settings import Settings

# Per embedded model: {"status": "starting" | "ready" | "failed", "reason", ...}.
ModelStatus = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


def create_app(
    settings: Settings,
    service: BatchService,
    file_store: FileStore | None = None,
    model_status: ModelStatus | None = None,
    open_connections: Callable[[], int] | None = None,
) -> FastAPI:
    """The façade over `service` (`actors.gateway.RayBatchService` in `batchlog serve`).

    Uploads are written to `file_store` (default: the settings' store, local or
    PostgreSQL) before the
    service records them; downloads stream from it. ``open_connections`` is the HTTP
    server's count of open connections: over ``max_connections`` the gate answers 503."""
    app = FastAPI(
        title="batchlog",
        version="0.1.0",
        description="OpenAI-compatible Files and Batches API on an event-sourced actor system.",
    )
    app.state.settings = settings
    app.state.service = service
    app.state.model_status = model_status
    app.state.files = file_store or open_file_store(settings)
    errors.install(app)
    app.add_middleware(Gate, settings=settings, open_connections=open_connections)
    for module in (files, batches, live, models):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> Any:
        """Without a key (when keys are configured) only the status: batch ids and
        counts are for tenants."""
        report: dict[str, Any] = await service.health()
        status = 200 if report.get("status") == "ok" else 503
        if model_status is not None:  # an embedded model that cannot run: degraded, not down
            report["models"] = await model_status()
            if status == 200 and any(m["status"] == "failed" for m in report["models"].values()):
                report["status"] = "degraded"
        if request.scope.get("state", {}).get(TENANT_KEY) is None:
            report = {"status": report.get("status")}
        return OrjsonResponse(report, status_code=status)

    return app
