"""The read side: a projection of the whole event log into batches, files and idempotency claims.

GET and list are answered from here, never by waking a batch actor. The application
core (`batches.core`) feeds it every event in global order (`EventLog.read_all`), so it is
restored from its checkpoint at start and kept fresh by catching up before each read.

Memory holds what the work at hand needs: batches not long terminal (hot), the active
ones' admission index, live idempotency claims, the versions of the streams the core
writes. What grows with history (every file record, every batch's tenant and list key)
is in the catalog (`batches/catalogstore.py`: SQLite, on disk for the coordinator, in
memory for tests), fed from the same events. No other I/O here.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from batches.catalogstore import BatchKey, CatalogStore
from batches.domain import decider
from batches.domain import events as ev
from batches.domain.decider import BatchState
from batches.domain.idempotency import IdempotencyIndex

BATCH_PREFIX = ev.BATCH_STREAM_PREFIX
# The streams the core appends to: their versions are what its appends expect.
CORE_STREAMS = (ev.FILES_STREAM, ev.COORDINATOR_STREAM)

_COLD_CACHE = 256  # cold batches loaded lately, kept for repeated GETs


class BatchTable(MutableMapping[str, BatchState]):
    """The batches by id: *hot* ones held in memory, *cold* ones (terminal for longer than
    a window: see ``evict``) known to the catalog only and loaded on demand by ``loader``
    (the coordinator's: the stream's snapshot + tail). ``in``, ``len``, ``[id]`` and
    ``get`` see both; iteration sees every id (loading each value it is asked for)."""

    def __init__(self, catalog: CatalogStore) -> None:
        self.hot: dict[str, BatchState] = {}
        self.catalog = catalog
        self.loader: Callable[[str], BatchState | None] | None = None
        self._cache: OrderedDict[str, BatchState] = OrderedDict()

    def __getitem__(self, batch_id: str) -> BatchState:
        state = self.hot.get(batch_id)
        if state is not None:
            return state
        state = self._cache.get(batch_id)
        if state is not None:
            self._cache.move_to_end(batch_id)
            return state
        if self.catalog.batch_key(batch_id) is None:
            raise KeyError(batch_id)
        if self.loader is None:
            raise LookupError(f"batch {batch_id} is not in memory and there is no loader")
        state = self.loader(batch_id)
        if state is None:
            raise LookupError(f"batch {batch_id} could not be loaded from the log")
        self._cache[batch_id] = state
        while len(self._cache) > _COLD_CACHE:
            self._cache.popitem(last=False)
        return state

    def __setitem__(self, batch_id: str, state: BatchState) -> None:
        self._cache.pop(batch_id, None)
        self.hot[batch_id] = state

    def __delitem__(self, batch_id: str) -> None:
        if self.hot.pop(batch_id, None) is None:
            raise KeyError(batch_id)  # (cold ones cannot be deleted: the log keeps them)
        self._cache.pop(batch_id, None)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self.hot or (
            isinstance(batch_id, str) and self.catalog.batch_key(batch_id) is not None
        )

    def __iter__(self) -> Iterator[str]:
        yield from self.catalog.all_batch_ids()

    def __len__(self) -> int:
        return self.catalog.batch_count

    def tenant(self, batch_id: str) -> str | None:
        state = self.hot.get(batch_id)
        if state is not None:
            return state.tenant
        key = self.catalog.batch_key(batch_id)
        return key[0] if key is not None else None

    def cold(self) -> set[str]:
        """The ids of batches out of memory (a scan of the catalog: for tests and tools)."""
        return {b for b in self.catalog.all_batch_ids() if b not in self.hot}

    def evict(self, now: float, window_s: float) -> int:
        """Move batches terminal for at least ``window_s`` out of memory; how many."""
        gone = [
            batch_id
            for batch_id, state in self.hot.items()
            if state.status in decider.TERMINAL_STATUSES and now - _ended_at(state) >= window_s
        ]
        for batch_id in gone:
            del self.hot[batch_id]
        return len(gone)


def _ended_at(state: BatchState) -> int:
    ends = (state.completed_at, state.failed_at, state.expired_at, state.cancelled_at)
    return max((t for t in ends if t is not None), default=state.created_at)


class FileTable(Mapping[str, dict[str, Any]]):
    """Every live file's record by id, read from the catalog (nothing held in memory)."""

    def __init__(self, catalog: CatalogStore) -> None:
        self.catalog = catalog

    def __getitem__(self, file_id: str) -> dict[str, Any]:
        record = self.catalog.file(file_id)
        if record is None:
            raise KeyError(file_id)
        return record

    def __contains__(self, file_id: object) -> bool:
        return isinstance(file_id, str) and self.catalog.file(file_id) is not None

    def __iter__(self) -> Iterator[str]:
        yield from self.catalog.file_ids()

    def __len__(self) -> int:
        return self.catalog.file_count()


