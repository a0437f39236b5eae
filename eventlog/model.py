"""The value types of the event log: what goes in, what comes out."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidStreamId

_STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def check_stream_id(stream_id: str) -> str:
    """Return ``stream_id`` if it matches ``[A-Za-z0-9_.:-]{1,200}``, else raise InvalidStreamId."""
    if not isinstance(stream_id, str) or _STREAM_ID.fullmatch(stream_id) is None:
        raise InvalidStreamId(
            f"invalid stream id {stream_id!r}: want 1-200 characters from [A-Za-z0-9_.:-]"
        )
    return stream_id


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: a type name, a JSON object, optional metadata."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its stream, version (1..n per stream) and global position."""

    stream_id: str
    version: int
    type: str
    data: dict[str, Any]
    recorded_at: float  # unix seconds, set by the store at commit
    position: int  # global order, strictly increasing from 1
    event_id: str  # uuid4 hex
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A stream's folded state as of ``version``."""

    stream_id: str
    version: int
    state: dict[str, Any]


# Replay builds millions of RecordedEvents, and a frozen dataclass's __init__ sets each field
# through object.__setattr__ (about 1.3 us per event here, more than decoding the JSON). A
# mutable twin with the very same slots is built with plain stores and then relabelled as a
# RecordedEvent (same layout, so CPython allows the __class__ assignment): about 0.5 us. The
# result is an ordinary, frozen RecordedEvent.
class _MutableRecordedEvent:
    __slots__ = tuple(f.name for f in fields(RecordedEvent))

    def __init__(
        self,
        stream_id: str,
        version: int,
        type: str,
        data: dict[str, Any],
        recorded_at: float,
        position: int,
        event_id: str,
        metadata: dict[str, Any],
    ) -> None:
        self.stream_id = stream_id
        self.version = version
        self.type = type
        self.data = data
        self.recorded_at = recorded_at
        self.position = position
        self.event_id = event_id
        self.metadata = metadata


def _fast_recorded(
    stream_id: str,
    version: int,
    type: str,
    data: dict[str, Any],
    recorded_at: float,
    position: int,
    event_id: str,
    metadata: dict[str, Any],
) -> RecordedEvent:
    ev: Any = _MutableRecordedEvent(
        stream_id, version, type, data, recorded_at, position, event_id, metadata
    )
    ev.__class__ = RecordedEvent
    return ev  # type: ignore[no-any-return]


def _pick_constructor() -> Any:
    try:
        probe = _fast_recorded("s", 1, "t", {}, 0.0, 1, "e", {})
        if type(probe) is RecordedEvent and probe == RecordedEvent(
            "s", 1, "t", {}, 0.0, 1, "e", {}
        ):
            return _fast_recorded
    except TypeError:  # another interpreter with other layout rules
        pass
    return RecordedEvent


make_recorded = _pick_constructor()
