"""The application core: every coordination rule, with no Ray in sight.

Built from an injected event log, file store, clock and id source, it keeps the read
model (a projection of the whole log) and decides: file registration and deletion,
create with idempotency, cancel of a batch waiting for a slot, expiry of queued
batches, admission order, queue position, and finishing creates a crash cut in half.
Answers are OpenAI wire dicts; refusals are `DomainError`s.

Which batches are running is the caller's knowledge (the coordinator actor holds their
actor handles), so calls that depend on it take `running`. Every append carries the
version the decision was made on, read from the read model: a writer whose view is
stale (a zombie incarnation) is refused with `ConcurrentUpdate`, never merged.

Synchronous, with no await inside: the coordinator actor calls it from one event loop,
so a lookup and the claim that follows cannot interleave with another create.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from batches.admission import CreateRate, admission_order
from batches.catalogstore import CatalogFailed
from batches.core.changes import ChangeJournal
from batches.core.ports import Clock, Ids, Page, RandomIds
from batches.domain import catalog, decider, refusals
from batches.domain import events as ev
from batches.filestore import FileStore
from batches.readmodel import ReadModel
from batches.results import Kind, LineIndex, indexed_page
from batches.settings import Settings
from batches.timeline import timeline_page
from batches.timetravel import state_as_of
from batches.wirefmt import batch_to_wire, file_to_wire
from eventlog import EventLog, NewEvent, StoreFailed, StoreUnavailable, WrongExpectedVersion

log = logging.getLogger("batchlog.core")

CATCH_UP_PAGE = 10_000


@dataclass(frozen=True)
class CoreConfig:
    max_active_batches: int = 4
    completion_window_s: int = 86_400  # a test setting shortens the "24h" window
    idempotency_retention_s: int = 7 * 86_400
    batch_file_ttl_s: int = 0  # > 0: a batch input file expires this long after upload
    hot_batch_window_s: int = 3_600  # terminal this long: out of memory, read from the log
    tenant_max_queued_batches: int = 0  # 0: no limit
    tenant_creates_per_minute: float = 0.0
    tenant_max_stored_bytes: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> CoreConfig:
        return cls(
            max_active_batches=settings.max_active_batches,
            completion_window_s=settings.completion_window_s,
            idempotency_retention_s=settings.idempotency_retention_s,
            batch_file_ttl_s=settings.batch_file_ttl_s,
            hot_batch_window_s=settings.hot_batch_window_s,
            tenant_max_queued_batches=settings.tenant_max_queued_batches,
            tenant_creates_per_minute=settings.tenant_creates_per_minute,
            tenant_max_stored_bytes=settings.tenant_max_stored_bytes,
        )


class Coordination:
    def __init__(
        self,
        log: EventLog,
        files: FileStore,
        *,
        clock: Clock,
        ids: Ids | None = None,
        config: CoreConfig | None = None,
        reopen: Callable[[], EventLog | None] | None = None,
        model: ReadModel | None = None,
        restore: Callable[[int], ReadModel] | None = None,
    ) -> None:
        """`reopen` gives a fresh log after a failed write, or None while that cannot be
        had yet (the disk still full): until then every write is refused, nothing lost.
        `model` is a read model restored from a checkpoint; the log's tail is replayed.
        `restore(head)` gives it again (after the catalog under it failed a write)."""
        self.log = log
        self.reopen = reopen
        self.restore = restore or (lambda head: ReadModel())
        self._model_lost = False  # the catalog failed a write: restore the model
        self.fault: str | None = None  # a failed log write, until the log is reopened
        self.files = files
        self.clock = clock
        self.ids: Ids = ids or RandomIds()
        self.config = config or CoreConfig()
        self._use(model or ReadModel())
        self.create_rate = CreateRate(self.config.tenant_creates_per_minute)
        self.line_index = LineIndex()  # partial results: where each 1000th line is
        self.changes = ChangeJournal()  # for façades' copies of Batch objects
        self.catch_up()

    # -- the log ---------------------------------------------------------------------

    def _use(self, model: ReadModel) -> None:
        self.model = model
        # Batches long terminal leave memory; a GET loads them from their stream.
        self.model.batches.loader = lambda batch_id: state_as_of(self.log, batch_id)

    def catch_up(self) -> None:
        """Fold every event appended since the last look (by anyone) into the read model."""
        while not self._model_lost:  # (until restored, nothing more goes into the catalog)
            events = self.log.read_all(after=self.model.position, limit=CATCH_UP_PAGE)
            if not events:
                return
            try:
                for e in events:
                    self.model.apply(e.stream_id, e.type, e.data, e.position, e.version)
                    batch_id = ev.batch_id_of_stream(e.stream_id)
                    if batch_id is not None:
                        self.changes.note(batch_id)
                self.model.catalog.commit()
            except CatalogFailed as exc:
                # Rolled back under a model that went on: writes are refused until the
                # model is restored from the checkpoint and the catalog (`recover`).
                self.fault, self._model_lost = str(exc), True
                log.error("catalog write failed; refusing writes until it recovers: %s", exc)
                raise refusals.storage_unavailable(self.fault) from exc

    def _append(self, stream: str, events: list[ev.Event], decided_on: int) -> None:
        """Append at the version the decision was made on; refuse if the stream moved."""
        if not events:
            return
        if self.fault is not None and not self.recover():
            raise refusals.storage_unavailable(self.fault)
        try:
            self.log.append(stream, [NewEvent(t, d) for t, d in events], decided_on)
        except WrongExpectedVersion as exc:
            self.catch_up()
            raise refusals.concurrent_update(stream, exc.expected, exc.actual) from exc
        except (StoreFailed, StoreUnavailable, OSError) as exc:
            # The log failed closed (or its database is away): nothing of this append is acknowledged. It is
            # reopened (recovery drops any torn tail) once `reopen` can give one.
            self.fault = str(exc)
            log.error("event log write failed; refusing writes until it recovers: %s", exc)
            raise refusals.storage_unavailable(self.fault) from exc
        self.catch_up()

    def recover(self) -> bool:
        """After a failed write: take a reopened log, finish creates the fault cut in
        half, and accept writes again. False while the log cannot be reopened."""
        if self.fault is None:
            return True
        fresh = self.reopen() if self.reopen is not None else None
        if fresh is None:
            return False
        log.warning("event log reopened after the fault (%s); writes accepted again", self.fault)
        self.log, self.fault = fresh, None
        if self._model_lost:
            self._use(self.restore(self.log.head()))
            self._model_lost = False
        self.catch_up()
        self.repair()
        return True

    def _version(self, stream: str) -> int:
        return self.model.versions.get(stream, 0)

    def _now(self) -> int:
        return int(self.clock())

    # -- files -----------------------------------------------------------------------

    def register_file(
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
        self.catch_up()
        file_id = file_id or self.ids.file_id()
        if file_id not in self.model.files:
            self._check_storage_quota(tenant, purpose, size)
        created_at = self._now()
        ttl = self.config.batch_file_ttl_s
        if expires_at is None and purpose == "batch" and ttl > 0:
            expires_at = created_at + ttl  # OpenAI's default for batch input files
        data: ev.FileUploadedData = {
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
        existing = self.model.files.get(file_id)
        events = catalog.upload_file(existing, data)
        self._append(ev.FILES_STREAM, events, self._version(ev.FILES_STREAM))
        return file_to_wire(self.model.files[file_id])

    def _check_storage_quota(self, tenant: str, purpose: str, size: int) -> None:
        limit = self.config.tenant_max_stored_bytes
        if purpose != "batch" or limit <= 0:
            return
        stored = self.model.stored_bytes(tenant, "batch")
        if stored + size > limit:
            raise refusals.stored_bytes_limit(stored + size, limit)

    def file_record(self, tenant: str, file_id: str) -> dict[str, Any]:
        self.catch_up()
        record = self.model.file(tenant, file_id)
        if record is None:
            raise refusals.file_not_found(file_id)
        return record

    def get_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        return file_to_wire(self.file_record(tenant, file_id))

    def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page:
        self.catch_up()
        records, has_more = self.model.list_files(tenant, purpose, after, limit, order)
        return page([file_to_wire(r) for r in records], has_more)

    def delete_file(self, tenant: str, file_id: str) -> dict[str, Any]:
        self.catch_up()
        record = self.model.file(tenant, file_id)
        users = [b.id for b in self.model.active_batches() if b.input_file_id == file_id]
        if record is not None and users:
            # Its batches still read it (validation, re-reads after a crash, results).
            raise refusals.file_in_use(file_id, users[0])
        events = catalog.delete_file(record, file_id, self._now())
        self._append(ev.FILES_STREAM, events, self._version(ev.FILES_STREAM))
        self.files.delete(file_id)  # after the event: a crash leaves bytes, never a dangling id
        return {"id": file_id, "object": "file", "deleted": True}

    def expire_files(self) -> list[str]:
        """Files past their expires_at: a FileExpired event, then their bytes go (a crash
        between the two leaves bytes no event names: the start-up sweep removes them).
        The input of a batch still running waits for it to finish."""
        self.catch_up()
        now = self._now()
        inputs = {b.input_file_id for b in self.model.active_batches()}
        expired = []
        for file_id in self.model.due_files(now, inputs):
            events = catalog.expire_file(self.model.files[file_id], now)
            self._append(ev.FILES_STREAM, events, self._version(ev.FILES_STREAM))
            self.files.delete(file_id)
            expired.append(file_id)
        if expired:
            log.info("expired %d files: %s", len(expired), expired[:20])
        return expired

    # -- batches ---------------------------------------------------------------------

    def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        running: Collection[str] = (),
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """{"batch": wire, "created": bool}. The same key and parameters give the same batch.

        `batch_id` may be minted by the caller, so a call retried after a crash finds the
        batch it made instead of making a second one."""
        self.catch_up()
        made_before = self.model.batch(tenant, batch_id) if batch_id else None
        if made_before is not None:
            return {"batch": self._wire(made_before, running), "created": False}
        source = self.model.file(tenant, params["input_file_id"])
        # An unknown file does not refuse the create: as on OpenAI, the batch is created
        # (`validating`) and its validation finds the file missing and fails it
        # (actors/batch_actor.py), so OpenAI's clients handle it.
        if source is not None and source["purpose"] != "batch":
            raise refusals.input_file_wrong_purpose()
        create = decider.CreateBatch(
            batch_id=batch_id or self.ids.batch_id(),
            tenant=tenant,
            input_file_id=params["input_file_id"],
            endpoint=params["endpoint"],
            completion_window=params["completion_window"],
            metadata=params.get("metadata"),
            output_expires_after=params.get("output_expires_after"),
            idempotency_key=idempotency_key,
            at=self._now(),
        )
        made = catalog.existing_batch(
            self.model.idempotency, create, create.at, self.config.idempotency_retention_s
        )
        if made is not None:
            return {"batch": self._wire(self.model.batches[made], running), "created": False}
        self._check_create_quota(tenant, running)
        claim = catalog.claim_key(create)
        self._append(ev.COORDINATOR_STREAM, claim, self._version(ev.COORDINATOR_STREAM))
        self._create(create)
        return {"batch": self._wire(self.model.batches[create.batch_id], running), "created": True}

    def _check_create_quota(self, tenant: str, running: Collection[str]) -> None:
        """Per-tenant limits (429 with Retry-After): waiting batches, then create rate."""
        limit = self.config.tenant_max_queued_batches
        if limit > 0:
            queued = sum(1 for b in self.waiting(running) if b.tenant == tenant)
            if queued >= limit:
                raise refusals.queued_batches_limit(queued)
        wait = self.create_rate.take(tenant, self.clock())
        if wait is not None:
            raise refusals.create_rate_limit(self.config.tenant_creates_per_minute, wait)

    def _create(self, create: decider.CreateBatch) -> None:
        events = decider.decide(None, create)
        if self.config.completion_window_s != 86_400:
            # A test setting shortens the window; the event records the real deadline.
            for _, data in events:
                data["expires_at"] = create.at + self.config.completion_window_s
        self._append(ev.batch_stream(create.batch_id), events, 0)

    def repair(self) -> list[str]:
        """Finish creates a crash cut between the key's claim and `BatchCreated`."""
        self.catch_up()
        finished = []
        for batch_id, claim in list(self.model.claims.items()):
            if batch_id not in self.model.batches:
                self._create(catalog.create_from_claim(claim))
                finished.append(batch_id)
        return finished

    def sweep_orphans(self, older_than_s: float) -> list[str]:
        """Remove content files no event names (an upload cut off before its event)."""
        self.catch_up()
        return self.files.sweep(set(self.model.catalog.file_ids()), older_than_s)

    def batch_state(self, tenant: str, batch_id: str) -> decider.BatchState:
        self.catch_up()
        state = self.model.batch(tenant, batch_id)
        if state is None:
            raise refusals.batch_not_found(batch_id)
        return state

    def get_batch(
        self, tenant: str, batch_id: str, running: Collection[str] = ()
    ) -> dict[str, Any]:
        return self._wire(self.batch_state(tenant, batch_id), running)

    def behind(self) -> bool:
        """Whether the log holds events the read model has not folded yet (and can: not
        while it waits to be restored after a failed catalog write)."""
        return not self._model_lost and self.log.head() > self.model.position

    def batch_changes(
        self, token: str | None, after: int, running: Collection[str] = ()
    ) -> dict[str, Any]:
        """The Batch objects changed after cursor (`token`, `after`) of `self.changes`
        (docs/read-cache.md), each with its tenant; `batch` is None for one waiting for a
        slot (its `queue_position` moves with other batches: not for copying). `reset`:
        the cursor could not be read, the reader drops its copies and goes on from here."""
        self.catch_up()
        changed = self.changes.since(token, after)
        out = []
        for batch_id in sorted(changed or ()):
            tenant = self.model.batches.tenant(batch_id)
            state = self.model.batches.get(batch_id)
            if tenant is None or state is None:
                continue
            waiting = state.status in decider.ACTIVE_STATUSES and batch_id not in running
            wire = None if waiting else self._wire(state, running)
            out.append({"id": batch_id, "tenant": tenant, "batch": wire})
        return {
            "token": self.changes.token,
            "seq": self.changes.seq,
            "reset": changed is None,
            "batches": out,
        }

    def list_batches(
        self, tenant: str, after: str | None, limit: int, running: Collection[str] = ()
    ) -> Page:
        self.catch_up()
        states, has_more = self.model.list_batches(tenant, after, limit)
        queue = [b.id for b in self.queue(running)]
        return page([self._wire(s, running, queue) for s in states], has_more)

    def cancel_queued(
        self, tenant: str, batch_id: str, running: Collection[str] = ()
    ) -> dict[str, Any]:
        """Cancel a batch no actor owns yet (it waits for a slot): the coordinator still
        holds its stream, so it writes here; a cancelling batch is admitted first."""
        state = self.batch_state(tenant, batch_id)
        if batch_id in running:
            raise ValueError(f"{batch_id} is running: its own actor cancels it")
        events = decider.decide(state, decider.Cancel(at=self._now()))
        self._append(ev.batch_stream(batch_id), events, state.version)
        return self._wire(self.model.batches[batch_id], running)

    def batch_events(self, tenant: str, batch_id: str, after: int | None, limit: int) -> Page:
        self.batch_state(tenant, batch_id)
        # The batch's events, then its webhook delivery's (batches/timeline.py).
        data, has_more = timeline_page(self.log, batch_id, after or 0, limit)
        return page(data, has_more)

    def batch_results(
        self,
        tenant: str,
        batch_id: str,
        kind: Kind,
        from_version: int,
        skip: int,
        limit: int,
        ordinal: int = 0,
    ) -> dict[str, Any]:
        """A bounded step of the partial-results extension (batches/results.py); `ordinal`
        counts the lines of this kind before `from_version` (for the line index)."""
        state = self.batch_state(tenant, batch_id)
        stream = ev.batch_stream(batch_id)
        step = indexed_page(
            self.log, self.line_index, batch_id, stream, kind, from_version, skip, limit, ordinal
        )
        return {
            "lines": step.lines,
            "skipped": step.skipped,
            "next_version": step.next_version,
            "status": state.status,
        }

    # -- admission and supervision ---------------------------------------------------------

    def waiting(self, running: Collection[str]) -> list[decider.BatchState]:
        """Active batches without an actor, oldest first."""
        return [b for b in self.model.active_batches() if b.id not in running]

    def queue(self, running: Collection[str]) -> list[decider.BatchState]:
        """Waiting batches in admission order (batches/admission.py): cancelling ones
        first (they only write their files), then overdue ones (their actor expires
        them), then round-robin over tenants, oldest first."""
        tenants = [t for t in (self.model.batches.tenant(i) for i in running) if t is not None]
        return admission_order(self.waiting(running), tenants, self._now())

    def admissions(self, running: Collection[str], skip: Collection[str] = ()) -> list[str]:
        """The batches to start now, in admission order, as many as free slots allow;
        `skip` holds those backing off after a crash."""
        free = max(0, self.config.max_active_batches - len(running))
        ready = [b.id for b in self.queue(running) if b.id not in skip]
        return ready[:free]

    def give_up(self, batch_id: str, message: str) -> None:
        """A batch whose actor keeps failing ends as failed. No actor owns the stream
        now (the caller let it go), so the coordinator writes the end."""
        self.catch_up()
        state = self.model.batches.get(batch_id)
        if state is None:
            return
        events = decider.decide(state, decider.GiveUp(at=self._now(), message=message))
        self._append(ev.batch_stream(batch_id), events, state.version)

    def forget_old(self) -> None:
        """Bound memory by work, not history: expired key claims go, and batches terminal
        for longer than the hot window leave memory (GET loads them from the log)."""
        now = self.clock()
        self.model.prune_claims(now, self.config.idempotency_retention_s)
        self.model.batches.evict(now, self.config.hot_batch_window_s)

    def expire_queued(self, running: Collection[str]) -> list[str]:
        """A batch that never got a slot before its window ended expires here.

        Only unvalidated ones: they have no lines to report, so no files to write. An
        overdue in_progress batch is admitted first instead, and its actor expires it.
        """
        self.catch_up()
        now = self._now()
        expired = []
        for state in self.waiting(running):
            if state.status == "validating" and now >= state.expires_at:
                expire = decider.Expire(at=now, output_file_id=None, error_file_id=None)
                events = decider.decide(state, expire)
                self._append(ev.batch_stream(state.id), events, state.version)
                expired.append(state.id)
        return expired

    def _wire(
        self,
        state: decider.BatchState,
        running: Collection[str],
        queue: list[str] | None = None,
    ) -> dict[str, Any]:
        """The Batch, plus `queue_position` (an extension) while it waits for a slot."""
        wire = batch_to_wire(state)
        if state.status in decider.ACTIVE_STATUSES and state.id not in running:
            waiting = queue if queue is not None else [b.id for b in self.queue(running)]
            wire["queue_position"] = waiting.index(state.id) + 1
        return wire

    def health(self, running: Collection[str]) -> dict[str, Any]:
        if self.fault is not None:
            return {"status": "faulted", "error": refusals.storage_message(self.fault)}
        return {
            "status": "ok",
            "position": self.model.position,
            "batches": len(self.model.batches),
            "running": sorted(running),
        }


def page(data: list[dict[str, Any]], has_more: bool) -> Page:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
