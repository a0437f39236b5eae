"""The exceptions the event log raises. Every one derives from EventLogError."""

from __future__ import annotations


class EventLogError(Exception):
    """Base class of every event log error."""


class WrongExpectedVersion(EventLogError):
    """An append's expected version is not the stream's current version; nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"wrong expected version for stream {stream_id!r}: expected {expected}, actual {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class CorruptLog(EventLogError):
    """The log holds a damaged frame that recovery may not repair (not a torn tail)."""

    def __init__(self, file: str, offset: int, reason: str) -> None:
        super().__init__(f"corrupt event log: {file} at byte offset {offset}: {reason}")
        self.file = file
        self.offset = offset
        self.reason = reason


class StoreFailed(EventLogError):
    """The store failed closed (a write or fsync error); open it again to go on."""


class InvalidStreamId(EventLogError, ValueError):
    """A stream id outside [A-Za-z0-9_.:-]{1,200}."""


class SerializationError(EventLogError, ValueError):
    """Event data (or a snapshot state) that cannot be stored as JSON."""


class StoreUnavailable(EventLogError):
    """The store's server could not be reached (or the connection broke mid-call).

    For an append: it may or may not have been stored; retrying with the same expected
    version is safe (a stored first attempt makes the retry WrongExpectedVersion).
    """
