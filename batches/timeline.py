"""A batch's timeline (``GET /v1/batches/{id}/events``): its own stream's events, then,
once it is terminal, those of its webhook delivery (batches/domain/webhooks.py).

A batch's stream never grows after its terminal event, so the delivery's events are
numbered on after it: one sequence of versions, paged and resumed the same way.
"""

from __future__ import annotations

from typing import Any

from batches.domain import events as ev
from batches.domain.webhooks import webhook_stream
from eventlog import EventLog, RecordedEvent


def _item(batch_id: str, event: RecordedEvent, version: int) -> dict[str, Any]:
    return {
        "id": f"{batch_id}:{version}",
        "object": "batch.event",
        "version": version,
        "type": event.type,
        "recorded_at": event.recorded_at,
        "position": event.position,
        "data": event.data,
    }


def timeline_page(
    log: EventLog, batch_id: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` timeline items after version ``after``, and whether more follow."""
    stream = ev.batch_stream(batch_id)
    events = log.read(stream, from_version=after + 1, limit=limit + 1)
    items = [_item(batch_id, e, e.version) for e in events[:limit]]
    if len(events) > limit:
        return items, True
    if events:
        last: RecordedEvent | None = events[-1]
    else:
        top = log.version(stream)
        last = next(iter(log.read(stream, from_version=top, limit=1)), None) if top else None
    if last is None or last.type not in ev.TERMINAL_EVENT_TYPES:
        return items, False
    base, room = last.version, limit - len(items)
    deliveries = log.read(
        webhook_stream(batch_id), from_version=max(after - base, 0) + 1, limit=room + 1
    )
    items += [_item(batch_id, e, base + e.version) for e in deliveries[:room]]
    return items, len(deliveries) > room
