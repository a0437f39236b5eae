"""The read side: a projection of the whole event log into batches, files and idempotency claims.

GET and list are answered from here, never by waking a batch actor. The application
core (`batches.core`) feeds it every event in global order (`EventLog.read_all`), so it is rebuilt from
the log at start and kept fresh by catching up before each read.
Pure: no I/O, so it can be tested and replayed without starting anything.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from batches.domain import decider
from batches.domain import events as ev
from batches.domain.decider import BatchState
from batches.domain.idempotency import IdempotencyIndex

BATCH_PREFIX = ev.BATCH_STREAM_PREFIX


_COLD_CACHE = 256  # cold batches loaded lately, kept for repeated GETs


class BatchTable(MutableMapping[str, BatchState]):
    """The batches by id: *hot* ones held in memory, *cold* ones (terminal for longer than
    a window: see ``evict``) held as their tenant only and loaded on demand by ``loader``
    (the coordinator's: the stream's snapshot + tail). ``in``, ``len``, ``[id]`` and
    ``get`` see both; iteration sees both ids (loading each value it is asked for)."""

    def __init__(self) -> None:
        self.hot: dict[str, BatchState] = {}
        self.cold: dict[str, str] = {}  # batch id -> tenant
        self.loader: Callable[[str], BatchState | None] | None = None
        self._cache: OrderedDict[str, BatchState] = OrderedDict()

    def __getitem__(self, batch_id: str) -> BatchState:
        state = self.hot.get(batch_id)
        if state is not None:
            return state
        if batch_id not in self.cold:
            raise KeyError(batch_id)
        state = self._cache.get(batch_id)
        if state is None:
            if self.loader is None:
                raise LookupError(f"batch {batch_id} is not in memory and there is no loader")
            state = self.loader(batch_id)
            if state is None:
                raise LookupError(f"batch {batch_id} could not be loaded from the log")
            self._cache[batch_id] = state
            while len(self._cache) > _COLD_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(batch_id)
        return state

    def __setitem__(self, batch_id: str, state: BatchState) -> None:
        self.cold.pop(batch_id, None)
        self._cache.pop(batch_id, None)
        self.hot[batch_id] = state

    def __delitem__(self, batch_id: str) -> None:
        if self.hot.pop(batch_id, None) is None and self.cold.pop(batch_id, None) is None:
            raise KeyError(batch_id)
        self._cache.pop(batch_id, None)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self.hot or batch_id in self.cold

    def __iter__(self) -> Iterator[str]:
        yield from self.hot
        yield from self.cold

    def __len__(self) -> int:
        return len(self.hot) + len(self.cold)

    def tenant(self, batch_id: str) -> str | None:
        state = self.hot.get(batch_id)
        return state.tenant if state is not None else self.cold.get(batch_id)

    def evict(self, now: float, window_s: float) -> int:
        """Move batches terminal for at least ``window_s`` out of memory; how many."""
        gone = [
            batch_id
            for batch_id, state in self.hot.items()
            if state.status in decider.TERMINAL_STATUSES and now - _ended_at(state) >= window_s
        ]
        for batch_id in gone:
            self.cold[batch_id] = self.hot.pop(batch_id).tenant
        return len(gone)


def _ended_at(state: BatchState) -> int:
    ends = (state.completed_at, state.failed_at, state.expired_at, state.cancelled_at)
    return max((t for t in ends if t is not None), default=state.created_at)


@dataclass
class ReadModel:
    batches: BatchTable = field(default_factory=BatchTable)
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
    # The version of every stream seen: a writer appends at the version it decided on.
    versions: dict[str, int] = field(default_factory=dict)

    def apply(
        self, stream_id: str, type_: str, data: dict[str, Any], position: int, version: int = 0
    ) -> None:
        if version:
            self.versions[stream_id] = version
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
        elif stream_id == ev.FILES_STREAM:
            if type_ == ev.FILE_UPLOADED:
                self.files[data["file_id"]] = data
                if data.get("expires_at") is not None:
                    heapq.heappush(self._expiry, (int(data["expires_at"]), data["file_id"]))
            elif type_ in (ev.FILE_DELETED, ev.FILE_EXPIRED):
                self.files.pop(data["file_id"], None)
        elif stream_id == ev.COORDINATOR_STREAM and type_ == ev.IDEMPOTENCY_KEY_CLAIMED:
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
            if after not in self.batches or self.batches.tenant(after) != tenant:
                return [], False
            end = bisect.bisect_left(keys, self._key_of[after])
        page: list[BatchState] = []
        i = end - 1
        while i >= 0 and len(page) <= limit:
            batch_id = keys[i][2]
            if self.batches.tenant(batch_id) == tenant:  # (no load of cold ones skipped)
                page.append(self.batches[batch_id])
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
