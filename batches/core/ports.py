"""The ports of the application core: what it is given, and what it offers the façade.

Given (injected): an `eventlog.EventLog`, a `batches.filestore.FileStore`, a `Clock`
and an `Ids` source. Offered: `BatchService`, the use cases the REST façade calls;
`actors.gateway.RayBatchService` implements it over the coordinator actor, and
`batches.core.inprocess.InProcessBatchService` over a core in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from batches.domain import ids

Clock = Callable[[], float]
"""Unix seconds now (``time.time`` in production, a fixed value in tests)."""


class Ids(Protocol):
    def batch_id(self) -> str: ...
    def file_id(self) -> str: ...


class RandomIds:
    """Ids in OpenAI's shapes, 96 random bits each."""

    def batch_id(self) -> str:
        return ids.new_batch_id()

    def file_id(self) -> str:
        return ids.new_file_id()


Page = dict[str, Any]  # {"object": "list", "data", "first_id", "last_id", "has_more"}


class BatchService(Protocol):
    """The use cases behind /v1/files, /v1/batches and /v1/models.

    Answers are OpenAI wire objects as plain dicts; refusals raise
    `batches.domain.errors.DomainError`, which the façade shapes into OpenAI's envelope.
    """

    async def model_owners(self) -> dict[str, str]:
        """model id -> who serves it ("local" or an upstream's name)."""
        ...

    async def register_file(
        self,
        tenant: str,
        file_id: str | None,
        filename: str,
        purpose: str,
        size: int,
        sha256: str,
        lines: int | None,
        expires_at: int | None = None,
    ) -> dict[str, Any]:
        """Record a file whose bytes are already durable in the file store."""
        ...

    async def get_file(self, tenant: str, file_id: str) -> dict[str, Any]: ...

    async def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page: ...

    async def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]: ...

    async def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """{"batch": wire Batch, "created": bool}; idempotent per (tenant, key), and per
        `batch_id` when the caller mints it (a retried call finds the batch it made)."""
        ...

    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]: ...

    async def list_batches(self, tenant: str, after: str | None, limit: int) -> Page: ...

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]: ...

    async def batch_events(
        self, tenant: str, batch_id: str, after: int | None, limit: int
    ) -> Page: ...

    async def batch_results(
        self,
        tenant: str,
        batch_id: str,
        kind: str,
        from_version: int,
        skip: int,
        limit: int,
        ordinal: int = 0,
    ) -> dict[str, Any]:
        """A bounded step of the partial results: {"lines", "skipped", "next_version",
        "status"} (batches/results.py)."""
        ...

    async def health(self) -> dict[str, Any]:
        """{"status": "ok", ...}, or {"status": "faulted", "error"} while the log refuses writes."""
        ...
