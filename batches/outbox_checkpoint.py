"""The webhook sender's checkpoint: its ``Outbox`` at a log position, saved atomically,
so a start restores it and folds only the events after that position (docs/webhooks.md).

Stored as ``<data_dir>/checkpoints/webhook-outbox.snap`` in the event log's snapshot
format (CRC'd, written to a temporary file, fsynced, renamed into place, directory
fsynced), the log position as its version, like the coordinator's read model
(batches/checkpoint.py). Missing, damaged, of another schema or ahead of the log: it is
ignored and the outbox is folded from the whole log. A cache, never the truth: the
outbox is a pure fold, so the checkpoint plus the events after it give what the whole
log gives, and deliveries are decided by the log's events, never by the checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from batches import checkpoint
from batches.domain.webhooks import Outbox
from eventlog.snapshots import read_snapshot, write_snapshot

log = logging.getLogger("batchlog.webhooks")

NAME = "webhook-outbox"
EVERY_S = 10.0  # at most this often: a start folds at most ~10 s of events more


class OutboxCheckpoint:
    def __init__(self, data_dir: Path, *, fsync: bool = True, every_s: float = EVERY_S) -> None:
        self.directory = data_dir / checkpoint.DIR
        self.fsync = fsync
        self.every_s = every_s
        self.saved = 0  # the position of the last checkpoint written or restored
        self._saved_at = float("-inf")

    def load(self, head: int) -> Outbox | None:
        snap = read_snapshot(self.directory, NAME)
        if snap is None:
            return None
        if snap.version > head:
            log.warning(
                "ignoring the outbox checkpoint at %d: the log ends at %d", snap.version, head
            )
            return None
        outbox = Outbox.from_dict(snap.state)
        if outbox is None or outbox.position != snap.version:
            return None
        self.saved = outbox.position
        return outbox

    async def save(self, outbox: Outbox, *, force: bool = False) -> bool:
        """Taken on the caller's event loop (nothing changes the outbox meanwhile),
        written from a thread; at most every ``every_s`` unless forced."""
        now = time.monotonic()
        if outbox.position <= self.saved or (not force and now - self._saved_at < self.every_s):
            return False
        position, state = outbox.position, outbox.to_dict()
        await asyncio.to_thread(self._write, position, state)
        self.saved, self._saved_at = position, now
        return True

    def _write(self, position: int, state: dict[str, object]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_snapshot(self.directory, NAME, position, state, fsync=self.fsync)
