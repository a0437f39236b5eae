"/v1/batches: create (idempotent), list, get, cancel, and the timeline extension."

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import ValidationError

from batches.api import live
from batches.api.auth import tenant_of
from batches.api.responses import OrjsonResponse
from batches.domain import refusals
from batches.domain.errors import invalid_request_from
from batches.domain.idempotency import resolve_idempotency_key
from batches.domain.ids import new_batch_id
from batches.domain.wire import CREATE_CHOICES, CreateBatchRequest

router = APIRouter(prefix="/v1/batches", tags=["batches"])
Tenant = Annotated[str, Depends(tenant_of)]


async def _json_body(request: Request) -> Any:
    limit = request.app.state.settings.max_json_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise refusals.request_too_large(limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise refusals.unparseable_json_body() from exc


@router.post("")
async def create_batch(request: Request, tenant: Tenant) -> Any:
    raw = await _json_body(request)
    if not isinstance(raw, dict):
        raise refusals.body_not_an_object()
    try:
        body = CreateBatchRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request_from(exc, CREATE_CHOICES) from exc
    key = resolve_idempotency_key(
        body.idempotency_key, body.idem_tok, request.headers.get("idempotency-key")
    )
    params = body.model_dump(mode="json", exclude={"idempotency_key", "idem_tok"})
    # The id is minted here, before the call: if the coordinator dies mid-create and Ray
    # retries the call, the retry finds this batch instead of making a second one.
    result = await request.app.state.service.create_batch(tenant, params, key, new_batch_id())
    return OrjsonResponse(result["batch"], status_code=200)


@router.get("")
async def list_batches(
    request: Request,
    tenant: Tenant,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    return await request.app.state.service.list_batches(tenant, after, limit)


@router.get("/{batch_id}")
async def get_batch(request: Request, tenant: Tenant, batch_id: str) -> Any:
    return await request.app.state.service.get_batch(tenant, batch_id)


@router.post("/{batch_id}/cancel")
async def cancel_batch(request: Request, tenant: Tenant, batch_id: str) -> Any:
    return await request.app.state.service.cancel_batch(tenant, batch_id)


@router.get("/{batch_id}/events", summary="The batch's event timeline (a batchlog extension)")
async def batch_events(
    request: Request,
    tenant: Tenant,
    batch_id: str,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Any:
    """Not part of OpenAI's API: every event of the batch in order, paged by version;
    with ``stream=true`` as Server-Sent Events (batches/api/live.py, docs/live.md)."""
    if stream:
        return await live.event_stream(
            request, tenant, batch_id, live.resume_point(after, last_event_id)
        )
    return await request.app.state.service.batch_events(tenant, batch_id, after, limit)
