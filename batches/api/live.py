"""Extensions beyond OpenAI for following a batch while it runs (docs/live.md):

- ``GET /v1/batches/{id}/events?stream=true``: the batch's events as Server-Sent Events,
  ``id:`` = the event's version in the batch's stream, resumable with ``Last-Event-ID``,
  a heartbeat comment while idle, closed after the terminal event.
- ``GET /v1/batches/{id}/results``: the output (or error) lines recorded so far, as
  JSONL, identical in content and order to the final file for the lines done.

Both read the log through the BatchService (the read side); neither wakes a batch actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from batches.api.auth import tenant_of
from batches.domain import events as ev
from batches.domain import refusals
from batches.domain.decider import is_terminal

router = APIRouter(prefix="/v1/batches", tags=["batches (extensions)"])
Tenant = Annotated[str, Depends(tenant_of)]
EVENTS_PAGE = 500
RESULTS_PAGE = 1_000


def resume_point(after: int | None, last_event_id: str | None) -> int:
    """The version to stream after: ``Last-Event-ID`` (a reconnect) wins over ``after``."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise refusals.invalid_last_event_id()
    return value


async def event_stream(
    request: Request, tenant: str, batch_id: str, after: int
) -> EventSourceResponse:
    """The SSE response; errors (404, 401) are raised before the stream starts."""
    service = request.app.state.service
    settings = request.app.state.settings
    first = await service.batch_events(tenant, batch_id, after, EVENTS_PAGE)
    # A batch terminal now will get no more events: close once they are sent.
    ended = is_terminal((await service.get_batch(tenant, batch_id))["status"])

    async def events() -> AsyncIterator[ServerSentEvent]:
        page, cursor = first, after
        while True:
            for item in page["data"]:
                cursor = item["version"]
                yield ServerSentEvent(data=orjson.dumps(item).decode(), id=str(cursor))
                if item["type"] in ev.TERMINAL_EVENT_TYPES:
                    return
            if not page["has_more"]:
                if ended:
                    return
                await asyncio.sleep(settings.sse_poll_s)
            page = await service.batch_events(tenant, batch_id, cursor, EVENTS_PAGE)

    return EventSourceResponse(
        events(),
        ping=settings.sse_heartbeat_s,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/{batch_id}/results",
    summary="Output or error lines recorded so far, as JSONL (a batchlog extension)",
    response_class=StreamingResponse,
)
async def batch_results(
    request: Request,
    tenant: Tenant,
    batch_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1)] = None,
    kind: Literal["output", "error"] = "output",
) -> StreamingResponse:
    """Lines ``after+1 ..`` of the output file (or error file) as it will be, for the
    requests done so far. ``after`` counts lines, as in the final file. The header
    ``x-batchlog-batch-status`` is the batch's status when the answer began: once it is
    terminal the lines served are all there will be (the error file of a cancelled or
    expired batch also lists its unfinished requests, which only the final file has)."""
    service = request.app.state.service
    first = await service.batch_results(
        tenant, batch_id, kind, 1, after, min(limit or RESULTS_PAGE, RESULTS_PAGE)
    )

    async def lines() -> AsyncIterator[bytes]:
        step: dict[str, Any] = first
        start, skip, sent = 1, after, 0
        ordinal = 0  # lines of this kind before `start`
        while True:
            skip -= step["skipped"]
            for line in step["lines"]:
                yield line
            sent += len(step["lines"])
            ordinal += step["skipped"] + len(step["lines"])
            if (limit is not None and sent >= limit) or step["next_version"] == start:
                return  # enough, or nothing more was read: the end of the log for now
            start = step["next_version"]
            want = RESULTS_PAGE if limit is None else min(limit - sent, RESULTS_PAGE)
            step = await service.batch_results(tenant, batch_id, kind, start, skip, want, ordinal)

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"x-batchlog-batch-status": first["status"]},
    )
