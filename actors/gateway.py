"""`BatchService` over the coordinator actor: the façade's way into the Ray runtime.

Each use case is one call on the coordinator's handle; an error it sent back as data
is raised again as a `DomainError` (`actors.results`), so the façade answers exactly as
it would over an in-process core (`batches.core.inprocess`).

GET /v1/batches/{id} of a batch that is changing is answered from copies this façade
keeps (`batches.core.readcache`), fed by one long-polling change request at a time to
the coordinator (docs/read-cache.md): a client polling a running batch costs no Ray call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from actors.results import raise_if_error
from batches.core.ports import Page
from batches.core.readcache import BatchCopies

log = logging.getLogger("batchlog.gateway")

CHANGES_WAIT_S = 10.0  # a change request's long poll: answered at once when anything changed
RETRY_S = 1.0  # after a change request failed (the coordinator away or restarting)
IDLE_S = 30.0  # no GET of a batch for this long: stop following (it costs Ray calls)


class RayBatchService:
    def __init__(self, coordinator: Any, copies: bool = True) -> None:
        """`copies`: answer GETs of changing batches from this façade's copies."""
        self.coordinator = coordinator
        self.copies = BatchCopies() if copies else None
        self._follower: asyncio.Task[None] | None = None
        self._last_get = 0.0

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
        result = dict(await self._call("create_batch", tenant, params, idempotency_key, batch_id))
        self._written(result["batch"]["id"])
        return result

    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        if self.copies is not None:
            self._last_get = time.monotonic()
            self._follow()
            copy = self.copies.get(tenant, batch_id)
            if copy is not None:
                return copy
        return dict(await self._call("get_batch", tenant, batch_id))

    def _follow(self) -> None:
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(self._keep_copies())

    async def _keep_copies(self) -> None:
        """One change request at a time, while GETs of batches come in."""
        copies = self.copies
        assert copies is not None
        failing = False
        while time.monotonic() - self._last_get < IDLE_S:
            token, after = copies.cursor()
            round_ = copies.next_round()
            try:
                answer = raise_if_error(
                    await self.coordinator.batch_changes.remote(token, after, CHANGES_WAIT_S)
                )
            except Exception as exc:  # the coordinator away: GETs read through meanwhile
                copies.lost()
                if not failing:
                    log.warning("batch copies stopped, GETs go to the coordinator: %r", exc)
                failing = True
                await asyncio.sleep(RETRY_S)
                continue
            if failing:
                log.warning("batch copies followed again")
            failing = False
            copies.apply(round_, answer)
        copies.lost()  # nobody polls: the next GET reads through and follows again

    def _written(self, batch_id: str) -> None:
        if self.copies is not None:
            self.copies.written(batch_id)

    async def list_batches(self, tenant: str, after: str | None, limit: int) -> Page:
        return dict(await self._call("list_batches", tenant, after, limit))

    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        try:
            return dict(await self._call("cancel_batch", tenant, batch_id))
        finally:  # (a refused cancel wrote nothing; reading through once costs little)
            self._written(batch_id)

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
