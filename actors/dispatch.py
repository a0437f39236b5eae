"""Routes a chunk of requests to whoever serves its model: a local model or an upstream.

A batch does not know which one serves it: both take the same chunk call and give
back the same outcomes (docs/architecture.md, "Executors").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from actors import names
from batches.domain.executor import Outcome, WorkItem
from batches.settings import Settings

log = logging.getLogger("batchlog.dispatch")

LOCAL = "local"


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local: Any = None
        self._upstreams: list[Any] | None = None
        self._turn = 0  # round robin over the executors, per chunk
        self._owners: dict[str, str] = {}
        self._cached: tuple[float, dict[str, str]] = (0.0, {})

    def _local_pool(self) -> Any:
        if self._local is None and self.settings.use_local_models:
            self._local = local_pool(self.settings)
        return self._local

    def _upstream_actors(self) -> list[Any]:
        """The upstream executors (empty without upstreams), found by name or created."""
        if self._upstreams is None:
            self._upstreams = []
            if self.settings.upstream or self.settings.model_map:
                n = executor_count(self.settings)
                self._upstreams = [self._executor(i, n) for i in range(n)]
        return self._upstreams

    def _upstream_actor(self) -> Any:
        actors = self._upstream_actors()
        return actors[0] if actors else None

    def _next_upstream(self) -> Any:
        actors = self._upstream_actors()
        if not actors:
            return None
        self._turn = (self._turn + 1) % len(actors)
        return actors[self._turn]

    def _executor(self, index: int, count: int) -> Any:
        from actors.upstream import UpstreamExecutorActor

        upstreams = []
        if self.settings.upstream:
            upstreams.append(self._upstream_config("default", self.settings.upstream))
        for url in sorted(set(self.settings.model_map.values())):
            upstreams.append(self._upstream_config(url, url))
        for u in upstreams:  # each executor its share: the limit stays global
            u["max_concurrency"] = share(u["max_concurrency"], index, count)
        return UpstreamExecutorActor.options(  # type: ignore[attr-defined]
            name=names.UPSTREAM if index == 0 else f"{names.UPSTREAM}-{index}",
            namespace=self.settings.namespace,
            get_if_exists=True,
            # Whoever creates it first must not take it down when it dies (a
            # coordinator crash would fail every request in flight).
            lifetime="detached",
            num_cpus=0,
            resources=self.settings.executor_resources or None,
            max_concurrency=1000,
        ).remote(
            upstreams,
            dict(self.settings.model_map),
            {
                "max_attempts": self.settings.retry_max_attempts,
                "base_delay": self.settings.retry_base_delay_s,
                "max_delay": self.settings.retry_max_delay_s,
            },
            # Where the key is (the file, or PostgreSQL when there is a database).
            settings=self.settings.actor_args(),
        )

    def _upstream_config(self, name: str, url: str) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": url.rstrip("/"),
            # The key is not an actor argument: the executor reads it (read_secret).
            "api_key": None,
            "timeout_s": self.settings.upstream_timeout_s,
            "max_concurrency": self.settings.upstream_max_concurrency,
            "max_response_bytes": self.settings.upstream_max_response_bytes,
        }

    async def models(self) -> dict[str, str]:
        """model id -> who serves it ("local" or an upstream's name)."""
        owners: dict[str, str] = {}
        upstream = self._upstream_actor()
        if upstream is not None:
            owners.update(await upstream.model_routes.remote())
        local = self._local_pool()
        if local is not None:
            owners.update(dict.fromkeys(local.models(), LOCAL))
        self._owners = owners
        return owners

    async def cached_models(self, max_age_s: float) -> dict[str, str]:
        """`models()`, asked again only when the last answer is older than `max_age_s`;
        an upstream that failed to answer this once keeps its last known models."""
        fetched_at, models = self._cached
        if time.monotonic() - fetched_at >= max_age_s or not fetched_at:
            fresh = await self.models()
            models = {**models, **fresh} if models else fresh
            self._cached = (time.monotonic(), models)
        return dict(models)

    def _local_replicas(self, model: str) -> int:
        from actors.local import CHAT_MODEL_ID

        if model == CHAT_MODEL_ID:
            return self.settings.chat_replicas
        return self.settings.embed_replicas

    def use_routes(self, owners: dict[str, str]) -> None:
        """Route by a model list fetched elsewhere (the coordinator's cached one)."""
        self._owners = dict(owners)

    async def run_chunk(
        self, endpoint: str, model: str, items: list[WorkItem], batch_id: str
    ) -> list[Outcome]:
        """One outcome per item, in the items' order."""
        got = [o async for group in self.stream_chunk(endpoint, model, items, batch_id)
               for o in group]  # fmt: skip
        where = {item["line"]: i for i, item in enumerate(items)}
        return sorted(got, key=lambda o: where.get(o["line"], 0))

    async def stream_chunk(
        self, endpoint: str, model: str, items: list[WorkItem], batch_id: str
    ) -> AsyncIterator[list[Outcome]]:
        """One outcome per item, in groups as they come back (not in the items' order)."""
        if not self._owners:
            await self.models()
        if self._owners.get(model) == LOCAL:
            # Split the chunk so every replica of the model works on it at once (each
            # decodes its piece together with whatever else it has in flight).
            pool = self._local_pool()
            pieces = split(items, self._local_replicas(model))
            for piece in asyncio.as_completed(
                [pool.run_chunk(endpoint, model, piece, batch_id) for piece in pieces]
            ):
                yield await piece
            return
        upstream = self._next_upstream()
        if upstream is None:
            raise RuntimeError(f"no executor serves model {model!r}")
        # A Ray streaming generator: each group is an object as soon as it is yielded.
        refs = upstream.stream_chunk.options(num_returns="streaming").remote(
            endpoint, model, items, batch_id, self.settings.outcome_group_ms / 2000.0
        )
        async for ref in refs:
            group: list[Outcome] = await ref
            yield group


def executor_count(settings: Settings) -> int:
    """How many upstream executors: the setting, or one per two cores (1..4); never more
    than the smallest concurrency limit, so every executor has at least one slot."""
    n = settings.upstream_executors or max(1, min(4, (os.cpu_count() or 1) // 2))
    return max(1, min(n, settings.upstream_max_concurrency))


def share(limit: int, index: int, count: int) -> int:
    """Executor ``index``'s part of ``limit`` split over ``count``: the parts sum to it."""
    return max(1, limit // count + (1 if index < limit % count else 0))


def local_pool(settings: Settings) -> Any:
    """The deployment's embedded models (its supervisor is found by name, or created)."""
    from actors.local import CHAT_MODEL_ID, LocalModelPool

    return LocalModelPool(
        namespace=settings.namespace,
        chat_replicas=settings.chat_replicas,
        chat_threads=settings.chat_threads,
        chat_parallel=settings.chat_parallel,
        chat_kv_tokens=settings.chat_kv_tokens,
        embed_replicas=settings.embed_replicas,
        embed_threads=settings.embed_threads,
        max_restarts=settings.model_max_restarts,
        model_paths={CHAT_MODEL_ID: settings.chat_model_path} if settings.chat_model_path else None,
    )


def split(items: list[WorkItem], parts: int) -> list[list[WorkItem]]:
    """At most `parts` contiguous, non-empty pieces of nearly equal size."""
    if not items:
        return []
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    pieces, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        pieces.append(items[start:end])
        start = end
    return pieces
