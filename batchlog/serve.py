"""Start Ray, the coordinator and the HTTP server, in that order; stop in reverse.

Ray starts before uvicorn and shuts down after it: started inside a FastAPI lifespan
it took over uvicorn's SIGTERM handling and broke graceful shutdown. This is the one
composition root: settings -> Ray -> coordinator (and webhook sender) -> the façade over
`actors.gateway.RayBatchService`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import ray
import uvicorn
from fastapi import FastAPI

from actors import dbpassword
from actors.coordinator import COORDINATOR_NAME as COORDINATOR
from actors.coordinator import get_or_create_coordinator
from actors.gateway import RayBatchService
from actors.webhooks import get_or_create_webhook_sender
from batches import rayauth
from batches.api import create_app
from batches.api.app import ModelStatus
from batches.api.gate import is_loopback
from batches.settings import Settings
from batchlog import localray
from batchlog.client import RAY_ADDRESS_FILE

log = logging.getLogger("batchlog.serve")


def init_ray(settings: Settings) -> None:
    if ray.is_initialized():
        return
    if settings.ray_address is None:
        # A local Ray of our own, no dashboard. Its ports listen on every interface
        # (whatever _node_ip_address says), so token auth must be on: rayauth.prepare
        # turned it on before ray was imported; check that it took.
        if os.environ.get(rayauth.AUTH_MODE) != "token":
            raise rayauth.RayAuthRefused("a local Ray needs RAY_AUTH_MODE=token")
        # Only the Ray processes batchlog uses (docs/architecture.md, "Ray processes").
        localray.quiet_environment()
        with localray.without_side_processes(settings.ray_worker_logs):
            ray.init(
                address="local",
                namespace=settings.namespace,
                include_dashboard=False,
                num_cpus=settings.ray_num_cpus,
                logging_level=logging.WARNING,
                log_to_driver=settings.ray_worker_logs,
            )
    else:
        ray.init(address=settings.ray_address, namespace=settings.namespace)


def prepare_data_dir(settings: Settings) -> None:
    """Owner-only: the data dir holds every tenant's files and the secrets file. The
    umask also covers the log, Ray's session files and everything Ray's workers write."""
    os.umask(0o077)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.data_dir.chmod(0o700)
    if not settings.facade_only:  # a façade reads none; the deployment's serve wrote them
        settings.write_secrets()


def check_exposure(settings: Settings) -> None:
    """Anyone who reaches a keyless server is every tenant: refuse to bind a real
    interface without keys unless BATCHLOG_ALLOW_OPEN says so, and then say it loudly."""
    if settings.api_keys or is_loopback(settings.host):
        return
    if not settings.allow_open:
        raise SystemExit(
            f"refusing to serve {settings.host} without API keys: anyone who can reach it "
            "could read and create every batch. Set BATCHLOG_API_KEYS=key:tenant,... "
            "(or BATCHLOG_ALLOW_OPEN=true to serve it open anyway)."
        )
    log.warning(
        "SERVING %s WITH NO API KEYS (BATCHLOG_ALLOW_OPEN): anyone who can reach this "
        "port can read, create and delete every file and batch",
        settings.host,
    )


def start_coordinator(settings: Settings) -> Any:
    # Drivers find this deployment's Ray from the data dir (batchlog.client). A local
    # Ray turns on token auth, so a joining driver must ask for it too.
    address = ray.get_runtime_context().gcs_address
    auth = os.environ.get("RAY_AUTH_MODE", "token" if settings.ray_address is None else "")
    (settings.data_dir / RAY_ADDRESS_FILE).write_text(f"{address}\n{auth}\n")
    coordinator = get_or_create_coordinator(settings)
    summary = ray.get(coordinator.start.remote())
    log.info("coordinator started: %s", summary)
    return coordinator


def attach_coordinator(settings: Settings) -> Any:
    """A façade only: the coordinator another `serve` started on this cluster."""
    try:
        coordinator = ray.get_actor(COORDINATOR, namespace=settings.namespace)
    except ValueError:
        raise SystemExit(
            f"--facade-only: no batchlog coordinator in Ray namespace {settings.namespace!r} "
            f"at {settings.ray_address}; start one `batchlog serve --ray-address ...` "
            "without --facade-only first"
        ) from None
    log.info("façade attached to the running coordinator: %s", ray.get(coordinator.start.remote()))
    return coordinator


def start_webhooks(settings: Settings) -> Any:
    """The webhook sender (actors/webhooks.py), when a webhook is configured."""
    if not settings.webhooks_on:
        return None
    if settings.webhook_url and not settings.webhook_secret:
        raise SystemExit("BATCHLOG_WEBHOOK_URL needs BATCHLOG_WEBHOOK_SECRET (whsec_...)")
    sender = get_or_create_webhook_sender(settings)
    log.info("webhook sender: %s", ray.get(sender.status.remote()))
    return sender


def start_local_models(settings: Settings) -> ModelStatus | None:
    """Start loading the embedded models now (not at the first batch) and report, once,
    whether they run here: a broken engine is said at start-up, in one sentence."""
    if not settings.use_local_models:
        return None
    from actors.dispatch import local_pool

    pool = local_pool(settings)

    def report() -> None:
        status = asyncio.run(pool.wait_ready())
        for model, s in status.items():
            if s["status"] == "failed":
                log.error("embedded model %s FAILED: %s", model, s["reason"])
                print(f"batchlog: embedded model {model} failed: {s['reason']}", flush=True)
            else:
                log.info("embedded model %s: %s (%d replicas)", model, s["status"], s["replicas"])

    threading.Thread(target=report, name="model-status", daemon=True).start()
    return pool.status  # type: ignore[no-any-return]


def make_server(
    settings: Settings, build: Callable[[Callable[[], int]], FastAPI]
) -> uvicorn.Server:
    """uvicorn serving ``build(open_connections)``: the app's gate refuses requests while
    more than ``max_connections`` connections are open, in OpenAI's envelope (uvicorn's
    own ``limit_concurrency`` answers a plain-text 503, so it is not set)."""
    server: uvicorn.Server | None = None

    def open_connections() -> int:
        return len(server.server_state.connections) if server is not None else 0

    app = build(open_connections)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    )
    return server


def serve(settings: Settings) -> None:
    check_exposure(settings)
    if settings.facade_only and settings.ray_address is None:
        raise SystemExit("--facade-only joins a running deployment: give --ray-address too")
    prepare_data_dir(settings)
    init_ray(settings)
    try:
        if settings.facade_only:
            coordinator, sender, models = attach_coordinator(settings), None, None
        else:
            dbpassword.publish(settings)  # for actors on any node; never an actor argument
            coordinator = start_coordinator(settings)
            # Held for the server's life: Ray ends an actor once no handle to it is left.
            sender = start_webhooks(settings)
            models = start_local_models(settings)
        service = RayBatchService(coordinator, copies=settings.read_cache)

        def build(open_connections: Callable[[], int]) -> FastAPI:
            app = create_app(
                settings, service, model_status=models, open_connections=open_connections
            )
            app.state.webhooks = sender
            return app

        server = make_server(settings, build)
        server.run()
        if not server.started:  # as uvicorn.run: the port was taken, say
            raise SystemExit(3)
    finally:
        ray.shutdown()
