"""EventStore: the file backend (a directory of segments, a lock file and snapshots).

Writers: every commit holds the commit lock (``locking.py``); under it the store catches
up on frames other processes appended, checks expected versions, writes one frame per
append group, fdatasyncs and only then answers. Concurrent appends from threads of one
process are gathered into one write and one fdatasync (group commit).

Readers catch up without the lock: they index complete, CRC-valid frames up to the current
file size and leave an incomplete tail alone (it may be a write in progress).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from . import frames as fr
from . import segindex
from .errors import (
    CorruptLog,
    EventLogError,
    InvalidStreamId,
    StoreFailed,
    WrongExpectedVersion,
)
from .groupcommit import GroupCommit, Pending
from .locking import CommitLock, close_commit_lock, open_commit_lock
from .model import NewEvent, RecordedEvent, Snapshot, check_stream_id, make_recorded
from .segments import (
    READ_CHUNK,
    fsync_dir,
    list_segments,
    pread_exact,
    pwrite_all,
    segment_name,
)
from .snapshots import read_snapshot, write_snapshot

log = logging.getLogger("eventlog")


class _Segment:
    """A segment file and its read descriptor, opened on first use (under _index_lock)."""

    __slots__ = ("_fd", "first_position", "next_position", "path")

    def __init__(self, first_position: int, path: Path) -> None:
        self.first_position = first_position
        self.next_position = 0  # once sealed: the position after its last event
        self.path = path
        self._fd = -1

    @property
    def rfd(self) -> int:
        return self._fd if self._fd >= 0 else self.open()

    def open(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Stream:
    """A stream with frames in the active segment."""

    __slots__ = ("fi", "fv", "version")

    def __init__(self, version: int) -> None:
        self.version = version  # the stream's current version (all segments)
        self.fv = array("q")  # first version of each of its frames in the active segment
        self.fi = array("q")  # index of that frame in the store's (active) frame arrays


_INDEX_CACHE = 8  # sealed segments' indexes kept loaded (least recently used dropped)


class _Request(Pending):
    __slots__ = ("count", "expected", "payload", "sid", "stream_id")

    def __init__(self, stream_id: str, payload: bytes, count: int, expected: int) -> None:
        super().__init__()
        self.stream_id = stream_id
        self.sid = stream_id.encode("ascii")
        self.payload = payload
        self.count = count
        self.expected = expected


class EventStore:
    """An append-only store of event streams with a global order. Thread- and process-safe."""

    def __init__(self, root: Path, lock: CommitLock, *, fsync: bool, segment_bytes: int) -> None:
        self._root = root
        self._seg_dir = root / "segments"
        self._seg_dir_s = str(self._seg_dir)
        self._snap_dir = root / "snapshots"
        self._lock = lock
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._idx_dir = root / segindex.INDEX_DIR
        self._segments: list[_Segment] = []  # the sealed ones, then the active one
        self._tail = 0  # end of the last indexed frame in the last segment
        self._next_position = 1
        # The active segment only, one entry per frame in order. Sealed segments are
        # described by their index files (segindex.py), loaded when needed.
        self._f_pos = array("q")
        self._f_fv = array("q")
        self._f_off = array("q")
        self._f_len = array("q")
        self._f_cnt = array("q")
        self._streams: dict[str, _Stream] = {}  # streams with frames in the active segment
        # {stream: [version, last sealed segment holding it]} as of the last sealed segment:
        # the latest index's directory, loaded on first use
        self._dir: dict[str, list[int]] | None = None
        self._idx_cache: OrderedDict[int, segindex.SegIndex] = OrderedDict()
        self._index_lock = threading.Lock()
        self._group: GroupCommit[_Request] = GroupCommit(self._commit)
        self._inflight: int | None = None  # offset of our own write in progress, if any
        self._wfd: int | None = None  # write descriptor of the last segment
        self._wseg: _Segment | None = None
        self._failed: str | None = None
        self._closed = False

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(
        cls, path: str | Path, *, fsync: bool = True, segment_bytes: int = 64 * 2**20
    ) -> EventStore:
        """Open (creating if needed) the store in directory ``path``, recovering its tail."""
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        root = Path(path)
        created = not root.exists()
        for d in (root, root / "segments", root / "snapshots", root / segindex.INDEX_DIR):
            d.mkdir(parents=True, exist_ok=True)
        if created and fsync:
            fsync_dir(root)
            fsync_dir(root.parent)
        lock = open_commit_lock(root / "LOCK")
        store = cls(root, lock, fsync=fsync, segment_bytes=segment_bytes)
        try:
            lock.acquire()
            try:
                store._recover()
            finally:
                lock.release()
        except BaseException:
            store._close_files()
            close_commit_lock(lock)
            raise
        return store

    def _recover(self) -> None:
        on_disk = list_segments(self._seg_dir)
        if not on_disk:
            p = self._seg_dir / segment_name(1)
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o644))
            if self._fsync:
                fsync_dir(self._seg_dir)
            on_disk = [(1, p)]
        first, first_path = on_disk[0]
        if first != 1:
            raise CorruptLog(str(first_path), 0, "the first segment does not start at position 1")
        self._segments = [_Segment(f, p) for f, p in on_disk]
        with self._index_lock:
            # Sealed segments: only their index headers are read (and their files stat'ed);
            # one without a matching index (a crash at seal, a changed file) is verified and
            # indexed again. The chain of positions must have no gap.
            expected = 1
            for i, seg in enumerate(self._segments):
                if seg.first_position != expected:
                    raise CorruptLog(
                        str(seg.path), 0, "segment does not continue the log (a gap before it)"
                    )
                if i == len(self._segments) - 1:
                    break
                h = segindex.read_header(segindex.index_path(self._idx_dir, expected))
                if not segindex.matches(h, expected, os.stat(seg.path)):
                    h = self._index(i).header
                assert h is not None
                seg.next_position = expected = h.next_position
            self._next_position = expected
            self._catch_up(writer=True)
            for seg in self._segments[:-1]:
                seg.close()  # reopened when read: a long log need not hold a descriptor each

    def close(self) -> None:
        """Close the store; later calls raise EventLogError. Waits for a commit in progress."""
        with self._group.turn:
            if self._closed:
                return
            self._closed = True
            with self._index_lock:
                self._close_files()
            close_commit_lock(self._lock)

    def _close_files(self) -> None:
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        for s in self._segments:
            s.close()
        self._segments = []

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise EventLogError("the event store is closed")

    # ------------------------------------------------------------------ indexing

    def _catch_up(self, *, writer: bool) -> None:
        """Index frames appended since we last looked. Caller holds _index_lock.

        ``writer``: the caller holds the commit lock, so nobody is writing: a bad tail is a
        torn write (truncated) or corruption (CorruptLog). Otherwise a bad tail is left alone.
        """
        if self._closed:
            raise EventLogError("the event store is closed")
        while True:
            seg_i = len(self._segments) - 1
            seg = self._segments[seg_i]
            size = os.fstat(seg.rfd).st_size
            if size < self._tail:
                raise CorruptLog(
                    str(seg.path), size, f"segment shrank below offset {self._tail} already read"
                )
            limit = size if self._inflight is None else min(size, self._inflight)
            problem = self._scan_segment(seg_i, limit) if limit > self._tail else None
            if problem is not None:
                if writer:
                    self._repair_tail(seg, problem)
                elif self._inflight is None and self._sealed(seg):
                    # sealed while we looked? then it is complete now, or it is corrupt
                    problem = self._scan_segment(seg_i, os.fstat(seg.rfd).st_size)
                    if problem is not None:
                        raise CorruptLog(
                            str(seg.path), self._tail, f"{problem} in a sealed segment"
                        )
                else:
                    return  # maybe a write in progress; the next writer repairs a torn tail
            if self._inflight is not None:
                return
            if self._next_position == seg.first_position:
                return  # an empty segment: nothing can follow it yet
            nxt = os.path.join(self._seg_dir_s, segment_name(self._next_position))
            if not os.path.exists(nxt):
                return
            # the writer fills a segment completely before it creates the next one
            size = os.fstat(seg.rfd).st_size
            if size > self._tail:
                problem = self._scan_segment(seg_i, size)
                if problem is not None or self._tail != size:
                    off = self._tail
                    raise CorruptLog(str(seg.path), off, problem or "bad data in a sealed segment")
            self._seal_active()
            self._segments.append(_Segment(self._next_position, Path(nxt)))
            self._tail = 0

    # ------------------------------------------------------------------ sealed segments

    def _seal_active(self) -> None:
        """The active segment is complete (a later one exists): write its index file if it
        has none, fold its streams into the directory, and start the next one empty.
        Caller holds _index_lock. Losing the index file (crash, error) only costs a rebuild.
        """
        seg = self._segments[-1]
        seg.next_position = self._next_position
        old = self._directory()
        streams: dict[str, list[Any]] = {}
        for sid, st in self._streams.items():
            prev = old.get(sid)
            streams[sid] = [prev[1] if prev else 0, list(st.fi)]
        path = segindex.index_path(self._idx_dir, seg.first_position)
        st_seg = os.stat(seg.path)
        if not segindex.matches(segindex.read_header(path), seg.first_position, st_seg):
            directory = dict(old)
            for sid, st in self._streams.items():
                directory[sid] = [st.version, seg.first_position]
            cols = (self._f_pos, self._f_fv, self._f_off, self._f_len, self._f_cnt)
            data = segindex.encode(
                seg.first_position, self._next_position, st_seg, cols, streams, directory
            )
            try:
                segindex.write(self._idx_dir, seg.first_position, data, fsync=self._fsync)
            except OSError as e:
                log.warning("event log %s: could not write index %s: %s", self._root, path, e)
        for sid, st in self._streams.items():
            old[sid] = [st.version, seg.first_position]
        self._f_pos, self._f_fv, self._f_off = array("q"), array("q"), array("q")
        self._f_len, self._f_cnt = array("q"), array("q")
        self._streams = {}

    def _directory(self) -> dict[str, list[int]]:
        """{stream: [version, last segment]} up to the last sealed one. Holds _index_lock."""
        if self._dir is None:
            n = len(self._segments) - 1
            self._dir = self._index(n - 1).directory() if n > 0 else {}
        return self._dir

    def _sealed_version(self, stream_id: str) -> int:
        e = self._directory().get(stream_id)
        return e[0] if e else 0

    def _version_locked(self, stream_id: str) -> int:
        st = self._streams.get(stream_id)
        return st.version if st is not None else self._sealed_version(stream_id)

    def _index(self, i: int) -> segindex.SegIndex:
        """The index of sealed segment number ``i``, rebuilt if missing or damaged (and
        then the ones before it as needed: each index builds on the previous directory).
        Holds _index_lock."""
        seg = self._segments[i]
        got = self._idx_cache.get(seg.first_position)
        if got is not None:
            self._idx_cache.move_to_end(seg.first_position)
            return got
        j = i
        loaded: segindex.SegIndex | None = None
        while j >= 0:
            s = self._segments[j]
            cached = self._idx_cache.get(s.first_position)
            loaded = cached or segindex.load(
                segindex.index_path(self._idx_dir, s.first_position),
                s.first_position,
                os.stat(s.path),
            )
            if loaded is not None:
                break
            j -= 1
        if j < i:
            prev_dir = loaded.directory() if loaded is not None else {}
            for k in range(j + 1, i + 1):
                loaded, prev_dir = self._rebuild(k, prev_dir)
        assert loaded is not None
        self._idx_cache[seg.first_position] = loaded
        while len(self._idx_cache) > _INDEX_CACHE:
            self._idx_cache.popitem(last=False)
        return loaded

    def _rebuild(
        self, i: int, prev_dir: dict[str, list[int]]
    ) -> tuple[segindex.SegIndex, dict[str, list[int]]]:
        seg = self._segments[i]
        log.warning("event log %s: indexing sealed segment %s again", self._root, seg.path)
        st_seg = os.stat(seg.path)
        nxt, cols, streams, directory = segindex.scan(seg.path, seg.first_position, prev_dir)
        if i + 1 < len(self._segments) and self._segments[i + 1].first_position != nxt:
            raise CorruptLog(
                str(self._segments[i + 1].path),
                0,
                "segment does not continue the log (a gap before it)",
            )
        data = segindex.encode(seg.first_position, nxt, st_seg, cols, streams, directory)
        try:
            segindex.write(self._idx_dir, seg.first_position, data, fsync=self._fsync)
        except OSError as e:
            log.warning("event log %s: could not write an index: %s", self._root, e)
        return segindex.decode(data), directory

    def _scan_segment(self, seg_i: int, end: int) -> str | None:
        """Index the good frames of the last segment from self._tail up to ``end``.

        Returns None when it reached ``end``, else why it stopped (self._tail is there).
        """
        seg = self._segments[seg_i]
        while self._tail < end:
            pos = self._tail
            buf = pread_exact(seg.rfd, min(READ_CHUNK, end - pos), pos)
            if not buf:
                return fr.INCOMPLETE
            if len(buf) >= fr.HEADER_SIZE and buf[:4] == fr.MAGIC:
                need = fr.HEADER.unpack_from(buf, 0)[1]
                if len(buf) < need <= end - pos:  # one frame larger than a chunk
                    buf = pread_exact(seg.rfd, need, pos)
            problem = self._index_buffer(seg_i, buf, pos)
            if problem is None:
                continue
            if problem == fr.INCOMPLETE and self._tail > pos and pos + len(buf) < end:
                continue  # the chunk ended inside a frame
            return problem
        return None

    def _index_buffer(self, seg_i: int, buf: bytes, base: int) -> str | None:
        """Index the good frames at the start of ``buf`` (read at offset ``base``).

        Returns None if it indexed all of ``buf``, else why it stopped. Raises CorruptLog for
        a CRC-valid frame out of order. (fr.parse_frame, inlined: this loop runs at open.)
        """
        seg = self._segments[seg_i]
        mv = memoryview(buf)
        n = len(buf)
        pos = 0
        unpack, crc32 = fr.HEADER.unpack_from, zlib.crc32
        hs, magic_ok, max_frame = fr.HEADER_SIZE, fr.MAGIC, fr.MAX_FRAME
        streams = self._streams
        f_pos, f_fv, f_off = self._f_pos, self._f_fv, self._f_off
        f_len, f_cnt = self._f_len, self._f_cnt
        next_position = self._next_position
        problem: str | None = None
        try:
            while True:
                if n - pos < hs:
                    if pos < n:
                        got = fr.parse_frame(buf, pos, n)
                        problem = got if isinstance(got, str) else fr.BAD_HEADER
                    break
                magic, length, crc, fp, fv, _ra, count, sid_len, flags = unpack(buf, pos)
                end = pos + length
                if (
                    magic != magic_ok
                    or not hs + sid_len + 2 <= length <= max_frame
                    or end > n
                    or crc32(mv[pos + 12 : end]) != crc
                    or not count
                    or flags
                    or not sid_len
                    or not fp
                    or not fv
                ):
                    got = fr.parse_frame(buf, pos, n)
                    problem = got if isinstance(got, str) else fr.BAD_HEADER
                    break
                try:
                    sid = buf[pos + hs : pos + hs + sid_len].decode("ascii")
                except UnicodeDecodeError:
                    problem = fr.BAD_HEADER
                    break
                if fp != next_position:
                    raise CorruptLog(
                        str(seg.path),
                        base + pos,
                        f"frame has position {fp}, expected {next_position}",
                    )
                st = streams.get(sid)
                if st is None:
                    try:
                        check_stream_id(sid)
                    except InvalidStreamId as e:
                        raise CorruptLog(str(seg.path), base + pos, str(e)) from e
                    st = streams[sid] = _Stream(self._sealed_version(sid))
                if fv != st.version + 1:
                    raise CorruptLog(
                        str(seg.path),
                        base + pos,
                        f"frame of stream {sid!r} starts at version {fv}, "
                        f"expected {st.version + 1}",
                    )
                st.fv.append(fv)
                st.fi.append(len(f_pos))
                st.version = fv + count - 1
                f_pos.append(fp)
                f_fv.append(fv)
                f_off.append(base + pos)
                f_len.append(length)
                f_cnt.append(count)
                next_position = fp + count
                pos = end
        finally:
            self._next_position = next_position
            self._tail = base + pos
        return problem

    def _sealed(self, seg: _Segment) -> bool:
        """Does a later segment exist? (Then ``seg`` is complete and never changes again.)"""
        return any(first > seg.first_position for first, _ in list_segments(self._seg_dir))

    def _repair_tail(self, seg: _Segment, problem: str) -> None:
        """Under the commit lock: truncate a torn tail, or raise CorruptLog if it is not one."""
        off = self._tail
        if self._sealed(seg):
            raise CorruptLog(str(seg.path), off, f"{problem} in a sealed segment")
        size = os.fstat(seg.rfd).st_size
        rest = pread_exact(seg.rfd, size - off, off)
        if fr.find_frame_after(rest, 1) is not None:
            raise CorruptLog(str(seg.path), off, f"{problem}, and valid frames follow it")
        log.warning(
            "event log %s: dropping a torn tail of %d bytes at offset %d (%s)",
            seg.path,
            size - off,
            off,
            problem,
        )
        fd = os.open(seg.path, os.O_RDWR)
        try:
            os.ftruncate(fd, off)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ append

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        """Append ``events`` as one atomic group; returns the stream's new version.

        ``expected_version`` must be the stream's current version (0 for a new stream), else
        WrongExpectedVersion and nothing is written. Returns once the group is fdatasynced.
        """
        check_stream_id(stream_id)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise TypeError("expected_version must be an int")
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if not events:
            actual = self.version(stream_id)
            if actual != expected_version:
                raise WrongExpectedVersion(stream_id, expected_version, actual)
            return actual
        payload = fr.encode_payload(events)
        self._check_usable()
        if self._failed is not None:
            raise StoreFailed(self._failed)
        req = _Request(stream_id, payload, len(events), expected_version)
        # Group commit (eventlog/groupcommit.py): one write + one fdatasync for everything
        # queued meanwhile.
        return self._group.submit(req)

    def _commit(self, batch: list[_Request]) -> None:
        """Write a batch of append requests as one write + one fdatasync. Holds the turn."""
        accepted: list[_Request] = []
        try:
            if self._closed:
                raise EventLogError("the event store is closed")
            if self._failed is not None:
                raise StoreFailed(self._failed)
            self._lock.acquire()
            try:
                with self._index_lock:
                    self._catch_up(writer=True)
                    pending = {r.stream_id: self._version_locked(r.stream_id) for r in batch}
                position = self._next_position
                now = time.time()
                out: list[tuple[_Request, bytes, int, int]] = []
                for r in batch:
                    current = pending[r.stream_id]
                    if r.expected != current:
                        r.error = WrongExpectedVersion(r.stream_id, r.expected, current)
                        continue
                    frame = fr.encode_frame(r.sid, position, current + 1, now, r.count, r.payload)
                    out.append((r, frame, position, current + 1))
                    accepted.append(r)
                    pending[r.stream_id] = current + r.count
                    position += r.count
                if out:
                    self._write(out)
            finally:
                self._lock.release()
        except BaseException as e:
            for r in batch:
                if r.error is None and r.version == 0:
                    r.error = e
        finally:
            for r in batch:
                r.done = True
                r.wake.release()

    def _writer_fd(self) -> int:
        seg = self._segments[-1]
        if self._wseg is not seg or self._wfd is None:
            if self._wfd is not None:
                os.close(self._wfd)
                self._wfd = None
            self._wfd = os.open(seg.path, os.O_RDWR)
            self._wseg = seg
        return self._wfd

    def _write(self, out: list[tuple[_Request, bytes, int, int]]) -> None:
        """Write frames (rotating segments as needed), fdatasync, then index them."""
        # Plan: runs of frames per segment; a new segment starts when the active one is full.
        runs: list[tuple[int | None, int, list[tuple[_Request, bytes, int, int]]]] = []
        offset = self._tail
        current: list[tuple[_Request, bytes, int, int]] = []
        new_first: int | None = None
        run_start = offset
        for item in out:
            if offset >= self._segment_bytes and offset > 0 and current:
                runs.append((new_first, run_start, current))
                current, new_first, offset, run_start = [], item[2], 0, 0
            elif offset >= self._segment_bytes and offset > 0:
                new_first, offset, run_start = item[2], 0, 0
            current.append(item)
            offset += len(item[1])
        runs.append((new_first, run_start, current))

        fd = self._writer_fd()
        start = self._tail
        created: list[Path] = []
        new_segments: list[_Segment] = []
        with self._index_lock:
            self._inflight = start
        try:
            try:
                for first, off, items in runs:
                    if first is not None:
                        p = self._seg_dir / segment_name(first)
                        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                        created.append(p)
                        try:
                            new_segments.append(_Segment(first, p))
                            if self._fsync:
                                fsync_dir(self._seg_dir)
                            self._write_run(fd, off, items)
                        finally:
                            os.close(fd)
                    else:
                        self._write_run(fd, off, items)
            except OSError as e:
                self._fail_closed(start, created, new_segments, e)
                raise StoreFailed(
                    f"event store failed closed: {e}; nothing in this commit is acknowledged; "
                    "open the store again"
                ) from e
            # durable: index what we wrote
            with self._index_lock:
                for first, _off, items in runs:
                    if first is not None:
                        self._seal_active()  # the previous one is complete
                        self._segments.append(new_segments.pop(0))
                        self._tail = 0
                    streams = self._streams
                    f_pos, f_fv, f_off = self._f_pos, self._f_fv, self._f_off
                    f_len, f_cnt = self._f_len, self._f_cnt
                    tail = self._tail
                    for r, frame, position, first_version in items:
                        st = streams.get(r.stream_id)
                        if st is None:
                            st = streams[r.stream_id] = _Stream(first_version - 1)
                        st.fv.append(first_version)
                        st.fi.append(len(f_pos))
                        st.version = r.version = first_version + r.count - 1
                        f_pos.append(position)
                        f_fv.append(first_version)
                        f_off.append(tail)
                        f_len.append(len(frame))
                        f_cnt.append(r.count)
                        tail += len(frame)
                    self._tail = tail
                    last = items[-1]
                    self._next_position = last[2] + last[0].count
        finally:
            with self._index_lock:
                self._inflight = None

    def _write_run(
        self, fd: int, offset: int, items: list[tuple[_Request, bytes, int, int]]
    ) -> None:
        pwrite_all(fd, b"".join(item[1] for item in items), offset)
        if self._fsync:
            os.fdatasync(fd)  # an error here is final: the caller fails closed, never retries

    def _fail_closed(
        self, start: int, created: list[Path], new_segments: list[_Segment], err: OSError
    ) -> None:
        """Undo what we can of a failed commit and refuse all later appends. No fsync retry."""
        self._failed = f"a write or fsync failed earlier ({err})"
        log.error("event log %s: write/fsync failed (%s); failing closed", self._root, err)
        for s in new_segments:
            s.close()
        for p in created:
            with contextlib.suppress(OSError):
                p.unlink()
        try:
            if self._wfd is not None:
                os.ftruncate(self._wfd, start)
        except OSError as e:
            log.error("event log %s: could not truncate after failure: %s", self._root, e)

    # ------------------------------------------------------------------ reads

    def version(self, stream_id: str) -> int:
        """The stream's current version; 0 for an unknown stream."""
        check_stream_id(stream_id)
        with self._index_lock:
            self._catch_up(writer=False)
            return self._version_locked(stream_id)

    def head(self) -> int:
        """The highest global position committed (as far as this process has seen)."""
        with self._index_lock:
            self._catch_up(writer=False)
            return self._next_position - 1

    def streams(self, prefix: str = "") -> list[str]:
        """The ids of all streams that start with ``prefix``, sorted."""
        with self._index_lock:
            self._catch_up(writer=False)
            names = set(self._directory())
            names.update(self._streams)
        return sorted(n for n in names if n.startswith(prefix))

    def read(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with from_version <= version <= to_version, at most ``limit``."""
        check_stream_id(stream_id)
        lo = max(from_version, 1)
        hi = to_version
        if (hi is not None and hi < lo) or (limit is not None and limit <= 0):
            return []
        with self._index_lock:
            self._catch_up(writer=False)
            version = self._version_locked(stream_id)
            if lo > version:
                return []
            top = version if hi is None else min(hi, version)
            if limit is not None:
                top = min(top, lo + limit - 1)
            locs = self._stream_frames(stream_id, lo, top)
        out: list[RecordedEvent] = []
        make = make_recorded
        for seg, off, length in locs:
            buf = pread_exact(seg.rfd, length, off)
            got = fr.read_frame(buf, 0, length)
            if isinstance(got, str):
                raise CorruptLog(str(seg.path), off, f"{got} in a frame read before")
            sid, v, p, ra, rows = got
            if sid != stream_id:
                raise CorruptLog(str(seg.path), off, "the index points at another stream's frame")
            for eid, typ, data, meta in rows:
                if lo <= v <= top:
                    out.append(make(sid, v, typ, data, ra, p, eid, meta))
                v += 1
                p += 1
        return out

    def _stream_frames(self, stream_id: str, lo: int, top: int) -> list[tuple[_Segment, int, int]]:
        """(segment, offset, length) of the stream's frames holding versions lo..top, in
        order: the active segment's, then back along the chain of sealed segments that hold
        the stream (each index names the previous one), never touching other streams' data.
        Holds _index_lock."""
        parts: list[list[tuple[_Segment, int, int]]] = []
        st = self._streams.get(stream_id)
        earliest = top + 1  # first version of the frames collected so far
        if st is not None:
            seg = self._segments[-1]
            j = max(bisect_right(st.fv, lo) - 1, 0)
            k = bisect_right(st.fv, top)
            parts.append([(seg, self._f_off[g], self._f_len[g]) for g in st.fi[j:k]])
            earliest = st.fv[0]
        prev = 0
        if earliest > lo:
            e = self._directory().get(stream_id)
            prev = e[1] if e else 0
        while earliest > lo and prev:
            i = bisect_right(self._segments, prev, key=lambda s: s.first_position) - 1
            seg = self._segments[i]
            idx = self._index(i)
            entry = idx.streams.get(stream_id)
            if seg.first_position != prev or entry is None:
                raise CorruptLog(str(seg.path), 0, f"its index lacks stream {stream_id!r}")
            prev, frames = entry
            fvs = [idx.fv[g] for g in frames]
            j = max(bisect_right(fvs, lo) - 1, 0)
            k = bisect_right(fvs, top)
            parts.append([(seg, idx.off[g], idx.len[g]) for g in frames[j:k]])
            earliest = fvs[0]
        out = [loc for part in reversed(parts) for loc in part]
        for seg, _, _ in out:
            seg.open()  # under the lock: never two descriptors for one segment
        return out

    def read_all(self, after: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        """Events of all streams with position > ``after``, ascending, at most ``limit``."""
        if limit is not None and limit <= 0:
            return []
        after = max(after, 0)
        plan: list[tuple[_Segment, array[int], array[int]]] = []
        with self._index_lock:
            self._catch_up(writer=False)
            last = self._next_position - 1
            if limit is not None:
                last = min(last, after + limit)
            if after >= last:
                return []
            active = len(self._segments) - 1
            i = max(bisect_right(self._segments, after + 1, key=lambda s: s.first_position) - 1, 0)
            for seg_i in range(i, active + 1):
                seg = self._segments[seg_i]
                if seg.first_position > last:
                    break
                if seg_i == active:
                    f_pos, f_off, f_len = self._f_pos, self._f_off, self._f_len
                else:
                    idx = self._index(seg_i)
                    f_pos, f_off, f_len = idx.pos, idx.off, idx.len
                j = max(bisect_right(f_pos, after + 1) - 1, 0)
                k = bisect_right(f_pos, last)
                if j < k:
                    seg.open()
                    plan.append((seg, f_off[j:k], f_len[j:k]))
        out: list[RecordedEvent] = []
        for seg, offs, lens in plan:
            n = len(offs)
            i = 0
            while i < n:
                # a chunk: consecutive frames, about READ_CHUNK bytes (one frame at least)
                start = offs[i]
                e = max(i + 1, bisect_left(offs, start + READ_CHUNK, i))
                self._decode_chunk(seg, start, offs[i:e], lens[i:e], after, last, out)
                i = e
        return out

    @staticmethod
    def _decode_chunk(
        seg: _Segment,
        start: int,
        offs: array[int],
        lens: array[int],
        after: int,
        last: int,
        out: list[RecordedEvent],
    ) -> None:
        buf = pread_exact(seg.rfd, offs[-1] + lens[-1] - start, start)
        # The replay hot loop: fr.read_frame inlined (a call per frame costs ~10% here).
        mv = memoryview(buf)
        unpack, crc32, loads, make = fr.HEADER.unpack_from, zlib.crc32, orjson.loads, make_recorded
        append = out.append
        magic_ok, hs, cs = fr.MAGIC, fr.HEADER_SIZE, fr.CRC_START
        for off, length in zip(offs, lens, strict=True):
            pos = off - start
            end = pos + length
            if end > len(buf):
                raise CorruptLog(str(seg.path), off, "frame read before is cut short")
            magic, flen, crc, p, v, ra, _n, sid_len, _fl = unpack(buf, pos)
            if magic != magic_ok or flen != length or crc32(mv[pos + cs : end]) != crc:
                raise CorruptLog(str(seg.path), off, "frame read before no longer checks out")
            s = pos + hs
            sid = buf[s : s + sid_len].decode("ascii")
            rows = loads(mv[s + sid_len : end])
            if after < p and p + len(rows) - 1 <= last:
                for eid, typ, data, meta in rows:
                    append(make(sid, v, typ, data, ra, p, eid, meta))
                    v += 1
                    p += 1
                continue
            for eid, typ, data, meta in rows:
                if after < p <= last:
                    append(make(sid, v, typ, data, ra, p, eid, meta))
                v += 1
                p += 1

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, stream_id: str, version: int, state: dict[str, Any]) -> None:
        """Store ``state`` as the fold of the stream's events 1..version (atomic replace)."""
        check_stream_id(stream_id)
        current = self.version(stream_id)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= current:
            raise ValueError(
                f"snapshot version {version!r} for stream {stream_id!r} must be in 1..{current}"
            )
        if not isinstance(state, dict):
            raise TypeError("snapshot state must be a dict")
        write_snapshot(self._snap_dir, stream_id, version, state, fsync=self._fsync)

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's latest snapshot; None if there is none or it is damaged (logged)."""
        check_stream_id(stream_id)
        snap = read_snapshot(self._snap_dir, stream_id)
        if snap is not None and snap.version > self.version(stream_id):
            log.warning(
                "ignoring snapshot of %r at version %d: the stream has only %d events",
                stream_id,
                snap.version,
                self.version(stream_id),
            )
            return None
        return snap
