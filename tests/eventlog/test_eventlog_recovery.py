"""Torn tails, corruption, power loss and fsync failure (catalogue items 3, 7, 8, 10, 11)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
from conftest import snapshot_files

from eventlog import CorruptLog, EventStore, NewEvent, StoreFailed

SEG1 = f"{1:020d}.seg"


def ev(i: int) -> NewEvent:
    return NewEvent("Happened", {"i": i, "pad": "p" * 40})


def build(root: Path) -> list[int]:
    """Three single events then a group of three; returns segment sizes after each append."""
    sizes = []
    with EventStore.open(root) as s:
        for i in range(3):
            s.append("a", [ev(i + 1)], i)
            sizes.append((root / "segments" / SEG1).stat().st_size)
        s.append("b", [ev(10), ev(11), ev(12)], 0)
        sizes.append((root / "segments" / SEG1).stat().st_size)
    return sizes


def state(s: EventStore) -> list[tuple[str, int, int]]:
    return [(e.stream_id, e.version, e.position) for e in s.read_all()]


# 3 + 7. torn last frame at every byte offset: the group vanishes whole, the rest is kept ----


def test_torn_last_frame_at_every_offset(tmp_path):
    base = tmp_path / "base"
    sizes = build(base)
    seg = (base / "segments" / SEG1).read_bytes()
    start, end = sizes[2], sizes[3]
    work = tmp_path / "work"
    shutil.copytree(base, work)
    for cut in range(start, end):
        (work / "segments" / SEG1).write_bytes(seg[:cut])
        with EventStore.open(work, fsync=False) as s:
            assert state(s) == [("a", 1, 1), ("a", 2, 2), ("a", 3, 3)], cut
            assert s.version("b") == 0 and s.read("b") == []  # the group vanished whole
            assert (work / "segments" / SEG1).stat().st_size == start  # tail truncated
            assert s.append("b", [ev(20)], 0) == 1
            assert s.head() == 4
        with EventStore.open(work, fsync=False) as s:
            assert [e.data["i"] for e in s.read_all()] == [1, 2, 3, 20]


def test_torn_tail_repaired_with_fsync_on(tmp_path):
    sizes = build(tmp_path)
    p = tmp_path / "segments" / SEG1
    with open(p, "r+b") as f:
        f.truncate(sizes[3] - 7)
    with EventStore.open(tmp_path) as s:
        assert s.head() == 3
        assert s.append("b", [ev(1)], 0) == 1


# 8. corruption stops start-up with a clear error ----------------------------------------


def test_bit_flip_in_a_middle_frame_is_corrupt_log(tmp_path):
    sizes = build(tmp_path)
    p = tmp_path / "segments" / SEG1
    original = p.read_bytes()
    frame_start, frame_end = sizes[0], sizes[1]  # the second frame; two more follow it
    rng = random.Random(7)
    offsets = list(range(frame_start, frame_end))
    for off in offsets:
        data = bytearray(original)
        data[off] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
        with pytest.raises(CorruptLog) as ei:
            EventStore.open(tmp_path, fsync=False)
        assert ei.value.file == str(p) and ei.value.offset == frame_start, off
        assert str(p) in str(ei.value) and f"offset {frame_start}" in str(ei.value)
        assert p.read_bytes() == bytes(data)  # never "repaired" away
    p.write_bytes(original)
    with EventStore.open(tmp_path) as s:
        assert s.head() == 6


def test_bit_flip_in_a_sealed_segment_is_corrupt_log(tmp_path):
    with EventStore.open(tmp_path, segment_bytes=100) as s:  # one frame per segment
        for i in range(6):
            s.append("a", [ev(i)], i)
    segs = sorted((tmp_path / "segments").iterdir())
    assert len(segs) == 6
    first = segs[0]
    data = bytearray(first.read_bytes())
    data[-5] ^= 0x40  # inside the sealed segment's last frame
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as ei:
        EventStore.open(tmp_path)
    assert ei.value.file == str(first) and ei.value.offset == 0


def test_reading_a_frame_damaged_after_open_raises(open_store, log_dir):
    s = open_store()
    for i in range(3):
        s.append("a", [ev(i)], i)
    p = log_dir / "segments" / SEG1
    data = bytearray(p.read_bytes())
    data[60] ^= 0x01  # first frame, after the header
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptLog):
        s.read("a")
    with pytest.raises(CorruptLog):
        s.read_all()


@pytest.mark.parametrize("tail", ["zeros", "garbage", "zeros-partial-page", "magic-then-junk"])
def test_zero_filled_and_garbage_tails_are_repaired(tmp_path, tail):
    sizes = build(tmp_path)
    p = tmp_path / "segments" / SEG1
    junk = {
        "zeros": b"\0" * 4096,
        "garbage": random.Random(1).randbytes(3000),
        "zeros-partial-page": b"\0" * 17,
        "magic-then-junk": b"EVT1" + b"\xff" * 100,
    }[tail]
    with open(p, "ab") as f:
        f.write(junk)
    with EventStore.open(tmp_path) as s:
        assert s.head() == 6
        assert p.stat().st_size == sizes[3]
        assert s.append("c", [ev(1)], 0) == 1
    with EventStore.open(tmp_path) as s:
        assert s.head() == 7


def test_zeros_inside_the_log_followed_by_frames_is_corrupt(tmp_path):
    sizes = build(tmp_path)
    p = tmp_path / "segments" / SEG1
    data = bytearray(p.read_bytes())
    data[sizes[1] : sizes[2]] = b"\0" * (sizes[2] - sizes[1])  # the third frame zeroed
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as ei:
        EventStore.open(tmp_path)
    assert ei.value.offset == sizes[1]


def test_gap_in_segment_names_is_corrupt(tmp_path):
    with EventStore.open(tmp_path, segment_bytes=150) as s:
        for i in range(5):
            s.append("a", [ev(i)], i)
    segs = sorted((tmp_path / "segments").iterdir())
    segs[1].unlink()
    with pytest.raises(CorruptLog):
        EventStore.open(tmp_path)


# 10. power loss: everything after the last fsynced offset is gone --------------------------


def test_power_loss_drops_only_unsynced_bytes(tmp_path):
    sizes = build(tmp_path)
    p = tmp_path / "segments" / SEG1
    full = p.read_bytes()
    for k, synced in enumerate(sizes):
        # the page cache held up to 300 further bytes that never reached the disk, some of them
        # replaced by zeros as a file system may leave them
        for extra in (b"", full[synced : synced + 100], b"\0" * 300):
            p.write_bytes(full[:synced] + extra)
            with EventStore.open(tmp_path, fsync=False) as s:
                expect = [1, 2, 3, 6][k]
                assert s.head() == expect
                assert [e.position for e in s.read_all()] == list(range(1, expect + 1))
    p.write_bytes(full)


# 11. fsync fails: fail closed, acknowledge nothing, never retry ----------------------------


def _eio(calls: list[int]):
    def fdatasync(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    return fdatasync


def test_fsync_eio_fails_closed(open_store, log_dir, monkeypatch):
    s = open_store()
    s.append("a", [ev(1)], 0)
    before = snapshot_files(log_dir)
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", _eio(calls))
    with pytest.raises(StoreFailed):
        s.append("a", [ev(2)], 1)
    assert len(calls) == 1  # no retry
    assert snapshot_files(log_dir) == before  # truncated back: nothing of it remains
    monkeypatch.undo()
    with pytest.raises(StoreFailed):  # failed closed: later appends are refused
        s.append("a", [ev(2)], 1)
    with pytest.raises(StoreFailed):
        s.append("z", [ev(1)], 0)
    assert s.version("a") == 1 and [e.data["i"] for e in s.read("a")] == [1]
    s2 = open_store(log_dir)  # reopening is the way on
    assert s2.version("a") == 1
    assert s2.append("a", [ev(2)], 1) == 2


def test_fsync_eio_with_concurrent_appenders_acknowledges_nothing(open_store, log_dir, monkeypatch):
    s = open_store()
    s.append("base", [ev(0)], 0)
    before = snapshot_files(log_dir)
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", _eio(calls))
    results: list[str] = []
    barrier = threading.Barrier(16)

    def appender(k: int) -> None:
        barrier.wait()
        try:
            s.append(f"s{k}", [ev(k)], 0)
            results.append("acknowledged")
        except StoreFailed:
            results.append("failed")

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["failed"] * 16
    assert len(calls) == 1
    assert snapshot_files(log_dir) == before


def test_fsync_eio_on_a_new_segment_removes_it(open_store, log_dir, monkeypatch):
    s = open_store(segment_bytes=100)
    s.append("a", [ev(1)], 0)  # fills the first segment past 100 bytes
    before = snapshot_files(log_dir)
    monkeypatch.setattr(os, "fdatasync", _eio([]))
    with pytest.raises(StoreFailed):
        s.append("a", [ev(2)], 1)
    assert snapshot_files(log_dir) == before
    monkeypatch.undo()
    s2 = open_store(log_dir, segment_bytes=100)
    assert s2.append("a", [ev(2)], 1) == 2
    assert s2.head() == 2


def test_reader_meets_a_bad_frame_in_a_segment_sealed_since(open_store, log_dir):
    writer = open_store(segment_bytes=400)
    reader = open_store(log_dir, segment_bytes=400)
    writer.append("a", [ev(1)], 0)
    assert reader.head() == 1
    writer.append("a", [ev(2)], 1)  # a frame the reader has not read yet
    p = log_dir / "segments" / SEG1
    data = bytearray(p.read_bytes())
    data[-10] ^= 0x04
    p.write_bytes(bytes(data))
    assert reader.head() == 1  # a bad tail in the active segment: maybe a write in progress
    for i in range(3, 8):  # the writer does not reread its own frames; the segment fills up
        writer.append("a", [ev(i)], i - 1)
    assert len(list((log_dir / "segments").iterdir())) > 1
    with pytest.raises(CorruptLog) as ei:
        reader.read_all()
    assert ei.value.file == str(p)
