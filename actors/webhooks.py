"""The webhook sender's actor: one named actor per deployment, started by `batchlog
serve` when a webhook is configured (docs/webhooks.md). The work is Ray-free
(batches/webhook_sender.py); this shell reads the secrets, runs the loop on a thread of
its own, started in ``__init__``, so a restarted actor resumes without anyone calling
it, and answers ``status``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ray

from actors import names
from actors.dbpassword import actor_settings
from batches.settings import Settings
from batches.webhook_sender import Sender

WEBHOOKS_NAME = names.COORDINATOR + "-webhooks"


class WebhookSender:
    def __init__(self, settings: dict[str, Any]) -> None:
        config = actor_settings(settings)  # with the database password, if any
        # Secrets are not actor arguments (Ray keeps those in its GCS; docs/scaling.md, "Secrets").
        self.sender = Sender(
            config,
            secret=config.read_secret("webhook_secret"),
            tenant_routes=config.read_secret("tenant_webhooks") or {},
        )
        self._thread = threading.Thread(target=self._main, name="webhooks", daemon=True)
        self._thread.start()

    def status(self) -> dict[str, Any]:
        return self.sender.status()

    def _main(self) -> None:
        asyncio.run(self.sender.run_forever())


WebhookSenderRemote = ray.remote(WebhookSender)


def get_or_create_webhook_sender(settings: Settings) -> Any:
    return WebhookSenderRemote.options(  # type: ignore[attr-defined]
        name=WEBHOOKS_NAME,
        namespace=settings.namespace,
        get_if_exists=True,
        lifetime="detached" if settings.ray_address is not None else None,  # as the coordinator
        num_cpus=0,
        max_concurrency=4,
        # Crashed, it is restarted, restores its outbox (checkpoint + log tail), goes on.
        max_restarts=-1,
    ).remote(settings.actor_args())
