"""Result lines read back from a batch's stream: the one source of the final output and
error files and of the partial-results extension (docs/live.md).

Both walk the batch's outcome events in version order and encode each with
``output_line``, so a line served while the batch runs is byte for byte the line the
final file will hold at the same place.
"""

from __future__ import annotations

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


def results_page(
    log: EventLog,
    stream_id: str,
    kind: Kind,
    from_version: int,
    skip: int,
    limit: int,
    max_events: int = 10_000,
) -> ResultsPage:
    """Lines of ``kind`` from ``from_version``: pass over ``skip`` of them, then up to
    ``limit``; reads at most ``max_events`` events, so one call stays short. Nothing
    new to read leaves ``next_version`` where it was."""
    result = ResultsPage(next_version=from_version)
    for page in _pages(log, stream_id, from_version, max_events):
        for event in page:
            result.next_version = event.version + 1
            line = _line(event)
            if line is None or line[0] != kind:
                continue
            if result.skipped < skip:
                result.skipped += 1
                continue
            result.lines.append(line[1])
            if len(result.lines) >= limit:
                return result
    return result
