"""The store's contract: replay, versions, global order, bad input, snapshots.

Written against ``open_log`` (conftest.py), so they run on every backend: the file store
and PostgreSQL. The few tests about the file layout (segments, snapshot files,
compaction) use ``open_store``, the file store alone.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from eventlog import (
    EventLog,
    InvalidStreamId,
    NewEvent,
    SerializationError,
    Snapshot,
    WrongExpectedVersion,
)


def ev(i: int, type: str = "Happened") -> NewEvent:
    return NewEvent(type, {"i": i, "text": "x" * 20}, {"source": "test"})


def fill(store: EventLog, stream: str, n: int) -> None:
    for i in range(n):
        store.append(stream, [ev(i + 1)], i)


# 1. replay cases -------------------------------------------------------------------------


def test_replay_all_from_to_limit(open_log):
    s = open_log()
    fill(s, "s-1", 10)
    assert [e.version for e in s.read("s-1")] == list(range(1, 11))
    assert [e.data["i"] for e in s.read("s-1")] == list(range(1, 11))
    assert [e.version for e in s.read("s-1", from_version=4)] == list(range(4, 11))
    assert [e.version for e in s.read("s-1", to_version=3)] == [1, 2, 3]
    assert [e.version for e in s.read("s-1", 2, 8, limit=3)] == [2, 3, 4]
    assert [e.version for e in s.read("s-1", limit=0)] == []
    assert [e.version for e in s.read("s-1", 5, 5)] == [5]  # lower == upper: one
    assert s.read("s-1", 6, 5) == []  # lower > upper: none
    assert s.read("s-1", 11) == []
    assert [e.version for e in s.read("s-1", 9, 100)] == [9, 10]


def test_unknown_stream_reads_empty_and_version_zero(open_log):
    s = open_log()
    fill(s, "known", 2)
    assert s.read("unknown") == []
    assert s.version("unknown") == 0
    assert s.load_snapshot("unknown") is None


def test_replay_inside_groups(open_log):
    s = open_log()
    s.append("g", [ev(i) for i in range(1, 6)], 0)
    s.append("g", [ev(i) for i in range(6, 9)], 5)
    assert [e.version for e in s.read("g", 3, 7)] == [3, 4, 5, 6, 7]
    assert [e.version for e in s.read("g", 4, limit=2)] == [4, 5]
    assert [e.position for e in s.read("g")] == list(range(1, 9))


def test_recorded_fields(open_log):
    s = open_log()
    s.append("a", [NewEvent("T", {"k": [1, "two", None]}), NewEvent("U", {}, {"m": 1})], 0)
    one, two = s.read("a")
    assert (one.stream_id, one.version, one.type, one.data, one.metadata) == (
        "a",
        1,
        "T",
        {"k": [1, "two", None]},
        {},
    )
    assert two.metadata == {"m": 1}
    assert len(one.event_id) == 32 and one.event_id != two.event_id
    int(one.event_id, 16)
    assert one.recorded_at == two.recorded_at > 1.6e9
    with pytest.raises(AttributeError):
        one.version = 5  # type: ignore[misc]


# 2. the highest version never goes down --------------------------------------------------


def test_highest_version_never_goes_down(open_store, log_dir):
    s = open_store()
    fill(s, "h", 5)
    seen = [s.version("h")]
    with pytest.raises(WrongExpectedVersion):
        s.append("h", [ev(0)], 3)
    seen.append(s.version("h"))
    s.save_snapshot("h", 5, {"n": 5})
    seen.append(s.version("h"))
    s.close()
    s2 = open_store(log_dir, segment_bytes=1)  # reopen with tiny segments: every append rotates
    seen.append(s2.version("h"))
    fill_from = s2.version("h")
    for i in range(3):
        s2.append("h", [ev(i)], fill_from + i)
        seen.append(s2.version("h"))
    from eventlog.compaction import compact

    compact(log_dir)
    s3 = open_store(log_dir)
    seen.append(s3.version("h"))
    assert seen == sorted(seen) and seen[-1] == 8
    assert [e.version for e in s3.read("h")] == list(range(1, 9))


def test_highest_version_never_goes_down_across_reopen(open_log):
    s = open_log()
    fill(s, "h", 5)
    seen = [s.version("h")]
    with pytest.raises(WrongExpectedVersion):
        s.append("h", [ev(0)], 3)
    seen.append(s.version("h"))
    s.save_snapshot("h", 5, {"n": 5})
    seen.append(s.version("h"))
    s.close()
    s2 = open_log()
    seen.append(s2.version("h"))
    for i in range(3):
        s2.append("h", [ev(i)], 5 + i)
        seen.append(s2.version("h"))
    seen.append(open_log().version("h"))
    assert seen == sorted(seen) and seen[-1] == 8
    assert [e.version for e in s2.read("h")] == list(range(1, 9))


# 4/5. expected versions, zombies ---------------------------------------------------------


def test_wrong_expected_version_names_stream_expected_actual(open_log):
    s = open_log()
    fill(s, "w", 3)
    with pytest.raises(WrongExpectedVersion) as ei:
        s.append("w", [ev(9)], 1)
    assert "'w'" in str(ei.value) and "expected 1" in str(ei.value) and "actual 3" in str(ei.value)
    assert (ei.value.expected, ei.value.actual) == (1, 3)
    with pytest.raises(WrongExpectedVersion):
        s.append("new", [ev(1)], 1)


def test_zombie_handle_is_refused(open_log):
    old = open_log()
    fill(old, "batch-1", 2)
    assert old.version("batch-1") == 2
    new = open_log()  # a new incarnation takes over the stream
    new.append("batch-1", [ev(3)], 2)
    # the old incarnation still believes version 2 from its own decisions
    with pytest.raises(WrongExpectedVersion):
        old.append("batch-1", [ev(99)], 2)
    assert [e.data["i"] for e in new.read("batch-1")] == [1, 2, 3]
    assert [e.data["i"] for e in old.read("batch-1")] == [1, 2, 3]


def test_empty_group_checks_version_and_writes_nothing(open_log):
    s = open_log()
    fill(s, "e", 1)
    before = open_log.state()
    assert s.append("e", [], 1) == 1
    with pytest.raises(WrongExpectedVersion):
        s.append("e", [], 0)
    assert open_log.state() == before


# bad input changes nothing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.append("ok", [ev(1)], 0),  # wrong expected version (stream is at 2)
        lambda s: s.append("ok", [ev(1)], 5),
        lambda s: s.append("bad id", [ev(1)], 0),
        lambda s: s.append("", [ev(1)], 0),
        lambda s: s.append("x" * 201, [ev(1)], 0),
        lambda s: s.append("bad/slash", [ev(1)], 0),
        lambda s: s.append("ok", [ev(3), NewEvent("T", {"x": object()})], 2),
        lambda s: s.append("ok", [NewEvent("T", {1: "non-str key"})], 2),
        lambda s: s.append("ok", [NewEvent("T", {"big": 2**70})], 2),
        lambda s: s.append("ok", [NewEvent("T", "not a dict")], 2),  # type: ignore[arg-type]
        lambda s: s.append("ok", [NewEvent("", {})], 2),
        lambda s: s.append("ok", [{"type": "T", "data": {}}], 2),  # type: ignore[list-item]
        lambda s: s.read("bad id"),
        lambda s: s.version("é"),
        lambda s: s.save_snapshot("ok", 3, {}),  # beyond the stream
        lambda s: s.save_snapshot("ok", 2, {"x": {1, 2}}),
    ],
)
def test_bad_input_raises_and_changes_nothing(open_log, call):
    s = open_log()
    fill(s, "ok", 2)
    s.save_snapshot("ok", 1, {"n": 1})
    before = open_log.state()
    with pytest.raises((WrongExpectedVersion, InvalidStreamId, SerializationError, ValueError)):
        call(s)
    assert open_log.state() == before
    assert s.version("ok") == 2
    assert s.append("ok", [ev(3)], 2) == 3  # and the store still works


def test_error_classes():
    from eventlog import CorruptLog, EventLogError, StoreFailed

    for cls in (WrongExpectedVersion, CorruptLog, StoreFailed, InvalidStreamId, SerializationError):
        assert issubclass(cls, EventLogError)
    assert issubclass(InvalidStreamId, ValueError) and issubclass(SerializationError, ValueError)


def test_stream_id_alphabet(open_log):
    s = open_log()
    for sid in ["a", "A-Z_0.9:x", "batch-batch_abc123", "x" * 200, "..", "."]:
        assert s.append(sid, [ev(1)], 0) == 1
    assert len(s.streams()) == 6


# global order ---------------------------------------------------------------------------


def test_read_all_head_streams(open_log):
    s = open_log()
    assert s.head() == 0 and s.read_all() == [] and s.streams() == []
    s.append("batch-a", [ev(1), ev(2)], 0)
    s.append("files", [ev(3)], 0)
    s.append("batch-b", [ev(4)], 0)
    assert s.head() == 4
    assert [e.position for e in s.read_all()] == [1, 2, 3, 4]
    assert [(e.stream_id, e.version) for e in s.read_all(after=1)] == [
        ("batch-a", 2),
        ("files", 1),
        ("batch-b", 1),
    ]
    assert [e.position for e in s.read_all(after=1, limit=2)] == [2, 3]
    assert s.read_all(after=4) == []
    assert s.streams() == ["batch-a", "batch-b", "files"]
    assert s.streams("batch-") == ["batch-a", "batch-b"]


def test_segments_rotate_and_reads_cross_them(open_store, log_dir):
    s = open_store(segment_bytes=500)
    for i in range(40):
        s.append(f"s{i % 3}", [ev(i)], i // 3)
    names = sorted(p.name for p in (log_dir / "segments").iterdir())
    assert len(names) > 5 and names[0] == f"{1:020d}.seg"
    assert [e.position for e in s.read_all()] == list(range(1, 41))
    assert [e.position for e in s.read_all(after=17, limit=9)] == list(range(18, 27))
    s.close()
    s2 = open_store(log_dir, segment_bytes=500)
    assert [e.version for e in s2.read("s1")] == list(range(1, 14))
    assert s2.head() == 40


def test_second_handle_sees_other_writes(open_log):
    a = open_log()
    b = open_log()
    a.append("x", [ev(1)], 0)
    assert b.version("x") == 1 and b.head() == 1
    b.append("y", [ev(2)], 0)
    assert [e.stream_id for e in a.read_all()] == ["x", "y"]
    assert a.streams() == ["x", "y"]


# 6. concurrency from threads ---------------------------------------------------------------


def test_100_streams_from_threads(open_log):
    s = open_log(segment_bytes=64 * 1024)
    n_streams, per_stream, group = 100, 6, 3
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            v = 0
            for j in range(per_stream):
                events = [NewEvent("T", {"k": k, "j": j, "g": g}) for g in range(group)]
                v = s.append(f"stream-{k}", events, v)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = s.read_all()
    assert [e.position for e in everything] == list(range(1, n_streams * per_stream * group + 1))
    for k in range(n_streams):
        evs = s.read(f"stream-{k}")
        assert [e.version for e in evs] == list(range(1, per_stream * group + 1))
        assert [(e.data["j"], e.data["g"]) for e in evs] == [
            (j, g) for j in range(per_stream) for g in range(group)
        ]
    # a group is contiguous in the global order: never interleaved with another group
    for i in range(0, len(everything), group):
        chunk = everything[i : i + group]
        assert len({(e.stream_id, e.data["j"]) for e in chunk}) == 1
        assert [e.data["g"] for e in chunk] == list(range(group))


def test_threads_racing_on_one_stream(open_log):
    s = open_log()
    results: list[str] = []
    barrier = threading.Barrier(8)

    def racer() -> None:
        barrier.wait()
        try:
            s.append("contested", [ev(1)], 0)
            results.append("won")
        except WrongExpectedVersion:
            results.append("refused")

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 7 + ["won"]
    assert s.version("contested") == 1


# 12. snapshots ----------------------------------------------------------------------------


def fold(events) -> dict:
    state: dict = {"n": 0, "sum": 0}
    for e in events:
        state = {"n": state["n"] + 1, "sum": state["sum"] + e.data["i"]}
    return state


def test_snapshot_plus_tail_equals_full_replay(open_log):
    s = open_log()
    fill(s, "snap", 7)
    s.save_snapshot("snap", 4, fold(s.read("snap", to_version=4)))
    fill_more = [s.append("snap", [ev(i)], i - 1) for i in range(8, 11)]
    assert fill_more == [8, 9, 10]
    snap = s.load_snapshot("snap")
    assert snap == Snapshot("snap", 4, {"n": 4, "sum": 10})
    state = dict(snap.state)
    for e in s.read("snap", snap.version + 1):
        state = {"n": state["n"] + 1, "sum": state["sum"] + e.data["i"]}
    assert state == fold(s.read("snap"))
    s.save_snapshot("snap", 10, state)  # replaces the old one
    assert open_log().load_snapshot("snap") == Snapshot("snap", 10, state)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage", "other-stream"])
def test_corrupt_snapshot_falls_back_to_replay(open_store, log_dir, damage, caplog):
    s = open_store()
    fill(s, "snap", 3)
    fill(s, "other", 3)
    s.save_snapshot("snap", 3, {"n": 3, "sum": 6})
    s.save_snapshot("other", 2, {"n": 2})
    p: Path = log_dir / "snapshots" / "snap.snap"
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[:-3]
    elif damage == "empty":
        data = bytearray()
    elif damage == "garbage":
        data = bytearray(b"\x00garbage" * 10)
    else:
        data = bytearray((log_dir / "snapshots" / "other.snap").read_bytes())
    p.write_bytes(bytes(data))
    assert s.load_snapshot("snap") is None
    assert "snapshot" in caplog.text
    assert fold(s.read("snap")) == {"n": 3, "sum": 6}


def test_snapshot_tmp_leftovers_are_ignored(open_store, log_dir):
    s = open_store()
    fill(s, "t", 2)
    (log_dir / "snapshots" / ".t.snap.123.abcd.tmp").write_bytes(b"half")
    assert s.load_snapshot("t") is None
    s.save_snapshot("t", 2, {"ok": True})
    assert s.load_snapshot("t") == Snapshot("t", 2, {"ok": True})


def test_closed_store_refuses(open_log):
    from eventlog import EventLogError

    s = open_log()
    s.close()
    with pytest.raises(EventLogError):
        s.append("a", [ev(1)], 0)
    with pytest.raises(EventLogError):
        s.read("a")
    s.close()  # twice is fine
