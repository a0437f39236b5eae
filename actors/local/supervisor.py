"""The one owner of the embedded models' replica actors.

``ModelSupervisor`` (a small named actor, one per deployment) creates every replica,
watches it load, and is the only place that restarts one: a replica process that dies
is created again after a backoff, at most ``max_restarts`` times per model; after that
the model is *failed*, with the reason, and nothing restarts it any more. Every pool
(one per batch actor) asks the supervisor for the replicas and reports deaths to it, so
the bound holds for the whole deployment, not per caller. ``/health``, ``GET /v1/models``
and ``batchlog serve`` read ``status()``.

A replica that loads but reports a failure (its engine self-test failed, the model file
is missing) fails its model at once: restarting would only repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import ray

STARTING, READY, FAILED = "starting", "ready", "failed"


@dataclass
class _Slot:
    index: int
    name: str
    generation: int = 0
    handle: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Model:
    config: dict[str, Any]
    slots: list[_Slot]
    status: str = STARTING
    reason: str | None = None
    deaths: int = 0
    restarts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class ModelSupervisor:
    """``models``: model id -> {"replicas", "threads", "kwargs"} (``LocalModelServer``
    keyword arguments). ``replica_cls``: the actor class (tests pass one that dies)."""

    def __init__(
        self,
        models: dict[str, dict[str, Any]],
        *,
        name_prefix: str,
        namespace: str | None = None,
        num_cpus: float = 0.0,
        max_restarts: int = 2,
        backoff_s: float = 1.0,
        replica_cls: Any = None,
    ) -> None:
        from actors.local.replica import ModelReplica

        self.replica_cls = replica_cls or ModelReplica
        self.namespace = namespace
        self.num_cpus = num_cpus
        self.max_restarts = max_restarts
        self.backoff_s = backoff_s
        self.models = {
            m: _Model(
                cfg,
                [_Slot(i, f"{name_prefix}-{m}-{i}") for i in range(int(cfg["replicas"]))],
            )
            for m, cfg in models.items()
        }
        self._started = False

    # -- life cycle

    async def start(self) -> None:
        """Create every replica (once) and watch each load in the background."""
        if self._started:
            return
        self._started = True
        for model, state in self.models.items():
            for slot in state.slots:
                slot.generation = 1
                self._spawn(model, slot)

    def _spawn(self, model: str, slot: _Slot) -> None:
        cfg = self.models[model].config
        # A dead actor's name is released a moment after it dies: a restart takes its own.
        name = slot.name if slot.generation == 1 else f"{slot.name}-r{slot.generation - 1}"
        options: dict[str, Any] = {"name": name, "num_cpus": self.num_cpus, "max_restarts": 0}
        if self.namespace is not None:
            options["namespace"] = self.namespace
        slot.handle = self.replica_cls.options(**options).remote(
            model, cfg["threads"], **cfg.get("kwargs", {})
        )
        asyncio.get_running_loop().create_task(self._watch(model, slot, slot.generation))

    async def _watch(self, model: str, slot: _Slot, generation: int) -> None:
        try:
            health = await slot.handle.health.remote()
        except ray.exceptions.RayActorError as e:
            await self.replica_died(model, slot.index, generation, f"{type(e).__name__}: {e}")
            return
        state = self.models[model]
        if not health.get("loaded"):
            self._fail(model, str(health.get("error") or "the model did not load"))
            return
        slot.ready.set()
        if state.status == STARTING and all(s.ready.is_set() for s in state.slots):
            state.status = READY
            self._changed(state)

    def _changed(self, state: _Model) -> None:
        state.changed.set()
        state.changed = asyncio.Event()

    def _fail(self, model: str, reason: str) -> None:
        state = self.models[model]
        if state.status == FAILED:
            return
        state.status, state.reason = FAILED, reason
        for slot in state.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.handle)
            slot.ready.set()  # wake waiters: they see FAILED
        self._changed(state)

    # -- what pools call

    async def replicas(self, model: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """{"status", "reason", "replicas": [(index, generation, handle)]}: the replicas
        that have loaded, once at least one has (or the model failed, or the wait ran out)."""
        await self.start()
        state = self.models.get(model)
        if state is None:
            return {"status": FAILED, "reason": f"{model} is not an embedded model", "replicas": []}
        waits = [asyncio.ensure_future(s.ready.wait()) for s in state.slots]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        ready = [s for s in state.slots if s.ready.is_set()] if state.status != FAILED else []
        return {
            "status": state.status,
            "reason": state.reason,
            "replicas": [(s.index, s.generation, s.handle) for s in ready],
        }

    async def replica_died(
        self, model: str, index: int, generation: int, error: str
    ) -> dict[str, Any]:
        """A caller saw replica ``index`` (of ``generation``) die: restart it, within the
        bound, and answer with the replicas once it is back (or the model has failed)."""
        state = self.models[model]
        slot = state.slots[index]
        if slot.generation == generation and state.status != FAILED:
            state.deaths += 1
            slot.generation += 1  # later reports of the same death are not counted again
            slot.ready = asyncio.Event()  # callers wait for the new one
            if state.deaths > self.max_restarts:
                lines = error.strip().splitlines() or [""]
                last = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
                self._fail(
                    model,
                    f"its replica process died {state.deaths} times "
                    f"(last: {last[:300]}); not restarted again",
                )
            else:
                state.restarts += 1
                await asyncio.sleep(self.backoff_s * 2 ** (state.restarts - 1))
                if state.status != FAILED:
                    self._spawn(model, slot)
        await slot.ready.wait()
        return await self.replicas(model)

    # -- what operators read

    async def status(self) -> dict[str, dict[str, Any]]:
        await self.start()
        return {
            m: {
                "status": s.status,
                "reason": s.reason,
                "restarts": s.restarts,
                "deaths": s.deaths,
                "replicas": len(s.slots),
                "ready_replicas": sum(1 for x in s.slots if x.ready.is_set())
                if s.status != FAILED
                else 0,
            }
            for m, s in self.models.items()
        }

    async def wait(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        """``status()`` once no model is still starting (or ``timeout_s`` passed)."""
        await self.start()
        deadline = time.monotonic() + timeout_s
        while True:
            starting = [s for s in self.models.values() if s.status == STARTING]
            left = deadline - time.monotonic()
            if not starting or left <= 0:
                return await self.status()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(starting[0].changed.wait(), min(left, 1.0))

    def shutdown(self) -> None:
        for state in self.models.values():
            for slot in state.slots:
                with contextlib.suppress(Exception):
                    ray.kill(slot.handle)


ModelSupervisorActor = ray.remote(ModelSupervisor)
