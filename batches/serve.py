"""Start Ray, the coordinator and the HTTP server, in that order; stop in reverse.

Ray starts before uvicorn and shuts down after it: started inside a FastAPI lifespan
it took over uvicorn's SIGTERM handling (DESIGN.md, hazards).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
import uvicorn

from actors.coordinator import get_or_create_coordinator
from batches.api import create_app
from batches.client import RAY_ADDRESS_FILE
from batches.settings import Settings

log = logging.getLogger("batchlog.serve")


def init_ray(settings: Settings) -> None:
    if ray.is_initialized():
        return
    if settings.ray_address is None:
        # A local Ray of our own, on loopback only, no dashboard.
        ray.init(
            address="local",
            namespace=settings.namespace,
            include_dashboard=False,
            num_cpus=settings.ray_num_cpus,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    else:
        ray.init(address=settings.ray_address, namespace=settings.namespace)


def start_coordinator(settings: Settings) -> Any:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Drivers find this deployment's Ray from the data dir (batches.client). A local
    # Ray turns on token auth, so a joining driver must ask for it too.
    address = ray.get_runtime_context().gcs_address
    auth = os.environ.get("RAY_AUTH_MODE", "token" if settings.ray_address is None else "")
    (settings.data_dir / RAY_ADDRESS_FILE).write_text(f"{address}\n{auth}\n")
    coordinator = get_or_create_coordinator(settings)
    summary = ray.get(coordinator.start.remote())
    log.info("coordinator started: %s", summary)
    return coordinator


def serve(settings: Settings) -> None:
    init_ray(settings)
    try:
        coordinator = start_coordinator(settings)
        app = create_app(settings, coordinator)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        ray.shutdown()
