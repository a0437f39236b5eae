"""Segment index files: open reads only the active segment; a stream read touches only its
own frames; an index lost to a crash at seal, deleted or damaged is rebuilt (and the log
reads the same as before)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventlog import CorruptLog, EventStore, NewEvent, segindex

CHILD = str(Path(__file__).with_name("index_child.py"))
SEG_BYTES = 600


def ev(stream: str, n: int) -> NewEvent:
    return NewEvent("T", {"stream": stream, "n": n, "pad": "p" * 30})


def fill(s: EventStore, rounds: int, streams: tuple[str, ...] = ("a", "b", "c")) -> None:
    for _ in range(rounds):
        for name in streams:
            v = s.version(name)
            s.append(name, [ev(name, v + 1), ev(name, v + 2)], v)


def everything(s: EventStore) -> dict[str, Any]:
    """All a reader can see: global order, each stream, versions, snapshot-style tails."""
    names = s.streams()
    return {
        "all": [(e.position, e.stream_id, e.version, e.data, e.event_id) for e in s.read_all()],
        "streams": names,
        "head": s.head(),
        "versions": {n: s.version(n) for n in names},
        "reads": {n: [(e.version, e.position, e.data) for e in s.read(n)] for n in names},
        "tails": {n: [e.version for e in s.read(n, from_version=s.version(n) - 2)] for n in names},
        "middle": {n: [e.version for e in s.read(n, 3, 6)] for n in names},
        "pages": [e.position for e in s.read_all(after=7, limit=11)],
    }


def sealed_segments(root: Path) -> list[Path]:
    return sorted((root / "segments").glob("*.seg"))[:-1]


def index_of(seg: Path) -> Path:
    return seg.parent.parent / "index" / (seg.stem + ".idx")


def fresh_view(root: Path, tmp: Path) -> dict[str, Any]:
    """What the log reads like with every index built from scratch (a copy, no index/)."""
    copy = tmp / f"fresh-{random.getrandbits(32)}"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "index")
    with EventStore.open(copy, fsync=False) as s:
        return everything(s)


def test_every_sealed_segment_gets_an_index_at_seal(open_store, log_dir):
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 20)
    sealed = sealed_segments(log_dir)
    assert len(sealed) > 5
    for seg in sealed:
        h = segindex.read_header(index_of(seg))
        assert segindex.matches(h, int(seg.stem), seg.stat()), seg
    active = sorted((log_dir / "segments").glob("*.seg"))[-1]
    assert not index_of(active).exists()
    # the chain of positions: each index says where the next segment starts
    names = [int(p.stem) for p in sorted((log_dir / "segments").glob("*.seg"))]
    for seg, nxt in zip(sealed, names[1:], strict=True):
        h = segindex.read_header(index_of(seg))
        assert h is not None and h.next_position == nxt


def test_open_reads_no_sealed_segment_and_a_stream_read_only_its_own(open_store, log_dir):
    """Garbage (same size, same mtime) in the sealed segments of stream "old": open and
    everything about stream "new" still work, because neither reads those bytes; reading
    "old" itself finds the damage (every frame's CRC is checked when read)."""
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 10, streams=("old",))
    old_segments = sealed_segments(log_dir)
    assert len(old_segments) >= 3
    fill(s, 10, streams=("new",))
    new_events = [(e.version, e.data) for e in s.read("new")]
    s.close()
    for seg in old_segments:
        st = seg.stat()
        seg.write_bytes(random.Random(7).randbytes(st.st_size))
        os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))
    s2 = open_store(log_dir, segment_bytes=SEG_BYTES)
    assert s2.version("old") == 20 and s2.version("new") == 20
    assert s2.streams() == ["new", "old"]
    assert [(e.version, e.data) for e in s2.read("new")] == new_events
    assert s2.append("new", [ev("new", 21)], 20) == 21
    with pytest.raises(CorruptLog):
        s2.read("old")


def test_snapshot_plus_tail_of_one_stream_among_many_segments(open_store, log_dir):
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 30, streams=("a", "b", "c", "d"))
    s.save_snapshot("b", 50, {"upto": 50})
    s.close()
    s2 = open_store(log_dir, segment_bytes=SEG_BYTES)
    snap = s2.load_snapshot("b")
    assert snap is not None and snap.version == 50
    tail = s2.read("b", from_version=snap.version + 1)
    assert [e.version for e in tail] == list(range(51, 61))
    assert [e.data["n"] for e in tail] == list(range(51, 61))
    assert [e.version for e in s2.read("b", 1, 3)] == [1, 2, 3]


