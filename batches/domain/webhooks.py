"""Webhooks as OpenAI sends them, delivered from an outbox in the log (docs/webhooks.md).

Pure: the outbox is a projection of the global log (``Outbox.apply``), and what one
delivery attempt records is decided by ``attempt_events``; the sender
(batches/webhook_sender.py, run by actors/webhooks.py) does the I/O around them.

Streams: ``webhooks`` holds one ``WebhooksEnabled`` marker (batches that ended before
it get no webhook: turning webhooks on does not replay history); ``webhooks-<batch_id>``
holds the batch's delivery, ``WebhookQueued`` (the intent, appended once the batch's
terminal event is seen), then ``WebhookAttempted`` per try, then ``WebhookDelivered``
or ``WebhookAbandoned``. Its single writer is the sender.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batches.domain import events as ev
from batches.domain.retry import RetryPolicy, backoff_delay

MARKER_STREAM = "webhooks"
STREAM_PREFIX = "webhooks-"
WEBHOOKS_ENABLED = "WebhooksEnabled"
WEBHOOK_QUEUED = "WebhookQueued"
WEBHOOK_ATTEMPTED = "WebhookAttempted"
WEBHOOK_DELIVERED = "WebhookDelivered"
WEBHOOK_ABANDONED = "WebhookAbandoned"
OUTBOX_SCHEMA = 1  # of Outbox.to_dict

WEBHOOK_TYPES: dict[str, str] = {
    ev.BATCH_COMPLETED: "batch.completed",
    ev.BATCH_VALIDATION_FAILED: "batch.failed",
    ev.BATCH_FAILED: "batch.failed",  # its actor kept crashing (issue 10)
    ev.BATCH_CANCELLED: "batch.cancelled",
    ev.BATCH_EXPIRED: "batch.expired",
}


def webhook_stream(batch_id: str) -> str:
    return STREAM_PREFIX + batch_id


def _digest(batch_id: str, type_: str) -> str:
    return hashlib.sha256(f"{batch_id}:{type_}".encode()).hexdigest()[:32]


def webhook_ids(batch_id: str, type_: str) -> tuple[str, str]:
    """``(event id, webhook-id)``: derived from the batch and the event, so they are the
    same on every retry and after any restart (receivers deduplicate on webhook-id)."""
    digest = _digest(batch_id, type_)
    return "evt_" + digest, "wh_" + digest


def webhook_body(queued: Mapping[str, Any]) -> bytes:
    """OpenAI's event body; the same bytes on every attempt."""
    return orjson.dumps(
        {
            "id": queued["event_id"],
            "object": "event",
            "created_at": int(queued["created_at"]),
            "type": queued["type"],
            "data": {"id": queued["batch_id"]},
        }
    )


@dataclass(slots=True)
class Delivery:
    """A queued webhook not yet delivered nor abandoned."""

    queued: dict[str, Any]
    version: int  # of its webhooks-<batch_id> stream: the sender appends after it
    attempts: int = 0
    first_attempt_at: float | None = None
    next_at: float = 0.0

    @property
    def batch_id(self) -> str:
        return str(self.queued["batch_id"])


