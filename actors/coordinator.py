"""The coordinator: one named actor per deployment, a thin shell around the core.

The rules (files, create with idempotency, admission order, queue position, expiry of
queued batches, finishing half-done creates) live in `batches.core.Coordination`. This
actor holds what only Ray can: the BatchActor handles of running batches (at most
`max_active_batches`), their supervision, the model list of the executors, and its
own life cycle (Ray restarts it after a crash; it rebuilds from the log and resumes
every batch that is not terminal).

It is an async actor and the core is synchronous, so concurrent creates with one key
cannot race: asyncio runs one core call at a time. Domain errors go back as data
(`actors.results`): pickled exception classes are fragile across Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import ray

from actors import names
from actors.batch_actor import BatchActorRemote
from actors.dispatch import Dispatcher
from actors.results import error_result, is_error
from batches import checkpoint
from batches.backends import open_event_log, open_file_store
from batches.core import Coordination, CoreConfig
from batches.core.coordination import storage_message
from batches.domain import decider
from batches.domain.errors import DomainError, StorageUnavailable
from batches.filestore import free_bytes
from batches.results import Kind
from batches.settings import Settings
from eventlog import EventLog, StoreUnavailable
from eventlog.compaction import compact

log = logging.getLogger("batchlog.coordinator")

COORDINATOR_NAME = names.COORDINATOR
COMPACT_EVERY_ROUNDS = 60  # supervision rounds are about a second apart
RECOVER_FREE = 1 << 20  # reopen a failed log only once the disk has this much room


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
            return error_result(StorageUnavailable(storage_message(str(exc))))

    return wrapper


class Coordinator:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings.model_validate(settings)
        store = open_event_log(self.settings)
        # The read model as of its last checkpoint (or empty); the core replays the rest.
        self._checkpoints = self.settings.data_dir / checkpoint.DIR
        restored = checkpoint.load(self._checkpoints, store.head())
        self._checkpointed = restored.position if restored is not None else 0
        self.core = Coordination(
            store,
            open_file_store(self.settings),
            clock=time.time,
            reopen=self._reopen_log,
            model=restored,
            config=core_config(self.settings),
        )
        self.dispatcher = Dispatcher(self.settings)
        self.running: dict[str, Any] = {}  # batch_id -> actor handle
        self._tasks: set[asyncio.Task[None]] = set()
        self._models: tuple[float, dict[str, str]] = (0.0, {})
        self._started: asyncio.Task[dict[str, Any]] | None = None
        self.crashes: dict[str, int] = {}  # batch id -> failures in a row (this incarnation)
        self.not_before: dict[str, float] = {}  # batch id -> monotonic time of next try

    def _reopen_log(self) -> EventLog | None:
        """A fresh store after a failed write, once the disk has room again."""
        settings = self.settings
        local = settings.database_url is None
        if local and free_bytes(settings.data_dir) < max(settings.min_free_bytes, RECOVER_FREE):
            return None
        with contextlib.suppress(Exception):
            self.core.log.close()
        try:
            return open_event_log(settings)
        except Exception:
            log.exception("reopening the event log failed; still refusing writes")
            return None

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start once per incarnation: `serve` calls it, and so does the first call after
        Ray restarted a crashed coordinator."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> dict[str, Any]:
        """Finish half-done creates, resume every non-terminal batch, start supervising."""
        self.core.repair()
        removed = self.core.sweep_orphans(self.settings.orphan_file_grace_s)
        if removed:
            log.info("removed %d content files no event names: %s", len(removed), removed[:20])
        await self._refresh_models(force=True)
        self._reap_finished_actors()
        self._admit()
        task = asyncio.get_running_loop().create_task(self._supervise())
        self._tasks.add(task)
        return {
            "batches": len(self.core.model.batches),
            "active": len(self.core.model.active_batches()),
        }

    def _reap_finished_actors(self) -> None:
        """Batch actors are detached, so one whose batch ended while no coordinator was
        there to let it go is still alive: let it go now."""
        prefix = names.batch_actor("")
        try:
            found = ray.util.list_named_actors()
        except Exception:
            log.exception("cannot list named actors")
            return
        for name in found:
            batch_id = name[len(prefix) :] if name.startswith(prefix) else None
            state = self.core.model.batches.get(batch_id) if batch_id else None
            if state is None or not decider.is_terminal(state.status):
                continue
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=self.settings.namespace), no_restart=True)

    async def _supervise(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            try:
                if not self.core.recover():
                    continue  # the log failed a write and cannot be reopened yet
                self.core.expire_queued(self.running)
                self.core.expire_files()
                self._admit()
                if rounds % COMPACT_EVERY_ROUNDS == 0:
                    if self.settings.database_url is None:
                        # Sealed segments get a Parquet copy for fast SQL (docs/eventlog.md).
                        await asyncio.to_thread(compact, self.settings.log_dir)
                    self.core.forget_old()
                    await self._checkpoint()
            except Exception:  # keep supervising whatever one round hit
                log.exception("supervision round failed")

    async def _checkpoint(self) -> None:
        """Save the read model so the next start replays only what follows (taken here on
        the event loop, where nothing changes it meanwhile; written from a thread)."""
        position = self.core.model.position
        if position > self._checkpointed:
            state = checkpoint.to_dict(self.core.model)
            fsync = self.settings.fsync
            await asyncio.to_thread(
                checkpoint.save_dict, self._checkpoints, position, state, fsync=fsync
            )
            self._checkpointed = position

    def _admit(self) -> None:
        """Start an actor for each batch the core admits (it picks which, and in what
        order), skipping those backing off after a crash."""
        clock = time.monotonic()
        backing_off = {b for b, t in self.not_before.items() if t > clock}
        for batch_id in self.core.admissions(self.running, skip=backing_off):
            handle = BatchActorRemote.options(  # type: ignore[attr-defined]
                name=names.batch_actor(batch_id),
                namespace=self.settings.namespace,
                get_if_exists=True,
                # Not owned by the coordinator: a coordinator crash must not stop running
                # batches (owned actors die with their owner). The new coordinator finds
                # it by name and `run` joins its task; it is killed once terminal.
                lifetime="detached",
                # Bounded: a batch that kills its process every time must end (failed),
                # not loop; the coordinator counts what Ray gives up on.
                max_restarts=self.settings.batch_max_restarts,
                max_task_retries=self.settings.batch_max_restarts,
                num_cpus=0,
            ).remote(batch_id, self.settings.actor_args())
            self.running[batch_id] = handle
            task = asyncio.get_running_loop().create_task(self._run_batch(batch_id, handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch_id: str, handle: Any) -> None:
        give_up: str | None = None
        try:
            await handle.run.remote()
            self.crashes.pop(batch_id, None)
            self.not_before.pop(batch_id, None)
        except Exception as exc:
            give_up = self._crashed(batch_id, exc)
        finally:
            self.running.pop(batch_id, None)
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                log.debug("actor %s already gone", batch_id)
        if give_up is not None:
            try:
                self.core.give_up(batch_id, give_up)
            except DomainError:
                log.exception("could not record that batch %s failed", batch_id)
        self.core.catch_up()
        self._admit()

    def _crashed(self, batch_id: str, exc: Exception) -> str | None:
        """Count a crash and back off before the next try; the reason to give up, if it
        is time. A failed log write (disk full) is the store's fault, not the batch's:
        it backs off but does not count."""
        storage = "StoreFailed" in repr(exc) or self.core.fault is not None
        crashes = self.crashes.get(batch_id, 0) + (0 if storage else 1)
        self.crashes[batch_id] = crashes
        delay = min(self.settings.batch_restart_backoff_s * 2 ** max(crashes - 1, 0), 60.0)
        self.not_before[batch_id] = time.monotonic() + delay
        log.error(
            "batch %s failed (%d of %d): %s; next try in %.1f s",
            batch_id,
            crashes,
            self.settings.batch_max_restarts,
            exc,
            delay,
        )
        if crashes <= self.settings.batch_max_restarts:
            return None
        self.crashes.pop(batch_id, None)
        return (
            f"The batch failed {crashes} times in a row and was stopped: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        )

    # -- models ------------------------------------------------------------------

    async def _refresh_models(self, force: bool = False) -> dict[str, str]:
        fetched_at, models = self._models
        if force or time.monotonic() - fetched_at > 30.0:
            fresh = await self.dispatcher.models()
            # An upstream that failed to answer this once keeps its last known models.
            models = {**models, **fresh} if models else fresh
            self._models = (time.monotonic(), models)
        return models

    @returns_errors
    async def model_owners(self) -> dict[str, str]:
        return dict(await self._refresh_models())

    # -- files -------------------------------------------------------------------

    @returns_errors
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

    @returns_errors
    async def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return self.core.get_file(tenant, file_id)

    @returns_errors
    async def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        return self.core.list_files(tenant, purpose, after, limit, order)

    @returns_errors
    async def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return self.core.delete_file(tenant, file_id)

    # -- batches -----------------------------------------------------------------

    @returns_errors
    async def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """Returns {"batch": wire, "created": bool}. `batch_id` is minted by the caller,
        so a call Ray retries after a coordinator crash finds the batch it made."""
        result = self.core.create_batch(tenant, params, idempotency_key, self.running, batch_id)
        if result["created"]:
            self._admit()
            result["batch"] = self.core.get_batch(tenant, result["batch"]["id"], self.running)
        return result

    @returns_errors
    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.core.get_batch(tenant, batch_id, self.running)

    @returns_errors
    async def list_batches(self, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
        return self.core.list_batches(tenant, after, limit, self.running)

    @returns_errors
    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        self.core.batch_state(tenant, batch_id)  # 404 for another tenant's batch
        handle = self.running.get(batch_id)
        if handle is None:
            # No actor owns the stream while the batch waits for a slot: the core writes.
            self.core.cancel_queued(tenant, batch_id, self.running)
            self._admit()  # a cancelling batch is admitted first, to write its files
        else:
            result: dict[str, Any] = await handle.cancel.remote()
            if is_error(result):
                return result
        return self.core.get_batch(tenant, batch_id, self.running)

    @returns_errors
    async def batch_events(
        self, tenant: str, batch_id: str, after: int | None, limit: int
    ) -> dict[str, Any]:
        return self.core.batch_events(tenant, batch_id, after, limit)

    @returns_errors
    async def batch_results(
        self,
        tenant: str,
        batch_id: str,
        kind: Kind,
        from_version: int,
        skip: int,
        limit: int,
        ordinal: int = 0,
    ) -> dict[str, Any]:
        args = (tenant, batch_id, kind, from_version, skip, limit, ordinal)
        return self.core.batch_results(*args)

    @returns_errors
    async def health(self) -> dict[str, Any]:
        return self.core.health(self.running)

    def data_dir(self) -> str:
        return str(self.settings.data_dir.resolve())

    def database_url(self) -> str | None:
        """Where drivers find the file contents when they are in PostgreSQL."""
        return self.settings.database_url


CoordinatorRemote = ray.remote(Coordinator)


def core_config(settings: Settings) -> CoreConfig:
    return CoreConfig(
        max_active_batches=settings.max_active_batches,
        completion_window_s=settings.completion_window_s,
        idempotency_retention_s=settings.idempotency_retention_s,
        batch_file_ttl_s=settings.batch_file_ttl_s,
        hot_batch_window_s=settings.hot_batch_window_s,
        tenant_max_queued_batches=settings.tenant_max_queued_batches,
        tenant_creates_per_minute=settings.tenant_creates_per_minute,
        tenant_max_stored_bytes=settings.tenant_max_stored_bytes,
    )


def get_or_create_coordinator(settings: Settings) -> Any:
    return CoordinatorRemote.options(  # type: ignore[attr-defined]
        name=COORDINATOR_NAME,
        namespace=settings.namespace,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=1000,
        # Crashed, it is restarted and rebuilds from the log; calls in flight are retried
        # (a create carrying an idempotency key then returns the batch it made).
        max_restarts=-1,
        max_task_retries=-1,
    ).remote(settings.actor_args())
