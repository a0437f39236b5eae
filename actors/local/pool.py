"""The caller's view of the embedded models: which replica gets a chunk.

A ``LocalModelPool`` lives in the caller (a batch actor, the coordinator, a driver). It
finds the deployment's ``ModelSupervisor`` by name (creating it on first use), asks it
for the loaded replicas of a model, and sends each chunk to the replica with the least
outstanding work. A replica that dies under a chunk is reported to the supervisor, which
restarts it within its bound; the chunk is sent again (inference has no side effects)
up to ``chunk_attempts`` times. A model the supervisor has marked failed answers every
item at once with ``error.code == "model_failed"`` and the reason.

Defaults, measured on 2 shared cores: the chat model gets one replica per core with
one thread each (two threads in one llama.cpp replica collapsed to 1-10 tokens/s when
the other core was busy), each decoding up to ``parallel`` sequences together; the
embedding model one replica with one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from actors.local.outcomes import Outcome, WorkItem, failed_outcomes, rejected_outcomes
from actors.local.replica import DEFAULT_KV_TOKENS, DEFAULT_PARALLEL
from actors.local.requests import (
    CHAT_MODEL_ID,
    DEFAULT_N_CTX,
    EMBED_MODEL_ID,
    LOCAL_MODELS,
    MODEL_ENDPOINTS,
    endpoint_error,
)
from actors.local.supervisor import FAILED, ModelSupervisorActor
from batches.domain import line_errors, request_errors


@dataclass
class _Replica:
    index: int
    generation: int
    handle: Any
    outstanding: int = 0  # items sent and not answered yet (by this pool)
    dispatched: int = 0  # chunks sent so far (by this pool)


class LocalModelPool:
    def __init__(
        self,
        namespace: str | None = None,
        *,
        chat_replicas: int | None = None,
        chat_threads: int = 1,
        chat_parallel: int = DEFAULT_PARALLEL,
        chat_kv_tokens: int = DEFAULT_KV_TOKENS,
        embed_replicas: int = 1,
        embed_threads: int = 1,
        models: Sequence[str] = LOCAL_MODELS,
        model_paths: Mapping[str, str | os.PathLike[str]] | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        name_prefix: str = "batchlog-model",
        num_cpus: float = 0.0,
        detached: bool = True,
        max_restarts: int = 2,
        restart_backoff_s: float = 1.0,
        chunk_attempts: int = 3,
        replica_cls: Any = None,
    ) -> None:
        unknown = [m for m in models if m not in MODEL_ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown local models {unknown}; known: {list(LOCAL_MODELS)}")
        if chat_replicas is None:
            chat_replicas = max(1, os.cpu_count() or 1)
        paths = dict(model_paths or {})
        sizes = {
            CHAT_MODEL_ID: (chat_replicas, chat_threads),
            EMBED_MODEL_ID: (embed_replicas, embed_threads),
        }
        config: dict[str, dict[str, Any]] = {}
        for m in models:
            n, threads = sizes[m]
            if n < 1 or threads < 1:
                raise ValueError(f"{m}: replicas and threads must be at least 1")
            kwargs: dict[str, Any] = {"n_ctx": n_ctx}
            if m == CHAT_MODEL_ID:
                kwargs.update(parallel=chat_parallel, kv_tokens=chat_kv_tokens)
            if m in paths:
                kwargs["model_path"] = str(paths[m])
            config[m] = {"replicas": n, "threads": threads, "kwargs": kwargs}
        self.namespace = namespace
        self.name_prefix = name_prefix
        self.chunk_attempts = max(1, chunk_attempts)
        self._config = config
        options: dict[str, Any] = {
            "name": f"{name_prefix}-supervisor",
            "get_if_exists": True,
            "num_cpus": 0,
            # Crashed, it comes back and creates the replicas again (they die with it).
            "max_restarts": -1,
        }
        if namespace is not None:
            options["namespace"] = namespace
        if detached:
            options["lifetime"] = "detached"
        self.supervisor: Any = ModelSupervisorActor.options(**options).remote(  # type: ignore[attr-defined]
            config,
            name_prefix=name_prefix,
            namespace=namespace,
            num_cpus=num_cpus,
            max_restarts=max_restarts,
            backoff_s=restart_backoff_s,
            replica_cls=replica_cls,
        )
        self._live: dict[str, list[_Replica]] = {}
        self._failed: dict[str, str] = {}

    # -- discovery

    def models(self) -> list[str]:
        """The model ids this pool serves."""
        return list(self._config)

    async def list_models(self) -> list[str]:
        """The executor interface's spelling of ``models()``."""
        return self.models()

    def replica_names(self, model: str) -> list[str]:
        """The replicas' actor names as first started (a restarted one adds ``-rN``)."""
        n = self._config[model]["replicas"]
        return [f"{self.name_prefix}-{model}-{i}" for i in range(n)]

    async def handles(self, model: str) -> list[Any]:
        """The actor handles of the model's loaded replicas, now."""
        info = await self.supervisor.replicas.remote(model)
        return [h for _, _, h in info["replicas"]]

    # -- health

    async def status(self) -> dict[str, dict[str, Any]]:
        """Per model: status (starting, ready, failed), reason, restarts, replicas."""
        result: dict[str, dict[str, Any]] = await self.supervisor.status.remote()
        return result

    async def wait_ready(self, timeout_s: float = 300.0) -> dict[str, dict[str, Any]]:
        """``status()`` once every model has loaded or failed."""
        result: dict[str, dict[str, Any]] = await self.supervisor.wait.remote(timeout_s)
        return result

    async def warm_up(self, models: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Create (or find) every replica and wait until each has loaded its model."""
        await self.wait_ready()
        return await self.health(models)

    async def health(self, models: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """``LocalModelServer.health()`` of every loaded replica, by model."""
        out: dict[str, list[dict[str, Any]]] = {}
        for m in models or self.models():
            info = await self.supervisor.replicas.remote(m)
            if info["status"] == FAILED:
                out[m] = [{"model": m, "loaded": False, "error": info["reason"]}]
                continue
            res = await asyncio.gather(
                *(h.health.remote() for _, _, h in info["replicas"]), return_exceptions=True
            )
            out[m] = [
                h
                if isinstance(h, dict)
                else {"model": m, "loaded": False, "error": f"{type(h).__name__}: {h}"}
                for h in res
            ]
        return out

    def shutdown(self) -> None:
        """End this deployment's supervisor and replicas (every pool sharing them too)."""
        with contextlib.suppress(Exception):
            ray.get(self.supervisor.shutdown.remote(), timeout=10)
        with contextlib.suppress(Exception):
            ray.kill(self.supervisor)
        self._live = {}

    # -- work

    def _take(self, model: str, info: dict[str, Any]) -> None:
        if info["status"] == FAILED:
            self._failed[model] = str(info["reason"])
        old = {r.index: r for r in self._live.get(model, [])}
        live = []
        for index, generation, handle in info["replicas"]:
            r = old.get(index)
            if r is None or r.generation != generation:
                r = _Replica(index, generation, handle)
            live.append(r)
        self._live[model] = live

    async def _replicas(self, model: str) -> list[_Replica]:
        if not self._live.get(model) and model not in self._failed:
            self._take(model, await self.supervisor.replicas.remote(model))
        return self._live.get(model, [])

    async def run_chunk(
        self, endpoint: str, model: str, items: list[WorkItem], batch_id: str | None = None
    ) -> list[Outcome]:
        """Run one chunk on the least busy replica of ``model``; one outcome per item.

        Never raises for a model problem: a failed model, a replica that is gone, an
        unknown model or an endpoint the model does not serve all come back as
        outcomes. Cancelling the awaiting task cancels the chunk at the replica, which
        takes its sequences out of the batch being decoded.
        """
        if not items:
            return []
        if model not in self._config:
            return rejected_outcomes(items, request_errors.model_not_found(model))
        if endpoint not in MODEL_ENDPOINTS[model]:
            return rejected_outcomes(items, endpoint_error(model, endpoint))
        last_death: str | None = None
        for attempt in range(1, self.chunk_attempts + 1):
            replicas = await self._replicas(model)
            if model in self._failed:
                return failed_outcomes(items, line_errors.model_failed(model, self._failed[model]))
            if not replicas:
                last_death = None
                self._live.pop(model, None)
                continue
            rep = min(replicas, key=lambda r: (r.outstanding, r.dispatched))
            rep.outstanding += len(items)
            rep.dispatched += 1
            ref = rep.handle.run_chunk.remote(endpoint, items, batch_id)
            try:
                outs = list(await ref)
            except asyncio.CancelledError:
                ray.cancel(ref)  # the replica drops the chunk's sequences
                raise
            except ray.exceptions.RayActorError as e:
                last_death = f"replica {rep.index}: {type(e).__name__}: {e}"
                info = await self.supervisor.replica_died.remote(
                    model, rep.index, rep.generation, str(e)
                )
                self._take(model, info)
                continue
            except ray.exceptions.RayError as e:
                return failed_outcomes(
                    items, line_errors.executor_error(f"{type(e).__name__}: {e}")
                )
            finally:
                rep.outstanding -= len(items)
            if attempt > 1:
                for o in outs:
                    o["attempts"] = attempt
            return outs
        if model in self._failed:
            return failed_outcomes(items, line_errors.model_failed(model, self._failed[model]))
        outs = failed_outcomes(
            items, line_errors.replica_failed(model, self.chunk_attempts, last_death)
        )
        for o in outs:
            o["attempts"] = self.chunk_attempts
        return outs
