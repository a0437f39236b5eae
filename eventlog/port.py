"""EventLog: the port every event log backend offers (the file store, PostgreSQL).

Code above the event log (batches, actors, entry points) should type against this
Protocol, not a concrete store, so the backend can be chosen by configuration. The
contract tests (tests/eventlog/test_eventlog_contract.py) run against every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .model import NewEvent, RecordedEvent, Snapshot


@runtime_checkable
class EventLog(Protocol):
    """An append-only store of event streams with a global order (see docs/eventlog.md)."""

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        """Append ``events`` as one atomic group; returns the stream's new version.

        ``expected_version`` must be the stream's current version (0 for a new stream), else
        ``WrongExpectedVersion`` and nothing is written. Returns once the group is durable.
        """
        ...

    def read(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with from_version <= version <= to_version, at most ``limit``."""
        ...

    def version(self, stream_id: str) -> int:
        """The stream's current version; 0 for an unknown stream."""
        ...

    def streams(self, prefix: str = "") -> list[str]:
        """The ids of all streams that start with ``prefix``, sorted."""
        ...

    def head(self) -> int:
        """The highest global position a reader may see (no gap below it ever fills in)."""
        ...

    def read_all(self, after: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        """Events of all streams with position > ``after``, ascending, at most ``limit``.

        Positions are contiguous from 1; a reader never sees a gap that fills in later.
        """
        ...

    def save_snapshot(self, stream_id: str, version: int, state: dict[str, Any]) -> None:
        """Store ``state`` as the fold of the stream's events 1..version (replaces the old)."""
        ...

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's latest snapshot; None if there is none (or it is unusable)."""
        ...

    def close(self) -> None:
        """Release the store's resources; later calls raise ``EventLogError``. Idempotent."""
        ...

    def __enter__(self) -> EventLog: ...

    def __exit__(self, *exc: object) -> None: ...


if TYPE_CHECKING:  # mypy proves each backend matches the port (no runtime import cycle)
    from .postgres import PostgresEventStore
    from .store import EventStore

    def _file_store_is_an_event_log(store: EventStore) -> EventLog:
        return store

    def _postgres_store_is_an_event_log(store: PostgresEventStore) -> EventLog:
        return store
