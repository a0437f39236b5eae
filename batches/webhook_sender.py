"""The webhook sender's work, Ray-free (actors/webhooks.py runs it in a named actor).

It restores its ``Outbox`` (batches/domain/webhooks.py) from its checkpoint
(batches/outbox_checkpoint.py) and folds the log after it, then follows the log: a
batch's terminal event becomes a ``WebhookQueued`` event in ``webhooks-<batch_id>``
(the outbox), and each queued webhook is POSTed, signed, until a 2xx, with exponential
backoff for up to the retry period; every attempt is an event. Killed at any point, a
new incarnation restores the same outbox (checkpoint + log tail) and goes on: delivery
is at least once, with the same webhook-id, and what the log says was delivered is not
sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import httpx

from batches.backends import open_event_log
from batches.domain.webhooks import (
    MARKER_STREAM,
    WEBHOOK_QUEUED,
    WEBHOOKS_ENABLED,
    Delivery,
    DeliveryPolicy,
    Outbox,
    attempt_events,
    webhook_body,
    webhook_stream,
)
from batches.outbox_checkpoint import OutboxCheckpoint
from batches.settings import Settings
from batches.webhooks import route_for, signed_headers
from eventlog import EventLog, NewEvent, StoreFailed, WrongExpectedVersion

log = logging.getLogger("batchlog.webhooks")
POLL_S = 0.25
MAX_CONCURRENT = 16


class Sender:
    def __init__(
        self,
        settings: Settings,
        secret: str | None,
        tenant_routes: dict[str, Any],
        checkpoint_every_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.secret = secret
        self.tenant_routes = tenant_routes
        self.policy = DeliveryPolicy(
            base_delay_s=settings.webhook_retry_base_s,
            max_delay_s=settings.webhook_retry_max_delay_s,
            period_s=settings.webhook_retry_period_s,
        )
        self.store: EventLog = open_event_log(settings)
        every = {} if checkpoint_every_s is None else {"every_s": checkpoint_every_s}
        self.checkpoint = OutboxCheckpoint(settings.data_dir, fsync=settings.fsync, **every)
        self.outbox = self.checkpoint.load(self.store.head()) or Outbox()
        self.restored_at = self.outbox.position  # 0: folded from the start of the log
        self.in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._store_failed = False
        self.delivered = 0

    def status(self) -> dict[str, Any]:
        return {
            "position": self.outbox.position,
            "restored_at": self.restored_at,
            "checkpoint": self.checkpoint.saved,
            "pending": sorted(self.outbox.pending),
            "delivered": self.delivered,
        }

    # -- the loop ----------------------------------------------------------------------

    async def run_forever(self) -> None:
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while True:
                await self.round(client)
                await asyncio.sleep(POLL_S)

    async def round(self, client: httpx.AsyncClient) -> None:
        """Fold what the log gained, queue what ended, send what is due, checkpoint."""
        try:
            if self._store_failed:
                raise StoreFailed("an attempt's append failed")
            self._catch_up()
            self._enable_once()
            self._queue_ended()
            self._send_due(client)
            await self.checkpoint.save(self.outbox)
        except StoreFailed:  # a write failed (disk full, EIO): reopen, go on
            log.exception("webhook sender's store failed; reopening it")
            with contextlib.suppress(Exception):
                self.store.close()
            with contextlib.suppress(Exception):
                self.store = open_event_log(self.settings)
                self._store_failed = False
        except Exception:  # keep delivering whatever one round hit
            log.exception("webhook round failed")

    async def settle(self) -> None:
        """Wait for the attempts in flight (tests, and a clean stop)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        self.store.close()

    def _catch_up(self) -> None:
        while True:
            events = self.store.read_all(after=self.outbox.position, limit=10_000)
            if not events:
                return
            for e in events:
                self.outbox.apply(e.stream_id, e.type, e.data, e.position, e.recorded_at)

    def _enable_once(self) -> None:
        """The first start records where deliveries begin: no webhooks for old batches."""
        if self.outbox.enabled_after is not None:
            return
        marker = NewEvent(WEBHOOKS_ENABLED, {"after_position": self.store.head()})
        with contextlib.suppress(WrongExpectedVersion):  # another incarnation wrote it
            self.store.append(MARKER_STREAM, [marker], expected_version=0)
        self._catch_up()

    def _route(self, tenant: str) -> Any:
        return route_for(tenant, self.settings.webhook_url, self.secret, self.tenant_routes)

    def _queue_ended(self) -> None:
        for queued in self.outbox.to_queue():
            if self._route(queued["tenant"]) is None:
                self.outbox.skip(queued["batch_id"])
                continue
            with contextlib.suppress(WrongExpectedVersion):  # queued by an earlier incarnation
                self.store.append(
                    webhook_stream(queued["batch_id"]),
                    [NewEvent(WEBHOOK_QUEUED, queued)],
                    expected_version=0,
                )
        self._catch_up()

    def _send_due(self, client: httpx.AsyncClient) -> None:
        now = time.time()
        for delivery in self.outbox.due(now):
            if len(self.in_flight) >= MAX_CONCURRENT:
                return
            if delivery.batch_id in self.in_flight:
                continue
            self.in_flight.add(delivery.batch_id)
            task = asyncio.get_running_loop().create_task(self._attempt(client, delivery))
            self._tasks.add(task)  # held, so the task is not collected while it runs
            task.add_done_callback(self._tasks.discard)

    async def _attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            await self._try_once(client, delivery)
        except StoreFailed:
            self._store_failed = True  # the loop reopens the store; the attempt is retried
        except Exception:
            log.exception("webhook attempt failed")
        finally:
            self.in_flight.discard(delivery.batch_id)

    async def _try_once(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        route = self._route(delivery.queued["tenant"])
        if route is None:
            return  # configuration removed: it stays queued until a webhook is set again
        body = webhook_body(delivery.queued)
        at = time.time()
        headers = signed_headers(route.secret, delivery.queued["webhook_id"], int(at), body)
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(route.url, content=body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        events = attempt_events(
            delivery,
            url=route.url,
            status_code=status,
            error=error,
            at=at,
            policy=self.policy,
            rand=random.random(),
        )
        stream = webhook_stream(delivery.batch_id)
        try:
            self.store.append(
                stream, [NewEvent(t, d) for t, d in events], expected_version=delivery.version
            )
        except WrongExpectedVersion:
            log.warning("webhook %s: another sender wrote first", delivery.queued["webhook_id"])
        else:
            if status is not None and 200 <= status < 300:
                self.delivered += 1
        self._catch_up()
