"""Result lines read back from a batch's stream: the one source of the final output and
error files and of the partial-results extension (docs/live.md).

Both walk the batch's outcome events in version order and encode each with
``output_line``, so a line served while the batch runs is byte for byte the line the
final file will hold at the same place.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from batches.domain import events as ev
from batches.domain.outputs import encode_line, output_line
from eventlog import EventLog, RecordedEvent

Kind = Literal["output", "error"]
KIND_OF_EVENT: dict[str, Kind] = {ev.REQUEST_SUCCEEDED: "output", ev.REQUEST_FAILED: "error"}
PAGE_EVENTS = 2_000


def _pages(
    log: EventLog, stream_id: str, from_version: int, max_events: int | None
) -> Iterator[list[RecordedEvent]]:
    """Pages of the stream's events from ``from_version``, at most ``max_events`` in all."""
    start, read = from_version, 0
    while max_events is None or read < max_events:
        limit = PAGE_EVENTS if max_events is None else min(PAGE_EVENTS, max_events - read)
        page = log.read(stream_id, from_version=start, limit=limit)
        if not page:
            return
        yield page
        read += len(page)
        start = page[-1].version + 1


def _line(event: RecordedEvent) -> tuple[Kind, bytes] | None:
    kind = KIND_OF_EVENT.get(event.type)
    return None if kind is None else (kind, encode_line(output_line(event.data)))


def recorded_lines(log: EventLog, stream_id: str) -> Iterator[tuple[Kind, bytes]]:
    """``(kind, line)`` of each recorded outcome, in version order: the final files.

    Reads pages of events, so memory stays bounded whatever the batch's size.
    """
    for page in _pages(log, stream_id, 1, None):
        for event in page:
            line = _line(event)
            if line is not None:
                yield line


@dataclass(slots=True)
class ResultsPage:
    """One bounded step of reading a kind's lines: the caller repeats from ``next_version``."""

    lines: list[bytes] = field(default_factory=list)
    skipped: int = 0  # lines of this kind passed over to honour ``skip``
    next_version: int = 1  # where the next step starts reading
    # (n, version): the kind's line n (0-based) is recorded at ``version``; every
    # CHECKPOINT_EVERY-th line passed, for the LineIndex.
    checkpoints: list[tuple[int, int]] = field(default_factory=list)


CHECKPOINT_EVERY = 1_000


def results_page(
    log: EventLog,
    stream_id: str,
    kind: Kind,
    from_version: int,
    skip: int,
    limit: int,
    max_events: int = 10_000,
    ordinal: int = 0,
) -> ResultsPage:
    """Lines of ``kind`` from ``from_version``: pass over ``skip`` of them, then up to
    ``limit``; reads at most ``max_events`` events, so one call stays short. Nothing
    new to read leaves ``next_version`` where it was. ``ordinal``: how many lines of
    ``kind`` come before ``from_version`` (for the checkpoints)."""
    result = ResultsPage(next_version=from_version)
    n = ordinal
    for page in _pages(log, stream_id, from_version, max_events):
        for event in page:
            result.next_version = event.version + 1
            if KIND_OF_EVENT.get(event.type) != kind:
                continue
            if n % CHECKPOINT_EVERY == 0:
                result.checkpoints.append((n, event.version))
            n += 1
            if result.skipped < skip:
                result.skipped += 1  # not encoded: skipping stays cheap
                continue
            result.lines.append(encode_line(output_line(event.data)))
            if len(result.lines) >= limit:
                return result
    return result


class LineIndex:
    """Where a batch's Nth output (or error) line is recorded, learnt while serving:
    a checkpoint every CHECKPOINT_EVERY lines, so a consumer asking for the lines after
    N does not make every request rescan the stream from its start. Bounded to the
    most recent ``max_batches`` batches; a checkpoint never changes (the stream only
    grows), so a stale one cannot exist."""

    def __init__(self, max_batches: int = 256) -> None:
        self.max_batches = max_batches
        self._points: OrderedDict[tuple[str, str], dict[int, int]] = OrderedDict()

    def learn(self, batch_id: str, kind: str, checkpoints: list[tuple[int, int]]) -> None:
        if not checkpoints:
            return
        key = (batch_id, kind)
        self._points.setdefault(key, {}).update(checkpoints)
        self._points.move_to_end(key)
        while len(self._points) > self.max_batches:
            self._points.popitem(last=False)

    def jump(
        self, batch_id: str, kind: str, from_version: int, ordinal: int, skip: int
    ) -> tuple[int, int, int]:
        """``(from_version, ordinal, skip)`` moved to the furthest known checkpoint that
        passing over ``skip`` lines would reach; unchanged if none is known."""
        points = self._points.get((batch_id, kind))
        if not points or skip <= 0:
            return from_version, ordinal, skip
        best = max((n for n in points if ordinal < n <= ordinal + skip), default=None)
        if best is None or points[best] < from_version:
            return from_version, ordinal, skip
        return points[best], best, ordinal + skip - best


def indexed_page(
    log: EventLog,
    index: LineIndex,
    batch_id: str,
    stream_id: str,
    kind: Kind,
    from_version: int,
    skip: int,
    limit: int,
    ordinal: int = 0,
) -> ResultsPage:
    """``results_page`` that starts from the furthest known checkpoint and teaches the
    index what it passes; ``skipped`` also counts the lines a checkpoint jumped over."""
    start, at, left = index.jump(batch_id, kind, from_version, ordinal, skip)
    result = results_page(log, stream_id, kind, start, left, limit, ordinal=at)
    index.learn(batch_id, kind, result.checkpoints)
    result.skipped += skip - left
    return result
