"""The read side: a projection of the whole event log into batches, files and idempotency claims.

GET and list are answered from here, never by waking a batch actor. The coordinator
feeds it every event in global order (`EventStore.read_all`), so it is rebuilt from
the log at start and kept fresh by catching up before each read.
Pure: no I/O, so it can be tested and replayed without starting anything.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from typing import Any

from batches.domain import decider
from batches.domain.decider import BatchState
from batches.domain.idempotency import IdempotencyIndex

BATCH_PREFIX = "batch-"
FILES_STREAM = "files"
COORDINATOR_STREAM = "coordinator"


def batch_stream(batch_id: str) -> str:
    return BATCH_PREFIX + batch_id


@dataclass
class ReadModel:
    batches: dict[str, BatchState] = field(default_factory=dict)
    # (created_at, position) per batch id, kept sorted, so lists page without sorting.
    _batch_keys: list[tuple[int, int, str]] = field(default_factory=list)
    _key_of: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch_id -> claim data
    idempotency: IdempotencyIndex = field(default_factory=IdempotencyIndex)
    position: int = 0
    # (expires_at, file_id) of files that expire, a heap: due ones found without a scan
    _expiry: list[tuple[int, str]] = field(default_factory=list)
    # the keys of batches that need an actor (decider.ACTIVE_STATUSES), sorted: admission
    # and queue positions look at these, not at every batch ever made
    _active: list[tuple[int, int, str]] = field(default_factory=list)

    def apply(self, stream_id: str, type_: str, data: dict[str, Any], position: int) -> None:
        if stream_id.startswith(BATCH_PREFIX):
            batch_id = stream_id[len(BATCH_PREFIX) :]
            previous = self.batches.get(batch_id)
            state = self.batches[batch_id] = decider.evolve(previous, type_, data)
            if previous is None:
                key = (int(data["created_at"]), position, batch_id)
                self._key_of[batch_id] = key
                bisect.insort(self._batch_keys, key)
            was = previous is not None and previous.status in decider.ACTIVE_STATUSES
            now = state is not None and state.status in decider.ACTIVE_STATUSES
            if now != was:
                key = self._key_of[batch_id]
                if now:
                    bisect.insort(self._active, key)
                else:
                    del self._active[bisect.bisect_left(self._active, key)]
        elif stream_id == FILES_STREAM:
            if type_ == "FileUploaded":
                self.files[data["file_id"]] = data
                if data.get("expires_at") is not None:
                    heapq.heappush(self._expiry, (int(data["expires_at"]), data["file_id"]))
            elif type_ in ("FileDeleted", "FileExpired"):
                self.files.pop(data["file_id"], None)
        elif stream_id == COORDINATOR_STREAM and type_ == "IdempotencyKeyClaimed":
            self.claims[data["batch_id"]] = data
            self.idempotency.claim(
                data["tenant"], data["key"], data["digest"], data["batch_id"], data["at"]
            )
        self.position = max(self.position, position)

    # -- queries ---------------------------------------------------------------

    def batch(self, tenant: str, batch_id: str) -> BatchState | None:
        state = self.batches.get(batch_id)
        return state if state is not None and state.tenant == tenant else None

    def list_batches(
        self, tenant: str, after: str | None, limit: int
    ) -> tuple[list[BatchState], bool]:
        """Newest first; `after` is the id of the last batch of the previous page."""
        keys = self._batch_keys
        end = len(keys)
        if after is not None:
            anchor = self.batches.get(after)
            if anchor is None or anchor.tenant != tenant:
                return [], False
            end = bisect.bisect_left(keys, self._key_of[after])
        page: list[BatchState] = []
        i = end - 1
        while i >= 0 and len(page) <= limit:
            state = self.batches[keys[i][2]]
            if state.tenant == tenant:
                page.append(state)
            i -= 1
        return page[:limit], len(page) > limit

    def file(self, tenant: str, file_id: str) -> dict[str, Any] | None:
        record = self.files.get(file_id)
        return record if record is not None and record["tenant"] == tenant else None

    def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool]:
        # `files` keeps log order, which is creation order even within one second.
        records = [
            f
            for f in self.files.values()
            if f["tenant"] == tenant and (purpose is None or f["purpose"] == purpose)
        ]
        if order == "desc":
            records.reverse()
        if after is not None:
            ids = [f["file_id"] for f in records]
            records = records[ids.index(after) + 1 :] if after in ids else []
        return records[:limit], len(records) > limit

    def due_files(self, now: int, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Files whose ``expires_at`` has passed, oldest first, less those in ``keep`` (the
        inputs of running batches: they expire once their batch is done)."""
        due: list[tuple[int, str]] = []
        kept: list[tuple[int, str]] = []
        while self._expiry and self._expiry[0][0] <= now:
            entry = heapq.heappop(self._expiry)
            record = self.files.get(entry[1])
            if record is None or record.get("expires_at") != entry[0]:
                continue  # deleted, or uploaded again since
            (kept if entry[1] in keep else due).append(entry)
        for entry in kept + due:
            heapq.heappush(self._expiry, entry)  # back until the event removes the file
        return [fid for _, fid in due]

    def active_batches(self) -> list[BatchState]:
        """Batches that need an actor, oldest first (the admission order)."""
        return [self.batches[k[2]] for k in self._active]

    def prune_claims(self, now: float, retention_s: float) -> int:
        """Forget idempotency claims past their retention whose batch exists (a claim
        without its batch is a create to finish): memory stays bounded. Lookups ignore such
        claims anyway, so answers do not change. Returns how many were dropped."""
        stale = [
            batch_id
            for batch_id, claim in self.claims.items()
            if now - claim["at"] >= retention_s and batch_id in self.batches
        ]
        if stale:
            for batch_id in stale:
                del self.claims[batch_id]
            self.idempotency = IdempotencyIndex()
            for c in self.claims.values():  # in log order, as they were folded
                self.idempotency.claim(c["tenant"], c["key"], c["digest"], c["batch_id"], c["at"])
        return len(stale)
