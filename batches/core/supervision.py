"""Which batches run, who owns their streams, and what happens when a run ends (no Ray).

The coordinator actor starts an actor for each batch `to_start()` names, says so
(`started`), and reports how its run ended (`ended`). This keeps the running set (batch id
-> the caller's handle, opaque here), the restart budget and the rules around them:
admission skips batches backing off after a crash; a run that failed is counted (a failed
log write is the store's fault and is not), and past the budget the batch ends `failed`;
the periodic round repairs the log, expires queued batches and files.

The running set is also the hand-over of each batch stream (docs/architecture.md): a
batch in it is written by its actor only; one not in it by the core only. So a cancel
goes to whichever owns the stream (`cancel`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from batches.core.coordination import Coordination
from batches.core.ports import Clock
from batches.core.restarts import RestartBudget
from batches.domain.errors import DomainError

log = logging.getLogger("batchlog.core")


class Supervision:
    def __init__(
        self, core: Coordination, budget: RestartBudget, monotonic: Clock = time.monotonic
    ) -> None:
        self.core = core
        self.budget = budget
        self.monotonic = monotonic
        self.running: dict[str, Any] = {}  # batch id -> its actor's handle

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

    def to_start(self) -> list[str]:
        """The batches to start an actor for now (the core's admission order, free slots),
        less those backing off after a crash. The caller calls `started` for each."""
        skip = self.budget.backing_off(self.monotonic())
        return self.core.admissions(self.running, skip)

    def started(self, batch_id: str, handle: Any) -> None:
        """From here until `ended`, the batch's actor is the one writer of its stream."""
        self.running[batch_id] = handle

    def ended(self, batch_id: str, error: BaseException | None = None) -> str | None:
        """The batch's run returned (`error` None) or raised `error`, and its actor was
        let go: its stream is the core's again. Returns why the batch was given up, if."""
        self.running.pop(batch_id, None)
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
        return give_up

    def cancel(self, tenant: str, batch_id: str) -> Any | None:
        """Cancel a batch through the owner of its stream: the core writes the cancel of
        a batch waiting for a slot (and it is admitted first, to write its files); for a
        running one the actor's handle comes back, and the caller asks the actor."""
        self.core.batch_state(tenant, batch_id)  # 404 for another tenant's batch
        handle = self.running.get(batch_id)
        if handle is None:
            self.core.cancel_queued(tenant, batch_id, self.running)
        return handle

    def round(self) -> bool:
        """One supervision round (about a second apart): False while the log failed a
        write and cannot be reopened yet; else queued batches and files past their time
        expire."""
        if not self.core.recover():
            return False
        self.core.expire_queued(self.running)
        self.core.expire_files()
        return True
