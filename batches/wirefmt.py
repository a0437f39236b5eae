"""Read-model records -> OpenAI wire JSON (plain dicts, safe to send across Ray)."""

from __future__ import annotations

from typing import Any

from batches.domain import decider
from batches.domain.wire import FileObject


def batch_to_wire(state: decider.BatchState) -> dict[str, Any]:
    return decider.to_wire(state).model_dump(mode="json")


def file_to_wire(record: dict[str, Any]) -> dict[str, Any]:
    return FileObject(
        id=record["file_id"],
        bytes=record["bytes"],
        created_at=record["created_at"],
        filename=record["filename"],
        purpose=record["purpose"],
        expires_at=record.get("expires_at"),
    ).model_dump(mode="json")