@pytest.mark.parametrize("which", ["all", "first", "middle", "last"])
def test_a_missing_index_is_rebuilt_at_open(open_store, log_dir, tmp_path, which, caplog):
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 15)
    before = everything(s)
    s.close()
    sealed = sealed_segments(log_dir)
    chosen = {
        "all": sealed,
        "first": sealed[:1],
        "middle": [sealed[len(sealed) // 2]],
        "last": sealed[-1:],
    }[which]
    for seg in chosen:
        index_of(seg).unlink()
    s2 = open_store(log_dir, segment_bytes=SEG_BYTES)
    assert "indexing sealed segment" in caplog.text
    for seg in sealed:
        assert segindex.matches(segindex.read_header(index_of(seg)), int(seg.stem), seg.stat())
    assert everything(s2) == before
    fill(s2, 3)
    assert everything(s2) == fresh_view(log_dir, tmp_path)


DAMAGE = {
    "empty": lambda b: b"",
    "truncated-body": lambda b: b[: len(b) - 9],
    "truncated-header": lambda b: b[:20],
    "flipped-header": lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:],
    "flipped-columns": lambda b: b[:80] + bytes([b[80] ^ 4]) + b[81:],
    "flipped-json": lambda b: b[:-3] + bytes([b[-3] ^ 2]) + b[-2:],
    "garbage": lambda b: random.Random(3).randbytes(len(b)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_index_is_ignored_and_rebuilt(open_store, log_dir, tmp_path, damage):
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 15)
    before = everything(s)
    s.close()
    sealed = sealed_segments(log_dir)
    for seg in (sealed[0], sealed[len(sealed) // 2], sealed[-1]):
        p = index_of(seg)
        p.write_bytes(DAMAGE[damage](p.read_bytes()))
    s2 = open_store(log_dir, segment_bytes=SEG_BYTES)
    assert everything(s2) == before  # damage found at open (header) or when read (body)
    for seg in sealed:
        idx = segindex.load(index_of(seg), int(seg.stem), seg.stat())
        assert idx is not None, seg  # every damaged one was written again
    assert everything(s2) == fresh_view(log_dir, tmp_path)


def test_a_stale_index_of_a_replaced_segment_is_not_trusted(open_store, log_dir):
    """A segment restored with other bytes (other size or mtime) is verified again."""
    s = open_store(segment_bytes=SEG_BYTES)
    fill(s, 10)
    s.close()
    seg = sealed_segments(log_dir)[1]
    data = bytearray(seg.read_bytes())
    data[50] ^= 0x10  # inside the first frame's payload
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as ei:
        EventStore.open(log_dir)
    assert ei.value.file == str(seg) and ei.value.offset == 0


def _acks(out: str) -> dict[str, int]:
    acked: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            acked[parts[0]] = int(parts[1])
    return acked


def _check_acked(s: EventStore, acked: dict[str, int]) -> None:
    for name, v in acked.items():
        evs = s.read(name)
        assert s.version(name) >= v, (name, v)
        assert [e.data["n"] for e in evs] == list(range(1, s.version(name) + 1))


def test_crash_at_seal_leaves_no_index_and_open_rebuilds_it(log_dir, tmp_path):
    """The child dies (SIGKILL) as it is about to rename the index of the segment it just
    sealed: the segment is sealed, its index missing, a temporary file left. Open rebuilds
    the index; the log reads as if it had been written."""
    child = subprocess.run(
        [sys.executable, CHILD, str(log_dir), "400", "1", "die-at-seal"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acked = _acks(child.stdout)
    sealed = sealed_segments(log_dir)
    assert len(sealed) == 1 and not index_of(sealed[0]).exists()
    assert list((log_dir / "index").glob(".*.tmp"))  # it died between write and rename
    with EventStore.open(log_dir, segment_bytes=400) as s:
        assert segindex.matches(
            segindex.read_header(index_of(sealed[0])), int(sealed[0].stem), sealed[0].stat()
        )
        _check_acked(s, acked)
        fill(s, 5, streams=("s0", "x"))
        assert everything(s) == fresh_view(log_dir, tmp_path)


def test_kill_9_writer_rotating_segments_at_random_moments(log_dir, tmp_path):
    """A child writing with tiny segments (a seal every few appends) is killed at random
    moments, 15 times; each time every acknowledged event is there, the indexes are whole,
    and the log reads the same as with every index built from scratch."""
    rng = random.Random(11)
    acked: dict[str, int] = {}
    for i in range(15):
        child = subprocess.Popen(
            [sys.executable, CHILD, str(log_dir), "500", str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.1, 0.5))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        for name, v in _acks(out).items():
            acked[name] = max(acked.get(name, 0), v)
        with EventStore.open(log_dir, segment_bytes=500) as s:
            _check_acked(s, acked)
            view = everything(s)
        for seg in sealed_segments(log_dir):
            assert segindex.load(index_of(seg), int(seg.stem), seg.stat()) is not None
        if i % 5 == 4:
            assert view == fresh_view(log_dir, tmp_path)
    assert sum(acked.values()) > 50 and len(sealed_segments(log_dir)) > 5


def test_a_reader_in_another_handle_follows_seals(open_store, log_dir, tmp_path):
    """A second handle that was open while many segments were sealed (by the first) reads
    across all of them, and seals in step: writes the index if the writer did not."""
    writer = open_store(segment_bytes=SEG_BYTES)
    reader = open_store(log_dir, segment_bytes=SEG_BYTES)
    fill(writer, 3)
    assert reader.head() == writer.head()
    fill(writer, 12)
    for p in (log_dir / "index").glob("*.idx"):
        p.unlink()  # as if the writer had died before each
    assert everything(reader) == everything(writer)
    for seg in sealed_segments(log_dir):
        assert segindex.load(index_of(seg), int(seg.stem), seg.stat()) is not None
    fill(reader, 2)
    assert everything(writer) == fresh_view(log_dir, tmp_path)
