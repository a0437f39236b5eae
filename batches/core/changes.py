"""Which batches changed lately, for façades that answer GETs from a copy of their own.

A façade (`actors/gateway.py`) keeps the Batch objects of the batches that change and
asks the coordinator, one call at a time, "what changed after cursor (token, seq)?"
(docs/read-cache.md). The journal is that cursor's side: every change the core sees gets
the next `seq` — an event on a batch stream (whoever wrote it: the core, a batch actor)
and a change the log does not show (a batch entering or leaving the running set, which
moves its `queue_position`). `token` names this journal: a restarted coordinator has a
new one, so a cursor from before cannot be read against it. Memory is bounded: past
`capacity` entries the oldest go, and a cursor older than what is kept is told to start
again. No I/O.
"""

from __future__ import annotations

import uuid
from collections import deque

CAPACITY = 50_000


class ChangeJournal:
    def __init__(self, capacity: int = CAPACITY, token: str | None = None) -> None:
        self.token = token or uuid.uuid4().hex
        self.seq = 0
        self.floor = 0  # changes at or below it are no longer listed
        self._entries: deque[tuple[int, str]] = deque(maxlen=capacity)

    def note(self, batch_id: str) -> None:
        self.seq += 1
        if self._entries and self._entries[-1][1] == batch_id:
            self._entries[-1] = (self.seq, batch_id)  # one entry per run of changes
            return
        if len(self._entries) == self._entries.maxlen:
            self.floor = self._entries[0][0]
        self._entries.append((self.seq, batch_id))

    def readable(self, token: str | None, after: int) -> bool:
        """Whether `since(token, after)` can list the changes after that cursor."""
        return token == self.token and self.floor <= after <= self.seq

    def since(self, token: str | None, after: int) -> set[str] | None:
        """The batches changed after the cursor; None when that cannot be told (another
        journal's cursor, or one older than what is kept): the reader starts again."""
        if not self.readable(token, after):
            return None
        changed: set[str] = set()
        for seq, batch_id in reversed(self._entries):
            if seq <= after:
                break
            changed.add(batch_id)
        return changed