class ReadModel:
    def __init__(self, catalog: CatalogStore | None = None) -> None:
        self.catalog = catalog if catalog is not None else CatalogStore()
        self.batches = BatchTable(self.catalog)
        self.files = FileTable(self.catalog)
        self.claims: dict[str, dict[str, Any]] = {}  # batch_id -> claim data
        self.idempotency = IdempotencyIndex()
        self.position = 0
        # The list keys of batches that need an actor (decider.ACTIVE_STATUSES), sorted:
        # admission and queue positions look at these, not at every batch ever made.
        self.active: list[BatchKey] = []
        self._active_key: dict[str, BatchKey] = {}
        # The version of each stream the core writes: it appends at the version it decided on.
        self.versions: dict[str, int] = {}

    def apply(
        self, stream_id: str, type_: str, data: dict[str, Any], position: int, version: int = 0
    ) -> None:
        """Fold one event (in global order). The catalog takes it only if it has not yet
        (it may be ahead of a checkpoint this model was restored from)."""
        fresh = self.catalog.advance(position)
        if version and stream_id in CORE_STREAMS:
            self.versions[stream_id] = version
        if stream_id.startswith(BATCH_PREFIX):
            batch_id = stream_id[len(BATCH_PREFIX) :]
            created = type_ == ev.BATCH_CREATED  # always the first: never on a loaded state
            previous = None if created else self.batches.get(batch_id)
            state = self.batches[batch_id] = decider.evolve(previous, type_, data)
            if created and fresh:
                self.catalog.add_batch(batch_id, data["tenant"], int(data["created_at"]), position)
            was = previous is not None and previous.status in decider.ACTIVE_STATUSES
            now = state is not None and state.status in decider.ACTIVE_STATUSES
            if now and not was:
                key: BatchKey = (
                    (int(data["created_at"]), position, batch_id)
                    if created
                    else self._key(batch_id)
                )
                self._active_key[batch_id] = key
                bisect.insort(self.active, key)
            elif was and not now:
                key = self._active_key.pop(batch_id)
                del self.active[bisect.bisect_left(self.active, key)]
        elif stream_id == ev.FILES_STREAM and fresh:
            if type_ == ev.FILE_UPLOADED:
                self.catalog.put_file(data, position)
            elif type_ in (ev.FILE_DELETED, ev.FILE_EXPIRED):
                self.catalog.drop_file(data["file_id"])
        elif stream_id == ev.COORDINATOR_STREAM and type_ == ev.IDEMPOTENCY_KEY_CLAIMED:
            self.claims[data["batch_id"]] = data
            self.idempotency.claim(
                data["tenant"], data["key"], data["digest"], data["batch_id"], data["at"]
            )
        self.position = max(self.position, position)

    def _key(self, batch_id: str) -> BatchKey:
        found = self.catalog.batch_key(batch_id)
        if found is None:
            raise KeyError(batch_id)
        return found[1]

    # -- queries ---------------------------------------------------------------

    def batch(self, tenant: str, batch_id: str) -> BatchState | None:
        if self.batches.tenant(batch_id) != tenant:
            return None
        return self.batches.get(batch_id)

    def list_batches(
        self, tenant: str, after: str | None, limit: int
    ) -> tuple[list[BatchState], bool]:
        """Newest first; `after` is the id of the last batch of the previous page."""
        before = None
        if after is not None:
            found = self.catalog.batch_key(after)
            if found is None or found[0] != tenant:
                return [], False
            before = found[1]
        ids = self.catalog.batch_ids(tenant, before, limit + 1)
        return [self.batches[i] for i in ids[:limit]], len(ids) > limit

    def file(self, tenant: str, file_id: str) -> dict[str, Any] | None:
        record = self.catalog.file(file_id)
        return record if record is not None and record["tenant"] == tenant else None

    def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool]:
        return self.catalog.list_files(tenant, purpose, after, limit, order)

    def stored_bytes(self, tenant: str, purpose: str) -> int:
        return self.catalog.stored_bytes(tenant, purpose)

    def due_files(self, now: int, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Files whose ``expires_at`` has passed, oldest first, less those in ``keep`` (the
        inputs of running batches: they expire once their batch is done)."""
        return [f for f in self.catalog.due_files(now) if f not in keep]

    def active_batches(self) -> list[BatchState]:
        """Batches that need an actor, oldest first (the admission order)."""
        return [self.batches[k[2]] for k in self.active]

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
