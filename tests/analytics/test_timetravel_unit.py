"""Time travel: the state as of a version or a moment is the fold of the events up to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from batches.domain import decider
from batches.domain import events as ev
from batches.timetravel import batch_as_of, parse_time, state_as_of, state_at
from eventlog import EventStore
from tests.analytics.synth import Writer, outcome


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore.open(tmp_path / "log", fsync=False)
    yield s  # type: ignore[misc]
    s.close()


def write_batch(store: EventStore) -> Writer:
    w = Writer(store, "b1").create().validate(5)
    for line in range(1, 6):
        w.outcomes([outcome(line, ok=line != 3, attempts=line)])
    return w.finish()


def test_state_at_every_version_is_the_fold_of_that_prefix(store: EventStore) -> None:
    w = write_batch(store)
    events = store.read(w.stream)
    assert len(events) == 9
    assert state_at(events, version=0) is None
    assert state_at([]) is None
    state = None
    for k, event in enumerate(events, start=1):
        state = decider.evolve(state, event.type, event.data)
        assert state_at(events, version=k) == state
        assert state_as_of(store, "b1", version=k) == state
        assert batch_as_of(store, "b1", version=k) == decider.to_wire(state)
        # the timeline's dicts fold the same way
        dicts = [
            {"type": e.type, "data": e.data, "version": e.version, "recorded_at": e.recorded_at}
            for e in events
        ]
        assert state_at(dicts, version=k) == state
    assert state_at(events) == w.state
    assert state_at(events, version=10**6) == w.state
    assert batch_as_of(store, "b1") == decider.to_wire(w.state)  # type: ignore[arg-type]
    assert state_at(events, version=2).status == "in_progress"  # type: ignore[union-attr]
    assert state_at(events, version=1).status == "validating"  # type: ignore[union-attr]


def test_state_at_a_time_uses_commit_times(store: EventStore) -> None:
    w = write_batch(store)
    events = store.read(w.stream)
    assert state_at(events, at=events[0].recorded_at - 1) is None
    assert batch_as_of(store, "b1", at=events[0].recorded_at - 1) is None
    for i, event in enumerate(events):
        # every event recorded at or before this moment (a group shares its commit time)
        expect = max(e.version for e in events if e.recorded_at <= event.recorded_at)
        got = state_at(events, at=event.recorded_at)
        assert got is not None and got.version == expect
        assert state_as_of(store, "b1", at=event.recorded_at) == got
        both = state_at(events, version=i + 1, at=event.recorded_at)
        assert both is not None and both.version == i + 1


def test_snapshots_give_the_same_answers(store: EventStore) -> None:
    w = write_batch(store)
    events = store.read(w.stream)
    snap = decider.fold((e.type, e.data) for e in events[:6])
    store.save_snapshot(w.stream, 6, decider.state_to_dict(snap))
    for k in range(0, len(events) + 1):
        expect = decider.fold((e.type, e.data) for e in events[:k]) if k else None
        assert state_as_of(store, "b1", version=k) == expect
    for event in events:
        assert state_as_of(store, "b1", at=event.recorded_at) == state_at(
            events, at=event.recorded_at
        )
    assert state_as_of(store, "b1") == w.state


def test_unknown_batch_and_missing_log(store: EventStore, tmp_path: Path) -> None:
    assert batch_as_of(store, "nope") is None
    assert batch_as_of(tmp_path / "log", "nope", version=3) is None
    with pytest.raises(FileNotFoundError):
        batch_as_of(tmp_path / "elsewhere", "b1")
    with pytest.raises(ValueError):
        state_at([], version=-1)


def test_batch_as_of_opens_a_log_dir(store: EventStore, tmp_path: Path) -> None:
    w = write_batch(store)
    got = batch_as_of(tmp_path / "log", "b1", version=2)
    assert got is not None and got.status == "in_progress"
    assert got.request_counts is not None and got.request_counts.total == 5
    final = batch_as_of(tmp_path / "log", "b1")
    assert final == decider.to_wire(w.state)  # type: ignore[arg-type]
    assert final.status == "completed"  # type: ignore[union-attr]
    assert ev.batch_stream("b1") == w.stream


def test_parse_time() -> None:
    assert parse_time("1700000000") == 1_700_000_000
    assert parse_time("1700000000.25") == 1_700_000_000.25
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_time("2023-11-14 22:13:20") == 1_700_000_000  # no zone: UTC
    assert parse_time("2023-11-15T00:13:20+02:00") == 1_700_000_000
    with pytest.raises(ValueError):
        parse_time("yesterday")
