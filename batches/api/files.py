"""/v1/files: upload (streamed to disk, bounded memory), list, get, delete, content."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from batches.api.auth import tenant_of
from batches.api.uploads import receive_upload
from batches.domain import refusals
from batches.domain.errors import DomainError
from batches.domain.ids import new_file_id
from batches.filestore import FileStore, FileTooLarge

router = APIRouter(prefix="/v1/files", tags=["files"])
Tenant = Annotated[str, Depends(tenant_of)]
PURPOSES = {"batch", "batch_output", "assistants", "fine-tune", "vision", "user_data", "evals"}
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": sorted(PURPOSES)},
                        "expires_after[anchor]": {"type": "string"},
                        "expires_after[seconds]": {"type": "integer"},
                    },
                }
            }
        },
    }
}


@router.post("", openapi_extra=UPLOAD_SCHEMA)
async def upload_file(request: Request, tenant: Tenant) -> Any:
    """The gate has authenticated the caller and checked the declared size; the file
    part streams into its durable file with the limit enforced as bytes arrive."""
    settings = request.app.state.settings
    store = request.app.state.files
    file_id = new_file_id()
    try:
        form = await receive_upload(
            request, lambda: store.writer(file_id, max_bytes=settings.max_file_bytes)
        )
    except FileTooLarge as exc:
        raise refusals.file_too_large(exc.limit) from exc
    writer = form.writer
    try:
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise refusals.missing_upload_field("purpose")
        if purpose not in PURPOSES:
            raise refusals.invalid_purpose(purpose, sorted(PURPOSES))
        if purpose != "batch":
            raise refusals.upload_purpose_not_batch()
        if writer is None:
            raise refusals.missing_upload_field("file")
        if writer.bytes == 0:
            raise refusals.empty_upload()
        expires_at = _expires_at(
            form.fields.get("expires_after[anchor]"), form.fields.get("expires_after[seconds]")
        )
    except DomainError:
        store.delete(file_id)
        raise
    try:
        return await request.app.state.service.register_file(
            tenant,
            file_id,
            form.filename or "upload.jsonl",
            purpose,
            writer.bytes,
            writer.sha256,
            writer.line_count,
            expires_at,
        )
    except DomainError:
        store.delete(file_id)  # not recorded (e.g. the log refused the write): no orphan
        raise


def _expires_at(anchor: Any, seconds: Any) -> int | None:
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise refusals.invalid_expires_after_anchor(anchor)
    try:
        value = int(str(seconds))
    except ValueError as exc:
        raise refusals.invalid_expires_after_seconds(seconds) from exc
    if not 3600 <= value <= 2_592_000:
        raise refusals.invalid_expires_after_seconds(seconds)
    return int(time.time()) + value


@router.get("")
async def list_files(
    request: Request,
    tenant: Tenant,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Any:
    return await request.app.state.service.list_files(tenant, purpose, after, limit, order)


@router.get("/{file_id}")
async def get_file(request: Request, tenant: Tenant, file_id: str) -> Any:
    return await request.app.state.service.get_file(tenant, file_id)


@router.delete("/{file_id}")
async def delete_file(request: Request, tenant: Tenant, file_id: str) -> Any:
    return await request.app.state.service.delete_file(tenant, file_id)


@router.get("/{file_id}/content")
async def file_content(request: Request, tenant: Tenant, file_id: str) -> StreamingResponse:
    found = await request.app.state.service.get_file(tenant, file_id)  # 404 unless yours
    files: FileStore = request.app.state.files
    if not files.exists(file_id):
        raise refusals.file_content_gone(file_id)
    return StreamingResponse(
        files.chunks(file_id),
        media_type="application/octet-stream",
        headers={"content-length": str(found["bytes"])},
    )
