"""eventlog: an append-only, multi-process event store with a DuckDB query layer.

It knows nothing about batches. See docs/eventlog.md for the on-disk format.
"""

from .errors import (
    CorruptLog,
    EventLogError,
    InvalidStreamId,
    SerializationError,
    StoreFailed,
    StoreUnavailable,
    WrongExpectedVersion,
)
from .model import NewEvent, RecordedEvent, Snapshot
from .port import EventLog
from .store import EventStore

__all__ = [
    "CorruptLog",
    "EventLog",
    "EventLogError",
    "EventStore",
    "InvalidStreamId",
    "NewEvent",
    "RecordedEvent",
    "SerializationError",
    "Snapshot",
    "StoreFailed",
    "StoreUnavailable",
    "WrongExpectedVersion",
]
