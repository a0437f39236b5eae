"""The coordinator: one named actor per deployment, a thin shell around the core.

The rules live in `batches.core` (`Coordination`: the use cases; `Supervision`: which
batches run, back-off and give-up, who owns a batch stream). This actor holds what only
Ray can: the supervision's `Launch` port (a kept or new batch actor, `actors/runners.py`,
its run awaited, the actor given back), the executors' model list, the periodic tasks,
and its own life cycle (Ray restarts it after a crash; it rebuilds from the log, joins
the runs of batch actors that outlived it and resumes every other batch that is not
terminal). The core is synchronous, so concurrent creates with one key cannot interleave
on this event loop. Domain errors go back as data (`actors.results`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any

import ray

from actors import names
from actors.batch_actor import let_go_of_finished
from actors.dbpassword import actor_settings
from actors.dispatch import Dispatcher
from actors.results import error_result, is_error
from actors.runners import Runners
from batches.core.restarts import RestartBudget
from batches.core.storage import Checkpoints, Upkeep, open_core
from batches.core.supervision import Supervision
from batches.domain import refusals
from batches.domain.errors import DomainError
from batches.settings import Settings, split_password
from eventlog import StoreUnavailable

log = logging.getLogger("batchlog.coordinator")

COORDINATOR_NAME = names.COORDINATOR
UPKEEP_EVERY_ROUNDS = 60  # supervision rounds are about a second apart
# How often a façade's pending `batch_changes` looks (a head check): also the most often
# it is answered, so a façade's copies cost at most 20 Ray calls a second.
CHANGES_POLL_S = 0.05


def returns_errors(
    fn: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """Make sure the coordinator has started (also after Ray restarted it), and send
    domain errors back as data."""

    @wraps(fn)
    async def wrapper(self: Coordinator, *args: Any, **kwargs: Any) -> Any:
        try:
            await self.start()
            return await fn(self, *args, **kwargs)
        except DomainError as err:
            return error_result(err)
        except StoreUnavailable as exc:  # PostgreSQL away: a clear 503, not a 500
            return error_result(refusals.storage_unavailable(str(exc)))

    return wrapper


def use_case(name: str, of: str = "core") -> Callable[..., Awaitable[Any]]:
    """An actor method running use case `name` of the core (or of its supervision: those
    that depend on which batches run)."""

    async def method(self: Coordinator, *args: Any) -> Any:
        return getattr(getattr(self, of), name)(*args)

    method.__name__ = method.__qualname__ = name
    return returns_errors(method)


class Coordinator:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = actor_settings(settings)
        self.checkpoints = Checkpoints(self.settings)
        self.core = open_core(self.settings, self.checkpoints)
        self.runners = Runners(self.settings)
        budget = RestartBudget(
            self.settings.batch_max_restarts, self.settings.batch_restart_backoff_s
        )
        self.sup = Supervision(self.core, budget, self._launch, settle=self.runners.settle)
        self.upkeep = Upkeep(self.settings, self.checkpoints)
        self.dispatcher = Dispatcher(self.settings)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started: asyncio.Task[dict[str, Any]] | None = None

    async def start(self) -> dict[str, Any]:
        """Start once per incarnation: `serve` calls it, and so does the first call after
        Ray restarted a crashed coordinator."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> dict[str, Any]:
        summary = self.sup.start(self.settings.orphan_file_grace_s)
        await self.dispatcher.cached_models(max_age_s=0.0)
        let_go_of_finished(self.settings.namespace, self.core.model.batches)
        # Batches whose actors outlived the previous incarnation: join their runs.
        for batch_id, handle in (await self.runners.discover()).items():
            self.sup.adopt(batch_id, handle)
            self._spawn(self._run(batch_id, handle))
        self.sup.admit()
        self._spawn(self._supervise())
        return summary

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            try:
                self.sup.round()
                if rounds % UPKEEP_EVERY_ROUNDS == 0:
                    await self.upkeep.run(self.core)
            except Exception:  # keep supervising whatever one round hit
                log.exception("supervision round failed")

    def _launch(self, batch_id: str) -> Any:
        """The supervision's `Launch` port: a kept idle batch actor if there is one (else
        a new one), and a task awaiting its run."""
        handle = self.runners.take()
        self._spawn(self._run(batch_id, handle))
        return handle

    async def _run(self, batch_id: str, handle: Any) -> None:
        error: Exception | None = None
        reusable = False
        try:
            result = await handle.run.remote(batch_id)
            reusable = not result.get("reconstructed", True)
        except Exception as exc:
            error = exc
        finally:
            # Kept or killed before its stream goes back to the core.
            self.runners.give_back(handle, reusable)
        self.sup.ended(batch_id, error)

    @returns_errors
    async def model_owners(self) -> dict[str, str]:
        return await self.dispatcher.cached_models(max_age_s=30.0)

    register_file = use_case("register_file")
    get_file = use_case("get_file")
    list_files = use_case("list_files")
    delete_file = use_case("delete_file")
    create_batch = use_case("create_batch", of="sup")  # Ray retries it with the same batch id
    get_batch = use_case("get_batch", of="sup")
    list_batches = use_case("list_batches", of="sup")
    batch_events = use_case("batch_events")
    batch_results = use_case("batch_results")
    health = use_case("health", of="sup")

    @returns_errors
    async def batch_changes(self, token: str | None, after: int, wait_s: float) -> dict[str, Any]:
        """A façade's long poll for its copies of Batch objects (docs/read-cache.md):
        answered once something changed after its cursor, or after `wait_s` with nothing."""
        deadline = time.monotonic() + wait_s
        while not self.sup.changed(token, after) and time.monotonic() < deadline:
            await asyncio.sleep(CHANGES_POLL_S)
        return self.sup.batch_changes(token, after)

    @returns_errors
    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        handle = self.sup.cancel(tenant, batch_id)
        if handle is not None:  # running: its actor owns the stream and cancels
            result: dict[str, Any] = await handle.cancel.remote(batch_id)
            if is_error(result):
                return result
        return self.sup.get_batch(tenant, batch_id)

    def data_dir(self) -> str:
        return str(self.settings.data_dir.resolve())

    def database_url(self) -> str | None:
        """Where drivers find the file contents when they are in PostgreSQL (without
        the password: a driver takes it from Ray's KV store, actors/dbpassword.py)."""
        url = self.settings.database_url
        return None if url is None else split_password(url)[0]


CoordinatorRemote = ray.remote(Coordinator)


def get_or_create_coordinator(settings: Settings) -> Any:
    return CoordinatorRemote.options(  # type: ignore[attr-defined]
        name=COORDINATOR_NAME,
        namespace=settings.namespace,
        get_if_exists=True,
        # On a cluster it belongs to the deployment, not to the `serve` that started it:
        # other façades (serve --facade-only) keep using it when that process dies.
        lifetime="detached" if settings.ray_address is not None else None,
        num_cpus=0,
        max_concurrency=1000,
        # Crashed, it is restarted and rebuilds from the log; calls in flight are retried
        # (a create carrying an idempotency key then returns the batch it made).
        max_restarts=-1,
        max_task_retries=-1,
    ).remote(settings.actor_args())
