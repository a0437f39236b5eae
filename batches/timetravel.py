"""A batch as it was: fold its events up to a version or a moment.

``state_at`` is pure: it folds ``batches.domain.decider.evolve`` over the events given,
stopping before the first one past ``version`` or recorded after ``at``. ``batch_as_of``
reads the batch's stream from the log (``eventlog.EventStore``), starting from the
stream's snapshot when that is early enough, and returns the wire ``Batch``.

The moment of an event is its ``recorded_at`` (the unix time its group was committed to
the log), not the ``at`` in its data: a batch "as of T" is what a reader of the log at T
would have folded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from batches.domain import decider
from batches.domain.decider import BatchState
from batches.domain.events import batch_stream
from batches.domain.wire import Batch
from eventlog import EventLog, EventStore, RecordedEvent

__all__ = ["EventLike", "batch_as_of", "parse_time", "state_as_of", "state_at"]

_PAGE = 5_000


class EventLike(Protocol):
    """What ``state_at`` reads of an event (``eventlog.RecordedEvent`` is one)."""

    @property
    def type(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def version(self) -> int: ...

    @property
    def recorded_at(self) -> float: ...


def _fields(event: EventLike | Mapping[str, Any]) -> tuple[str, Mapping[str, Any], int, float]:
    if isinstance(event, Mapping):  # a timeline / events-endpoint entry
        return event["type"], event["data"], int(event["version"]), float(event["recorded_at"])
    return event.type, event.data, event.version, event.recorded_at


def state_at(
    events: Iterable[EventLike | Mapping[str, Any]],
    version: int | None = None,
    at: float | None = None,
    state: BatchState | None = None,
) -> BatchState | None:
    """The batch after folding ``events`` (in stream order) onto ``state``, up to and
    including ``version`` and recorded at or before ``at`` (unix seconds); both limits
    optional. None when no event qualifies and no ``state`` was given (not created yet).

    Events are dicts with ``type``, ``data``, ``version``, ``recorded_at`` (as from
    ``Analytics.timeline`` or ``GET /v1/batches/{id}/events``) or ``RecordedEvent``s.
    """
    if version is not None and version < 0:
        raise ValueError("version must be >= 0")
    current = state
    for event in events:
        type_, data, v, recorded_at = _fields(event)
        if current is not None and v <= current.version:
            continue  # already in the starting state (a snapshot)
        if version is not None and v > version:
            break
        if at is not None and recorded_at > at:
            break
        current = decider.evolve(current, type_, data)
    return current


def _pages(store: EventLog, stream: str, start: int, to: int | None) -> Iterator[RecordedEvent]:
    while True:
        page = store.read(stream, from_version=start, to_version=to, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        start = page[-1].version + 1


def state_as_of(
    store: EventLog, batch_id: str, version: int | None = None, at: float | None = None
) -> BatchState | None:
    """``state_at`` over the batch's stream in ``store``, read page by page.

    Starts from the stream's snapshot when it is not past the limits (for ``at``, when
    the event at the snapshot's version was recorded at or before ``at``).
    """
    stream = batch_stream(batch_id)
    start_state: BatchState | None = None
    snapshot = store.load_snapshot(stream)
    if snapshot is not None and (version is None or snapshot.version <= version):
        usable = True
        if at is not None:
            last = store.read(stream, from_version=snapshot.version, limit=1)
            usable = bool(last) and last[0].recorded_at <= at
        if usable:
            start_state = decider.state_from_dict(snapshot.state)
    start = start_state.version + 1 if start_state is not None else 1
    if version is not None and start > version:
        return start_state
    return state_at(_pages(store, stream, start, version), version, at, start_state)


def batch_as_of(
    log_dir: str | Path | EventLog,
    batch_id: str,
    version: int | None = None,
    at: float | None = None,
) -> Batch | None:
    """The wire ``Batch`` as of ``version`` / unix time ``at``; None if it did not exist.

    ``log_dir`` is a data dir's ``log`` directory (opened and closed here; safe while the
    service runs) or an open ``EventLog`` (either backend).
    """
    if isinstance(log_dir, EventLog):
        state = state_as_of(log_dir, batch_id, version, at)
    else:
        if not (Path(log_dir) / "segments").is_dir():
            raise FileNotFoundError(f"no event log at {log_dir}")
        with EventStore.open(log_dir) as store:
            state = state_as_of(store, batch_id, version, at)
    return decider.to_wire(state) if state is not None else None


def parse_time(text: str) -> float:
    """Unix seconds from ``1700000000[.5]`` or ISO 8601 (no zone given: UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
