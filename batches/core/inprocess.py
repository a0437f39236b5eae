"""`BatchService` over a core in this process: no Ray, no executors.

Batches are created, listed, cancelled and paged exactly as in the service, but nothing
runs them (no batch is ever admitted), so they stay queued. For in-process façade tests
(httpx.ASGITransport) and for tools that only need the catalog.
"""

from __future__ import annotations

from typing import Any

from batches.core.coordination import Coordination
from batches.core.ports import Page


class InProcessBatchService:
    def __init__(self, core: Coordination, models: dict[str, str] | None = None) -> None:
        self.core = core
        self.models = dict(models or {})

    async def model_owners(self) -> dict[str, str]:
        return dict(self.models)

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
        return self.core.register_file(
            tenant, file_id, filename, purpose, size, sha256, lines, expires_at
        )

    async def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return self.core.get_file(tenant, file_id)

    async def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page:
        return self.core.list_files(tenant, purpose, after, limit, order)

    async def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return self.core.delete_file(tenant, file_id)

    async def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        return self.core.create_batch(tenant, params, idempotency_key, batch_id=batch_id)

    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.core.get_batch(tenant, batch_id)

    async def list_batches(self, tenant: str, after: str | None, limit: int) -> Page:
        return self.core.list_batches(tenant, after, limit)

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.core.cancel_queued(tenant, batch_id)

    async def batch_events(self, tenant: str, batch_id: str, after: int | None, limit: int) -> Page:
        return self.core.batch_events(tenant, batch_id, after, limit)

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
        return self.core.batch_results(
            tenant,
            batch_id,
            kind,  # type: ignore[arg-type]
            from_version,
            skip,
            limit,
            ordinal,
        )

    async def health(self) -> dict[str, Any]:
        return self.core.health(())
