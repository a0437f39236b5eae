"""Batch actors kept between batches, so a batch need not wait for a new Ray worker.

A batch still runs in an actor of its own (the only writer of its stream while it runs,
`actors/batch_actor.py`), but the actor's process outlives the batch: when `run` ends
well, the coordinator gives the same actor the next admitted batch instead of killing
it. Starting a Ray worker costs ~1-1.5 CPU-s and ~1 s on 2 cores (a new Python process
importing Ray and batchlog); a kept actor adopts a batch in milliseconds.

- At least `spares` actors are kept (BATCHLOG_BATCH_ACTOR_SPARES, default 1), so a
  batch created on an idle service starts at once; idle ones beyond that are let go.
  A burst of batches starts actors for the first `max_active_batches` and then reuses
  them.
- An actor that Ray restarted (its process died during a batch) is not reused: the
  restart budget (`max_restarts`) stays a per-batch budget, as with one actor per batch.
- The actors are named `batchlog-runner-<hex>` (detached), so a coordinator that Ray
  restarted finds them (`discover`), asks each which batch it holds, and joins those
  runs instead of starting a second actor for a running batch.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import ray

from actors import names
from actors.batch_actor import BatchActorRemote, batch_actor_options
from batches.settings import Settings

log = logging.getLogger("batchlog.runners")


class Runners:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.idle: list[Any] = []

    def _new(self) -> Any:
        name = names.runner(uuid.uuid4().hex[:16])
        options = batch_actor_options(self.settings, name=name)
        return BatchActorRemote.options(**options).remote(  # type: ignore[attr-defined]
            None, self.settings.actor_args()
        )

    def take(self) -> Any:
        """An idle actor for a batch (a new one if none is idle)."""
        return self.idle.pop() if self.idle else self._new()

    def give_back(self, handle: Any, reusable: bool) -> None:
        """After a run: keep the actor for the next batch, or let it go."""
        if reusable:
            self.idle.append(handle)
        else:
            kill(handle)

    def settle(self, busy: int) -> None:
        """After admitting (so a burst reuses actors before any goes): let idle actors
        beyond `spares` go, and start actors while fewer than `spares` exist at all
        (`busy` run batches). Not one spare per running batch: a batch that ends gives
        its actor back, and the next one takes it."""
        spares = self.settings.batch_actor_spares
        while len(self.idle) > spares:
            kill(self.idle.pop(0))
        while len(self.idle) + busy < spares:
            self.idle.append(self._new())

    async def discover(self) -> dict[str, Any]:
        """Find the actors a previous coordinator left: the idle ones join `idle`; those
        holding a batch are returned as {batch_id: handle}."""
        prefix = names.runner("")
        try:
            found = [n for n in ray.util.list_named_actors() if n.startswith(prefix)]
        except Exception:
            log.exception("cannot list named actors")
            return {}
        busy: dict[str, Any] = {}
        for name in found:
            try:
                handle = ray.get_actor(name, namespace=self.settings.namespace)
                batch_id = await handle.current.remote()
            except Exception:  # gone meanwhile, or dead for good
                log.warning("batch actor %s did not answer; letting it go", name)
                with contextlib.suppress(Exception):
                    kill(ray.get_actor(name, namespace=self.settings.namespace))
                continue
            if batch_id is None:
                self.idle.append(handle)
            else:
                busy[batch_id] = handle
        return busy


def kill(handle: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)
