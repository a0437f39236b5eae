"""Which batches run, who owns their streams, and what happens when a run ends (no Ray).

Given a `Launch` port (start a batch's run somewhere and return a handle: the coordinator
actor starts a Ray actor; tests record the call), this keeps the running set (batch id ->
handle, opaque here), the restart budget and the rules around them: admission in the
core's order into free slots, skipping batches backing off after a crash; a create is
admitted at once and answered as it stands then; a run that failed is counted (a failed
log write is the store's fault and is not), and past the budget the batch ends `failed`;
the once-a-second round repairs the log and expires queued batches and files.

The running set is also the hand-over of each batch stream (docs/architecture.md): a
batch in it is written by its actor only; one not in it by the core only. So a cancel
goes to whichever owns the stream (`cancel`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from batches.core.coordination import Coordination
from batches.core.ports import Clock, Page
from batches.core.restarts import RestartBudget
from batches.domain.errors import DomainError

log = logging.getLogger("batchlog.core")

Launch = Callable[[str], Any]
"""Start the run of batch `batch_id` and return its handle; the run reports its end
with `Supervision.ended` once whoever ran it has let it go."""


class Supervision:
    def __init__(
        self,
        core: Coordination,
        budget: RestartBudget,
        launch: Launch,
        monotonic: Clock = time.monotonic,
        settle: Callable[[int], None] = lambda running: None,
    ) -> None:
        """`settle(running)` is told how many batches run after each admission round
        (the coordinator's launcher keeps spare actors to match)."""
        self.core = core
        self.budget = budget
        self.launch = launch
        self.monotonic = monotonic
        self.settle = settle
        self.running: dict[str, Any] = {}  # batch id -> its run's handle

    def start(self, orphan_grace_s: float) -> dict[str, Any]:
        """Once per coordinator incarnation, before the first admission: finish creates a
        crash cut in half, remove content files no event names."""
        self.core.repair()
        removed = self.core.sweep_orphans(orphan_grace_s)
        if removed:
            log.info("removed %d content files no event names: %s", len(removed), removed[:20])
        return {
            "batches": len(self.core.model.batches),
            "active": len(self.core.model.active_batches()),
        }

    def admit(self) -> list[str]:
        """Launch the batches to run now (the core's admission order, free slots), less
        those backing off after a crash. From its launch until `ended`, a batch's actor
        is the one writer of its stream."""
        skip = self.budget.backing_off(self.monotonic())
        admitted = self.core.admissions(self.running, skip)
        for batch_id in admitted:
            self.running[batch_id] = self.launch(batch_id)
            self.core.changes.note(batch_id)  # no longer waiting: no queue_position
        self.settle(len(self.running))
        return admitted

    def adopt(self, batch_id: str, handle: Any) -> None:
        """A run a previous coordinator incarnation launched, still going: it counts as
        running (its actor owns the stream) and reports its end with `ended`."""
        self.running[batch_id] = handle
        self.core.changes.note(batch_id)

    def ended(self, batch_id: str, error: BaseException | None = None) -> str | None:
        """The batch's run returned (`error` None) or raised `error`, and its actor was
        let go: its stream is the core's again, and its slot goes to the next batch.
        Returns why the batch was given up, if it was."""
        self.running.pop(batch_id, None)
        self.core.changes.note(batch_id)  # back in the queue, unless its run ended it
        give_up = None
        if error is None:
            self.budget.succeeded(batch_id)
        else:
            # A failed log write (disk full) is the store's fault: it does not count. (Ray
            # wraps the actor's exception; its repr names the cause.)
            storage = "StoreFailed" in repr(error) or self.core.fault is not None
            message = f"{type(error).__name__}: {error}"
            give_up = self.budget.failed(batch_id, message, self.monotonic(), storage)
            log.error("batch %s failed (%s); given up: %s", batch_id, message, bool(give_up))
        if give_up is not None:
            try:
                self.core.give_up(batch_id, give_up)
            except DomainError:
                log.exception("could not record that batch %s failed", batch_id)
        self.core.catch_up()
        self.admit()
        return give_up

    def round(self) -> bool:
        """One supervision round (about a second apart): False while the log failed a
        write and cannot be reopened yet; else queued batches and files past their time
        expire, and what fits is admitted."""
        if not self.core.recover():
            return False
        self.core.expire_queued(self.running)
        self.core.expire_files()
        self.admit()
        return True

    # -- the use cases that depend on what runs --------------------------------------

    def create_batch(
        self,
        tenant: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        batch_id: str | None = None,
    ) -> dict[str, Any]:
        """`Coordination.create_batch`, admitted at once when a slot is free, and answered
        as it stands then (no `queue_position` once it runs)."""
        result = self.core.create_batch(tenant, params, idempotency_key, self.running, batch_id)
        if result["created"]:
            self.admit()
            result["batch"] = self.core.get_batch(tenant, result["batch"]["id"], self.running)
        return result

    def cancel(self, tenant: str, batch_id: str) -> Any | None:
        """Cancel a batch through the owner of its stream: the core writes the cancel of
        a batch waiting for a slot (then it is admitted first, to write its files); for a
        running one its handle comes back, and the caller asks the actor."""
        self.core.batch_state(tenant, batch_id)  # 404 for another tenant's batch
        handle = self.running.get(batch_id)
        if handle is None:
            self.core.cancel_queued(tenant, batch_id, self.running)
            self.admit()
        return handle

    def get_batch(self, tenant: str, batch_id: str) -> dict[str, Any]:
        return self.core.get_batch(tenant, batch_id, self.running)

    def list_batches(self, tenant: str, after: str | None, limit: int) -> Page:
        return self.core.list_batches(tenant, after, limit, self.running)

    def changed(self, token: str | None, after: int) -> bool:
        """Whether `batch_changes(token, after)` has anything to say now."""
        journal = self.core.changes
        return not journal.readable(token, after) or journal.seq > after or self.core.behind()

    def batch_changes(self, token: str | None, after: int) -> dict[str, Any]:
        return self.core.batch_changes(token, after, self.running)

    def health(self) -> dict[str, Any]:
        return self.core.health(self.running)
