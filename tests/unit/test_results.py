"""Partial results read back from a real event store match the final files line for line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batches.api.live import resume_point
from batches.domain import events as ev
from batches.domain.errors import DomainError
from batches.domain.outputs import encode_line, output_line
from batches.results import LineIndex, indexed_page, recorded_lines, results_page
from eventlog import EventStore, NewEvent

STREAM = "batch-batch_1"


def outcome(line: int, ok: bool) -> tuple[str, dict[str, Any]]:
    data = {
        "line": line,
        "custom_id": f"c{line}",
        "request_id": f"batch_req_{line}",
        "status_code": 200 if ok else 400,
        "body": {"n": line} if ok else {"error": {"message": "bad"}},
        "error": None,
    }
    return (ev.REQUEST_SUCCEEDED if ok else ev.REQUEST_FAILED), data


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore.open(tmp_path / "log", fsync=False)
    events = [NewEvent("BatchCreated", {"batch_id": "batch_1"}), NewEvent("BatchValidated", {})]
    # lines 1..50, every third one a failure, recorded out of line order
    order = [n for n in range(50, 0, -1)]
    events += [NewEvent(*outcome(n, n % 3 != 0)) for n in order]
    s.append(STREAM, events, expected_version=0)
    yield s
    s.close()


def final_file(store: EventStore, kind: str) -> list[bytes]:
    """What the batch actor writes (it uses recorded_lines too), rebuilt independently."""
    wanted = ev.REQUEST_SUCCEEDED if kind == "output" else ev.REQUEST_FAILED
    return [encode_line(output_line(e.data)) for e in store.read(STREAM) if e.type == wanted]


def read_all_pages(
    store: EventStore, kind: str, skip: int, limit: int, max_events: int
) -> list[bytes]:
    """Page through as the HTTP route does: bounded steps until nothing more is read."""
    out: list[bytes] = []
    start = 1
    while True:
        page = results_page(store, STREAM, kind, start, skip, limit, max_events)  # type: ignore[arg-type]
        skip -= page.skipped
        out += page.lines
        if page.next_version == start:
            return out
        start = page.next_version


def test_recorded_lines_are_the_final_files(store: EventStore) -> None:
    lines = list(recorded_lines(store, STREAM))
    assert [line for kind, line in lines if kind == "output"] == final_file(store, "output")
    assert [line for kind, line in lines if kind == "error"] == final_file(store, "error")


@pytest.mark.parametrize("kind", ["output", "error"])
@pytest.mark.parametrize(
    ("skip", "limit", "max_events"), [(0, 1000, 10_000), (0, 3, 7), (5, 4, 1), (40, 10, 13)]
)
def test_pages_are_the_final_file_after_skip(
    store: EventStore, kind: str, skip: int, limit: int, max_events: int
) -> None:
    assert read_all_pages(store, kind, skip, limit, max_events) == final_file(store, kind)[skip:]


def test_a_page_stops_at_limit_and_resumes_exactly(store: EventStore) -> None:
    first = results_page(store, STREAM, "output", 1, 0, 5)
    assert len(first.lines) == 5
    rest = results_page(store, STREAM, "output", first.next_version, 0, 1000)
    assert first.lines + rest.lines == final_file(store, "output")
    # nothing new to read: next_version stays put (the caller's signal to stop)
    end = results_page(store, STREAM, "output", rest.next_version, 0, 1000)
    assert end.lines == [] and end.next_version == rest.next_version


def test_lines_recorded_later_are_picked_up(store: EventStore) -> None:
    page = results_page(store, STREAM, "output", 1, 0, 1000)
    store.append(STREAM, [NewEvent(*outcome(51, True))], expected_version=store.version(STREAM))
    more = results_page(store, STREAM, "output", page.next_version, 0, 1000)
    assert page.lines + more.lines == final_file(store, "output")
    assert len(more.lines) == 1


def test_resume_point() -> None:
    assert resume_point(None, None) == 0
    assert resume_point(7, None) == 7
    assert resume_point(7, "12") == 12  # a reconnect's Last-Event-ID wins
    assert resume_point(None, " ") == 0
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(DomainError) as err:
            resume_point(None, bad)
        assert err.value.http_status == 400 and err.value.param == "Last-Event-ID"


def test_line_index_jumps_give_the_same_lines(tmp_path: Path) -> None:
    """With checkpoints learnt, reading after line N starts near N, and returns exactly
    what a scan from the start returns."""
    s = EventStore.open(tmp_path / "big", fsync=False)
    s.append(STREAM, [NewEvent("BatchCreated", {"batch_id": "b"})], expected_version=0)
    outcomes = [NewEvent(*outcome(n, n % 4 != 0)) for n in range(1, 3_001)]
    s.append(STREAM, outcomes, expected_version=1)
    index = LineIndex()
    try:
        for kind in ("output", "error"):
            final = final_file(s, kind)
            for after in (0, 999, 1_000, 1_001, 1_500, 2_249, len(final)):
                pages, start, skip, ordinal = [], 1, after, 0
                while True:
                    page = indexed_page(s, index, "b", STREAM, kind, start, skip, 100, ordinal)  # type: ignore[arg-type]
                    skip -= page.skipped
                    ordinal += page.skipped + len(page.lines)
                    pages += page.lines
                    if page.next_version == start or len(pages) >= 100:
                        break
                    start = page.next_version
                assert pages[:100] == final[after : after + 100], (kind, after)
        # after the first passes the index knows where line 2000 of the output is
        start, ordinal, skip = index.jump("b", "output", 1, 0, 2_100)
        assert (ordinal, skip) == (2_000, 100) and start > 2_000
    finally:
        s.close()


def test_line_index_is_bounded() -> None:
    index = LineIndex(max_batches=2)
    for b in ("a", "b", "c"):
        index.learn(b, "output", [(0, 2), (1000, 1500)])
    assert index.jump("a", "output", 1, 0, 1500) == (1, 0, 1500)  # forgotten
    assert index.jump("c", "output", 1, 0, 1500) == (1500, 1000, 500)
