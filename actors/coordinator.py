"""The coordinator: one named actor per deployment.

It owns the `files` and `coordinator` streams (uploads, idempotency claims), writes the
first event of each batch, serves every read from the read model (a projection of the
whole log, caught up before each read), and starts one BatchActor per running batch,
at most `max_active_batches` at once. At start it rebuilds everything from the log and
re-activates every batch that is not terminal.

It is an async actor with no await between an idempotency lookup and its claim, so
concurrent creates with one key cannot race: asyncio runs one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import ray

from actors import names
from actors.batch_actor import BatchActorRemote
from actors.dispatch import Dispatcher
from actors.results import error_result, is_error
from batches import checkpoint
from batches.admission import CreateRate, admission_order
from batches.domain import decider
from batches.domain import events as ev
from batches.domain import messages as msg
from batches.domain.errors import (
    DomainError,
    FileInUse,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    StorageUnavailable,
)
from batches.domain.idempotency import idempotency_digest
from batches.domain.ids import new_batch_id, new_file_id
from batches.filestore import FileStore, LocalFileStore, free_bytes
from batches.readmodel import COORDINATOR_STREAM, FILES_STREAM, ReadModel, batch_stream
from batches.results import Kind, LineIndex, indexed_page
from batches.settings import Settings
from batches.timeline import timeline_page
from batches.timetravel import state_as_of
from batches.wirefmt import batch_to_wire, file_to_wire
from eventlog import EventStore, NewEvent, StoreFailed
from eventlog.compaction import compact

log = logging.getLogger("batchlog.coordinator")

COORDINATOR_NAME = names.COORDINATOR
RECOVER_FREE = 1 << 20  # reopen a failed store only once the disk has this much room
COMPACT_EVERY_ROUNDS = 60  # supervision rounds are about a second apart
T = TypeVar("T")


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

    return wrapper


class Coordinator:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings.model_validate(settings)
        self.store = EventStore.open(self.settings.log_dir, fsync=self.settings.fsync)
        self.files: FileStore = LocalFileStore(self.settings.data_dir)
        # the read model as of its last checkpoint (or empty); _catch_up replays the rest
        self._checkpoints = self.settings.data_dir / checkpoint.DIR
        self.model = checkpoint.load(self._checkpoints, self.store.head()) or ReadModel()
        self.model.batches.loader = lambda batch_id: state_as_of(self.store, batch_id)
        self._checkpointed = self.model.position
        self.dispatcher = Dispatcher(self.settings)
        self.running: dict[str, Any] = {}  # batch_id -> actor handle
        self._tasks: set[asyncio.Task[None]] = set()
        self._models: tuple[float, dict[str, str]] = (0.0, {})
        self._started: asyncio.Task[dict[str, Any]] | None = None
        self.fault: str | None = None  # a failed log write, until the store is reopened
        self.crashes: dict[str, int] = {}  # batch id -> failures in a row (this incarnation)
        self.not_before: dict[str, float] = {}  # batch id -> monotonic time of next try
        self.create_rate = CreateRate(self.settings.tenant_creates_per_minute)
        self.line_index = LineIndex()  # partial results: where each 1000th line is
        self._catch_up()

    # -- the log -----------------------------------------------------------------

    def _catch_up(self) -> None:
        while True:
            events = self.store.read_all(after=self.model.position, limit=10_000)
            if not events:
                return
            for e in events:
                self.model.apply(e.stream_id, e.type, e.data, e.position)

    def _append(self, stream: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        if not events:
            return
        if self.fault is not None and not self._recover_store():
            raise StorageUnavailable(msg_storage(self.fault))
        try:
            self.store.append(
                stream,
                [NewEvent(t, d) for t, d in events],
                expected_version=self.store.version(stream),
            )
        except (StoreFailed, OSError) as exc:
            # The store failed closed: nothing of this append is acknowledged. It is
            # reopened (recovery drops any torn tail) once the disk has room again.
            self.fault = str(exc)
            log.error("event log write failed; refusing writes until it recovers: %s", exc)
            raise StorageUnavailable(msg_storage(self.fault)) from exc
        self._catch_up()

    def _recover_store(self) -> bool:
        """Reopen the store after a failed write, if the disk has room again."""
        if free_bytes(self.settings.data_dir) < max(self.settings.min_free_bytes, RECOVER_FREE):
            return False
        try:
            with contextlib.suppress(Exception):
                self.store.close()
            self.store = EventStore.open(self.settings.log_dir, fsync=self.settings.fsync)
        except Exception:
            log.exception("reopening the event log failed; still refusing writes")
            return False
        log.warning("event log reopened after the fault (%s); writes accepted again", self.fault)
        self.fault = None
        self._catch_up()
        self._finish_half_creates()
        return True

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start once per incarnation: `serve` calls it, and so does the first call after
        Ray restarted a crashed coordinator."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> dict[str, Any]:
        """Finish half-done creates, resume every non-terminal batch, start supervising."""
        self._catch_up()
        self._finish_half_creates()
        removed = self.files.sweep(set(self.model.files), self.settings.orphan_file_grace_s)
        if removed:
            log.info("removed %d content files no event names: %s", len(removed), removed[:20])
        await self._refresh_models(force=True)
        self._reap_finished_actors()
        self._admit()
        task = asyncio.get_running_loop().create_task(self._supervise())
        self._tasks.add(task)
        return {"batches": len(self.model.batches), "active": len(self.model.active_batches())}

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
            state = self.model.batches.get(batch_id) if batch_id else None
            if state is None or not decider.is_terminal(state.status):
                continue
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=self.settings.namespace), no_restart=True)

    def _finish_half_creates(self) -> None:
        for batch_id, claim in list(self.model.claims.items()):
            if batch_id not in self.model.batches:
                # Crashed (or a write failed) between the claim and BatchCreated: finish it.
                self._append(batch_stream(batch_id), self._create_events(claim["params"]))

    async def _supervise(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(1.0)
            rounds += 1
            try:
                if self.fault is not None and not self._recover_store():
                    continue
                self._catch_up()
                self._expire_queued()
                self._expire_files(int(time.time()))
                self._admit()
                if rounds % COMPACT_EVERY_ROUNDS == 0:
                    # Sealed segments get a Parquet copy for fast SQL (docs/eventlog.md).
                    await asyncio.to_thread(compact, self.settings.log_dir)
                    self.model.prune_claims(time.time(), self.settings.idempotency_retention_s)
                    self.model.batches.evict(time.time(), self.settings.hot_batch_window_s)
                    await self._checkpoint()
            except Exception:  # keep supervising whatever one round hit
                log.exception("supervision round failed")

    def _expire_files(self, now: int) -> list[str]:
        """Files past their expires_at: a FileExpired event, then their bytes go (a crash
        between the two leaves bytes no event names: the start-up sweep removes them).
        The input of a batch still running waits for it to finish."""
        inputs = {b.input_file_id for b in self.model.active_batches()}
        expired = []
        for file_id in self.model.due_files(now, inputs):
            record = self.model.files[file_id]
            data = {"file_id": file_id, "at": now, "expires_at": record["expires_at"]}
            self._append(FILES_STREAM, [(ev.FILE_EXPIRED, data)])
            self.files.delete(file_id)
            expired.append(file_id)
        if expired:
            log.info("expired %d files: %s", len(expired), expired[:20])
        return expired

    async def _checkpoint(self) -> None:
        """Save the read model so the next start replays only what follows (taken here on
        the event loop, where nothing changes it meanwhile; written from a thread)."""
        position = self.model.position
        if position > self._checkpointed:
            state = checkpoint.to_dict(self.model)
            fsync = self.settings.fsync
            await asyncio.to_thread(
                checkpoint.save_dict, self._checkpoints, position, state, fsync=fsync
            )
            self._checkpointed = position

    def _queue(self) -> list[decider.BatchState]:
        """Waiting batches in admission order (batches/admission.py)."""
        now = int(time.time())
        waiting = [b for b in self.model.active_batches() if b.id not in self.running]
        tenants = [self.model.batches[i].tenant for i in self.running if i in self.model.batches]
        return admission_order(waiting, tenants, now)

    def _admit(self) -> None:
        """Start actors for waiting batches in admission order, skipping those backing
        off after a crash."""
        clock = time.monotonic()
        for state in self._queue():
            if len(self.running) >= self.settings.max_active_batches:
                return
            if self.not_before.get(state.id, 0.0) > clock:
                continue
            handle = BatchActorRemote.options(  # type: ignore[attr-defined]
                name=names.batch_actor(state.id),
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
            ).remote(state.id, self.settings.actor_args())
            self.running[state.id] = handle
            task = asyncio.get_running_loop().create_task(self._run_batch(state.id, handle))
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
        self._catch_up()
        state = self.model.batches.get(batch_id)
        if give_up is not None and state is not None:
            # No actor owns the stream now: the coordinator writes the end.
            command = decider.GiveUp(at=int(time.time()), message=give_up)
            try:
                self._append(batch_stream(batch_id), decider.decide(state, command))
            except DomainError:
                log.exception("could not record that batch %s failed", batch_id)
        self._admit()

    def _crashed(self, batch_id: str, exc: Exception) -> str | None:
        """Count a crash and back off before the next try; the reason to give up, if it
        is time. A failed log write (disk full) is the store's fault, not the batch's:
        it backs off but does not count."""
        storage = "StoreFailed" in repr(exc) or self.fault is not None
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

    def _expire_queued(self) -> None:
        """A batch that never got a slot before its window ended expires here.

        Only unvalidated ones: they have no lines to report, so no files to write. An
        overdue in_progress batch is admitted first instead, and its actor expires it.
        """
        now = int(time.time())
        for state in self.model.active_batches():
            if (
                state.id not in self.running
                and state.status == "validating"
                and now >= state.expires_at
            ):
                expire = decider.Expire(at=now, output_file_id=None, error_file_id=None)
                self._append(batch_stream(state.id), decider.decide(state, expire))

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
    async def models(self) -> list[str]:
        return sorted(await self._refresh_models())

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
        """Record a file whose bytes are already durable; idempotent for a known file_id."""
        self._catch_up()
        file_id = file_id or new_file_id()
        existing = self.model.files.get(file_id)
        if existing is not None:
            return file_to_wire(existing)
        limit = self.settings.tenant_max_stored_bytes
        if purpose == "batch" and limit > 0:
            stored = sum(
                f["bytes"]
                for f in self.model.files.values()
                if f["tenant"] == tenant and f["purpose"] == "batch"
            )
            if stored + size > limit:
                raise RateLimited(
                    f"Your uploaded files would take {stored + size} bytes, over the "
                    f"{limit} byte limit per tenant; delete some files first.",
                    retry_after_s=60.0,
                    param="file",
                )
        created_at = int(time.time())
        if expires_at is None and purpose == "batch" and self.settings.batch_file_ttl_s > 0:
            expires_at = created_at + self.settings.batch_file_ttl_s  # OpenAI's default
        data = {
            "file_id": file_id,
            "tenant": tenant,
            "filename": filename,
            "purpose": purpose,
            "bytes": size,
            "created_at": created_at,
            "expires_at": expires_at,
            "path": self.files.location(file_id),
            "sha256": sha256,
            "lines": lines,
        }
        self._append(FILES_STREAM, [("FileUploaded", data)])
        return file_to_wire(self.model.files[file_id])

    @returns_errors
    async def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return file_to_wire(self._file(tenant, file_id))

    @returns_errors
    async def file_path(self, tenant: str, file_id: str) -> dict[str, Any]:
        record = self._file(tenant, file_id)
        return {"path": str(self.settings.data_dir / record["path"]), "bytes": record["bytes"]}

    @returns_errors
    async def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        self._catch_up()
        records, has_more = self.model.list_files(tenant, purpose, after, limit, order)
        return _page([file_to_wire(r) for r in records], has_more)

    @returns_errors
    async def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        self._file(tenant, file_id)
        users = [b.id for b in self.model.active_batches() if b.input_file_id == file_id]
        if users:
            # Its batches still read it (validation, re-reads after a crash, results).
            raise FileInUse(
                f"File {file_id} is the input of batch {users[0]}, which has not finished; "
                "delete it after the batch ends (or cancel the batch first)."
            )
        self._append(FILES_STREAM, [("FileDeleted", {"file_id": file_id, "at": int(time.time())})])
        self.files.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def _file(self, tenant: str, file_id: str) -> dict[str, Any]:
        self._catch_up()
        record = self.model.file(tenant, file_id)
        if record is None:
            raise NotFound(msg.file_not_found(file_id), param="file_id")
        return record

    # -- batches -----------------------------------------------------------------

    @returns_errors
    async def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """Returns {"batch": wire, "created": bool}. No await between lookup and claim.

        `batch_id` is minted by the caller, so a call Ray retries after a coordinator
        crash finds the batch it made instead of making a second one."""
        self._catch_up()
        made = self.model.batch(tenant, batch_id) if batch_id else None
        if made is not None:
            return {"batch": self._wire(made), "created": False}
        source = self.model.file(tenant, params["input_file_id"])
        # An unknown file does not refuse the create: as on OpenAI, the batch is created
        # and fails validation (see _create_events), so OpenAI's clients handle it.
        if source is not None and source["purpose"] != "batch":
            raise InvalidRequest(
                msg.input_file_wrong_purpose(),
                param="input_file_id",
                code="invalid_input_file_id",
            )
        digest = idempotency_digest(
            params["input_file_id"],
            params["endpoint"],
            params["completion_window"],
            params.get("metadata"),
            params.get("output_expires_after"),
        )
        now = int(time.time())
        if idempotency_key is not None:
            claim = self.model.idempotency.lookup(
                tenant, idempotency_key, now, self.settings.idempotency_retention_s
            )
            if claim is not None:
                if claim.digest != digest:
                    raise IdempotencyConflict(msg.idempotency_key_reused())
                return {
                    "batch": self._wire(self.model.batches[claim.batch_id]),
                    "created": False,
                }
        self._check_create_quota(tenant)
        create = {
            "batch_id": batch_id or new_batch_id(),
            "tenant": tenant,
            "input_file_id": params["input_file_id"],
            "endpoint": params["endpoint"],
            "completion_window": params["completion_window"],
            "metadata": params.get("metadata"),
            "output_expires_after": params.get("output_expires_after"),
            "idempotency_key": idempotency_key,
            "at": now,
        }
        if idempotency_key is not None:
            claim_data = {
                "tenant": tenant,
                "key": idempotency_key,
                "digest": digest,
                "batch_id": create["batch_id"],
                "params": create,
                "at": now,
            }
            self._append(COORDINATOR_STREAM, [("IdempotencyKeyClaimed", claim_data)])
        self._append(batch_stream(create["batch_id"]), self._create_events(create))
        self._admit()
        return {"batch": self._wire(self.model.batches[create["batch_id"]]), "created": True}

    def _check_create_quota(self, tenant: str) -> None:
        """Per-tenant limits (429 with Retry-After): waiting batches, then create rate."""
        limit = self.settings.tenant_max_queued_batches
        if limit > 0:
            queued = sum(
                1
                for b in self.model.active_batches()
                if b.tenant == tenant and b.id not in self.running
            )
            if queued >= limit:
                raise RateLimited(
                    f"You have {queued} batches waiting to run, the limit per tenant; "
                    "retry when some have started.",
                    retry_after_s=30.0,
                )
        wait = self.create_rate.take(tenant, time.monotonic())
        if wait is not None:
            raise RateLimited(
                f"Too many batch creates: the limit is {self.settings.tenant_creates_per_minute:g}"
                " per minute per tenant.",
                retry_after_s=wait,
            )

    def _create_events(self, create: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        command = decider.CreateBatch(**create)
        events = decider.decide(None, command)
        if self.settings.completion_window_s != 86_400:
            # A test setting shortens the window; the event records the real deadline.
            for _, data in events:
                if "expires_at" in data:
                    data["expires_at"] = create["at"] + self.settings.completion_window_s
        if self.model.file(create["tenant"], create["input_file_id"]) is None:
            # Created, then failed at validation in the same append: no actor needed.
            missing = msg.input_file_not_found(create["input_file_id"])
            failed = decider.RecordValidation(at=create["at"], errors=(missing,))
            events += decider.decide(decider.fold(events), failed)
        return events

    def _wire(self, state: decider.BatchState, queue: list[str] | None = None) -> dict[str, Any]:
        """The Batch, plus `queue_position` (an extension) while it waits for a slot."""
        wire = batch_to_wire(state)
        if state.status in decider.ACTIVE_STATUSES and state.id not in self.running:
            waiting = queue if queue is not None else [b.id for b in self._queue()]
            wire["queue_position"] = waiting.index(state.id) + 1
        return wire

    @returns_errors
    async def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self._wire(self._batch(tenant, batch_id))

    @returns_errors
    async def list_batches(self, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
        self._catch_up()
        states, has_more = self.model.list_batches(tenant, after, limit)
        queue = [b.id for b in self._queue()]
        return _page([self._wire(s, queue) for s in states], has_more)

    @returns_errors
    async def cancel_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        state = self._batch(tenant, batch_id)
        handle = self.running.get(batch_id)
        if handle is not None:
            result: dict[str, Any] = await handle.cancel.remote()
            if is_error(result):
                return result
            self._catch_up()
            return self._wire(self.model.batches[batch_id])
        # No actor owns the stream while the batch waits for a slot: write here.
        events = decider.decide(state, decider.Cancel(at=int(time.time())))
        self._append(batch_stream(batch_id), events)
        self._admit()  # a cancelling batch is admitted first, to write its files
        return self._wire(self.model.batches[batch_id])

    @returns_errors
    async def batch_events(
        self, tenant: str, batch_id: str, after: int | None, limit: int
    ) -> dict[str, Any]:
        self._batch(tenant, batch_id)
        # The batch's events, then its webhook delivery's (batches/timeline.py).
        data, has_more = timeline_page(self.store, batch_id, after or 0, limit)
        return _page(data, has_more)

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
        """A bounded step of the partial-results extension (batches/results.py)."""
        state = self._batch(tenant, batch_id)
        page = indexed_page(
            self.store,
            self.line_index,
            batch_id,
            batch_stream(batch_id),
            kind,
            from_version,
            skip,
            limit,
            ordinal,
        )
        return {
            "lines": page.lines,
            "skipped": page.skipped,
            "next_version": page.next_version,
            "status": state.status,
        }

    def _batch(self, tenant: str, batch_id: str) -> decider.BatchState:
        self._catch_up()
        state = self.model.batch(tenant, batch_id)
        if state is None:
            raise NotFound(msg.batch_not_found(batch_id), param="batch_id")
        return state

    @returns_errors
    async def health(self) -> dict[str, Any]:
        if self.fault is not None:
            return {"status": "faulted", "error": msg_storage(self.fault)}
        return {
            "status": "ok",
            "position": self.model.position,
            "batches": len(self.model.batches),
            "running": sorted(self.running),
        }

    def data_dir(self) -> str:
        return str(self.settings.data_dir.resolve())


def msg_storage(fault: str) -> str:
    return f"The server could not write to its storage ({fault}); nothing was changed. Retry later."


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


CoordinatorRemote = ray.remote(Coordinator)


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