@dataclass
class Outbox:
    """What the log says about webhooks: the batches that ended and wait to be queued,
    and the deliveries in flight. Fed every event in global order."""

    position: int = 0
    enabled_after: int | None = None  # the WebhooksEnabled marker's position
    tenants: dict[str, str] = field(default_factory=dict)  # batches not yet ended
    ended: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    pending: dict[str, Delivery] = field(default_factory=dict)

    def apply(
        self, stream_id: str, type_: str, data: Mapping[str, Any], position: int, recorded_at: float
    ) -> None:
        self.position = max(self.position, position)
        if stream_id.startswith(ev.BATCH_STREAM_PREFIX):
            self._batch_event(stream_id[len(ev.BATCH_STREAM_PREFIX) :], type_, data, position)
        elif stream_id == MARKER_STREAM and type_ == WEBHOOKS_ENABLED:
            if self.enabled_after is None:
                self.enabled_after = int(data["after_position"])
        elif stream_id.startswith(STREAM_PREFIX):
            self._delivery_event(stream_id[len(STREAM_PREFIX) :], type_, data, recorded_at)

    def _batch_event(
        self, batch_id: str, type_: str, data: Mapping[str, Any], position: int
    ) -> None:
        if type_ == ev.BATCH_CREATED:
            self.tenants[batch_id] = str(data["tenant"])
        elif type_ in WEBHOOK_TYPES:
            tenant = self.tenants.pop(batch_id, None)
            if tenant is None:
                return
            kind = WEBHOOK_TYPES[type_]
            event_id, webhook_id = webhook_ids(batch_id, kind)
            queued = {
                "webhook_id": webhook_id,
                "event_id": event_id,
                "type": kind,
                "batch_id": batch_id,
                "tenant": tenant,
                "created_at": int(data["at"]),
            }
            self.ended[batch_id] = (position, queued)

    def _delivery_event(
        self, batch_id: str, type_: str, data: Mapping[str, Any], recorded_at: float
    ) -> None:
        if type_ == WEBHOOK_QUEUED:
            self.ended.pop(batch_id, None)
            self.pending[batch_id] = Delivery(dict(data), version=1, next_at=recorded_at)
            return
        delivery = self.pending.get(batch_id)
        if delivery is None:
            return
        delivery.version += 1
        if type_ == WEBHOOK_ATTEMPTED:
            delivery.attempts = int(data["attempt"])
            if delivery.first_attempt_at is None:
                delivery.first_attempt_at = float(data["at"])
            delivery.next_at = float(data["next_at"] or 0.0)
        elif type_ in (WEBHOOK_DELIVERED, WEBHOOK_ABANDONED):
            del self.pending[batch_id]

    def to_queue(self) -> list[dict[str, Any]]:
        """Batches that ended after webhooks were enabled and have no delivery yet.

        Those that ended before are dropped here, so a long history folded at start
        does not stay in memory."""
        if self.enabled_after is None:
            return []
        cutoff = self.enabled_after
        for batch_id in [b for b, (pos, _) in self.ended.items() if pos <= cutoff]:
            del self.ended[batch_id]
        return [q for _, q in self.ended.values()]

    def skip(self, batch_id: str) -> None:
        """A batch whose tenant has no webhook: forget it."""
        self.ended.pop(batch_id, None)

    def due(self, now: float) -> list[Delivery]:
        return [d for d in self.pending.values() if d.next_at <= now]

    def to_dict(self) -> dict[str, Any]:
        """The outbox as JSON-ready data, for its checkpoint (batches/outbox_checkpoint.py)."""
        return {
            "schema": OUTBOX_SCHEMA,
            "position": self.position,
            "enabled_after": self.enabled_after,
            "tenants": dict(self.tenants),
            "ended": {b: [pos, dict(q)] for b, (pos, q) in self.ended.items()},
            "pending": {
                b: {
                    "queued": dict(d.queued),
                    "version": d.version,
                    "attempts": d.attempts,
                    "first_attempt_at": d.first_attempt_at,
                    "next_at": d.next_at,
                }
                for b, d in self.pending.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outbox | None:
        """What ``to_dict`` described, or None for another schema (then: replay)."""
        if data.get("schema") != OUTBOX_SCHEMA:
            return None
        return cls(
            position=int(data["position"]),
            enabled_after=data["enabled_after"],
            tenants=dict(data["tenants"]),
            ended={b: (int(pos), dict(q)) for b, (pos, q) in data["ended"].items()},
            pending={b: Delivery(**d) for b, d in data["pending"].items()},
        )


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    base_delay_s: float = 5.0
    max_delay_s: float = 3_600.0
    period_s: float = 72 * 3_600.0  # OpenAI retries for up to 72 hours


def attempt_events(
    delivery: Delivery,
    *,
    url: str,
    status_code: int | None,
    error: str | None,
    at: float,
    policy: DeliveryPolicy,
    rand: float,
) -> list[ev.Event]:
    """What one attempt records: a 2xx ends it (delivered); otherwise the next attempt
    after an exponential backoff, or abandoned once ``period_s`` has passed."""
    attempt = delivery.attempts + 1
    ok = status_code is not None and 200 <= status_code < 300
    first = delivery.first_attempt_at if delivery.first_attempt_at is not None else at
    delay = backoff_delay(
        RetryPolicy(base_delay=policy.base_delay_s, max_delay=policy.max_delay_s, jitter=0.2),
        attempt,
        None,
        rand,
    )
    give_up = not ok and at + delay - first > policy.period_s
    base = {"webhook_id": delivery.queued["webhook_id"], "attempt": attempt, "at": at}
    attempted = {
        **base,
        "url": url,
        "status_code": status_code,
        "error": error,
        "next_at": None if ok or give_up else at + delay,
    }
    out: list[ev.Event] = [(WEBHOOK_ATTEMPTED, attempted)]
    if ok:
        out.append((WEBHOOK_DELIVERED, {**base, "status_code": status_code}))
    elif give_up:
        out.append((WEBHOOK_ABANDONED, {**base, "reason": "retry period over"}))
    return out
