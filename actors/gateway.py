"""`BatchService` over the coordinator actor: the façade's way into the Ray runtime.

Each use case is one call on the coordinator's handle; an error it sent back as data
is raised again as a `DomainError` (`actors.results`), so the façade answers exactly as
it would over an in-process core (`batches.core.inprocess`).
"""

from __future__ import annotations

from typing import Any

from actors.results import raise_if_error
from batches.core.ports import Page


class RayBatchService:
    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator

    async def _call(self, method: str, *args: Any) -> Any:
        return raise_if_error(await getattr(self.coordinator, method).remote(*args))

    async def model_owners(self) -> dict[str, str]:
        owners: dict[str, str] = await self._call("model_owners")
        return owners

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
        return dict(
            await self._call(
                "register_file", tenant, file_id, filename, purpose, size, sha256, lines, expires_at
            )
        )

    async def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return dict(await self._call("get_file", tenant, file_id))

    async def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page:
        return dict(await self._call("list_files", tenant, purpose, after, limit, order))

    async def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return dict(await self._call("delete_file", tenant, file_id))

    async def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        return dict(await self._call("create_batch", tenant, params, idempotency_key, batch_id))

    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return dict(await self._call("get_batch", tenant, batch_id))

    async def list_batches(self, tenant: str, after: str | None, limit: int) -> Page:
        return dict(await self._call("list_batches", tenant, after, limit))

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return dict(await self._call("cancel_batch", tenant, batch_id))

    async def batch_events(self, tenant: str, batch_id: str, after: int | None, limit: int) -> Page:
        return dict(await self._call("batch_events", tenant, batch_id, after, limit))

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
        args = (tenant, batch_id, kind, from_version, skip, limit, ordinal)
        return dict(await self._call("batch_results", *args))

    async def health(self) -> dict[str, Any]:
        return dict(await self._call("health"))
