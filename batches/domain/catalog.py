"""The `files` and `coordinator` streams: their decisions and typed events, pure.

The batch stream has its decider in `decider.py`; these two streams are simpler (a file
is uploaded, then maybe deleted; an idempotency key is claimed once per retention), so
each decision is one function from what the read model knows to the events to append.
The coordinator is the only writer of both streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

from batches.domain import events as ev
from batches.domain import refusals
from batches.domain.decider import CreateBatch
from batches.domain.idempotency import IdempotencyIndex, idempotency_digest

FileRecord = Mapping[str, Any]  # a FileUploaded event's data, as the read model holds it


def upload_file(existing: FileRecord | None, data: ev.FileUploadedData) -> list[ev.Event]:
    """Record a file whose bytes are durable; a known file id is recorded once."""
    if existing is not None:
        return []
    return [(ev.FILE_UPLOADED, dict(cast(dict[str, Any], data)))]


def delete_file(existing: FileRecord | None, file_id: str, at: int) -> list[ev.Event]:
    if existing is None:
        raise refusals.file_not_found(file_id)
    return [(ev.FILE_DELETED, {"file_id": file_id, "at": at})]


def expire_file(record: FileRecord, at: int) -> list[ev.Event]:
    """A file whose `expires_at` passed leaves the API (its bytes are deleted after)."""
    return [
        (
            ev.FILE_EXPIRED,
            {"file_id": record["file_id"], "at": at, "expires_at": record["expires_at"]},
        )
    ]


def create_digest(create: CreateBatch) -> str:
    """The parameters a key binds (docs/idempotency.md)."""
    return idempotency_digest(
        create.input_file_id,
        create.endpoint,
        create.completion_window,
        create.metadata,
        create.output_expires_after,
    )


def existing_batch(
    index: IdempotencyIndex, create: CreateBatch, now: int, retention_s: int
) -> str | None:
    """The batch this key already made with these parameters; None if the key is free.

    Raises IdempotencyConflict (409) when the key was used with other parameters.
    """
    if create.idempotency_key is None:
        return None
    claim = index.lookup(create.tenant, create.idempotency_key, now, retention_s)
    if claim is None:
        return None
    if claim.digest != create_digest(create):
        raise refusals.idempotency_key_reused()
    return claim.batch_id


def claim_key(create: CreateBatch) -> list[ev.Event]:
    """Claim the create's key for its batch, before the batch exists: after a crash
    between the two appends, the claim (which carries the whole command) finishes it."""
    if create.idempotency_key is None:
        return []
    data: ev.IdempotencyKeyClaimedData = {
        "tenant": create.tenant,
        "key": create.idempotency_key,
        "digest": create_digest(create),
        "batch_id": create.batch_id,
        "params": dataclasses.asdict(create),
        "at": create.at,
    }
    return [(ev.IDEMPOTENCY_KEY_CLAIMED, dict(cast(dict[str, Any], data)))]


def create_from_claim(data: Mapping[str, Any]) -> CreateBatch:
    """The create command a claim carries (its `params`)."""
    return CreateBatch(**data["params"])
