"""A façade's copies of Batch objects, so a GET of a changing batch needs no Ray call.

The façade asks the coordinator, one request at a time, for the batches changed after
its cursor (`Coordination.batch_changes`, docs/read-cache.md) and keeps what comes back
here; `get` answers from the copy when it has one for that tenant, else the caller asks
the coordinator. Only batches that change while the façade follows are copied (a running
one changes with every request done), never one waiting for a slot (its queue position
moves without an event), at most `capacity` of them (least recently used go first).

Read your own writes: after a create or cancel through this façade, `written(id)` drops
the copy and refuses to take one from any change request issued before the write
returned (it may have been answered before the write): requests are numbered (`round`),
and the batch is read through from the coordinator until a later one has been answered.
A write through another door (another façade, a Ray driver) shows here one change
request later: these copies are as fresh as the last answer, typically tens of ms.
No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

CAPACITY = 10_000


class BatchCopies:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.token: str | None = None  # None: not following (every GET reads through)
        self.seq = 0
        self.round = 0  # the number of the last change request issued
        self._copies: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._pinned: dict[str, int] = {}  # batch id -> first round to trust for it

    def cursor(self) -> tuple[str | None, int]:
        return self.token, self.seq

    def next_round(self) -> int:
        """Number the change request about to be issued."""
        self.round += 1
        return self.round

    def get(self, tenant: str, batch_id: str) -> dict[str, Any] | None:
        if self.token is None or batch_id in self._pinned:
            return None
        hit = self._copies.get(batch_id)
        if hit is None or hit[0] != tenant:
            return None  # (another tenant's: the coordinator answers 404)
        self._copies.move_to_end(batch_id)
        return dict(hit[1])

    def written(self, batch_id: str) -> None:
        """A write to the batch through this façade has returned."""
        self._copies.pop(batch_id, None)
        if self.token is not None:  # (else the answer in flight, if any, is a reset: empty)
            self._pinned[batch_id] = self.round + 1

    def apply(self, round_: int, answer: dict[str, Any]) -> None:
        """Take the answer to change request `round_` (requests are answered in order)."""
        if answer["reset"]:
            self._copies.clear()
        for change in answer["batches"]:
            batch_id = change["id"]
            if self._pinned.get(batch_id, 0) > round_:
                continue  # asked before a write of ours returned: maybe older than it
            if change["batch"] is None:
                self._copies.pop(batch_id, None)
                continue
            self._copies[batch_id] = (change["tenant"], change["batch"])
            self._copies.move_to_end(batch_id)
            if len(self._copies) > self.capacity:
                self._copies.popitem(last=False)
        if self._pinned:
            self._pinned = {b: r for b, r in self._pinned.items() if r > round_}
        self.token, self.seq = answer["token"], answer["seq"]

    def lost(self) -> None:
        """No change request is in flight and the next starts over (the coordinator could
        not be asked, or nobody polls): copy nothing until it answers again."""
        self._copies.clear()
        self._pinned.clear()
        self.token, self.seq = None, 0

    def __len__(self) -> int:
        return len(self._copies)
