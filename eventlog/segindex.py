"""Per-segment index files: ``index/<first_position:020d>.idx``, one per sealed segment.

A sealed segment never changes, so what is in it can be written down once, when it is
sealed, and opening the store then reads only the active segment. The file holds

* a header (fixed size, CRC'd on its own): the segment's first position, the position
  after its last event, its size and mtime when indexed (a segment whose size or mtime
  differ is verified and indexed again), the frame count and a CRC of the body;
* the body: the frames as five little-endian int64 columns (position, first version,
  offset, length, event count); the streams of this segment as JSON
  ``{stream: [previous segment holding it or 0, [frame numbers]]}``; and the directory
  as JSON ``{stream: [version, last segment holding it]}`` of every stream up to the end
  of this segment (the latest index's directory answers ``version`` for streams not in
  the active segment, and the chain of "previous segment" finds a stream's frames without
  reading other streams').

Written to a temporary file, fsynced, renamed into place (then the directory fsynced). A
file that fails any check is ignored and rebuilt from its segment.
"""

from __future__ import annotations

import os
import struct
import sys
import uuid
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import frames as fr
from .errors import CorruptLog, InvalidStreamId
from .model import check_stream_id
from .segments import fsync_dir, pwrite_all

INDEX_DIR = "index"
SUFFIX = ".idx"
MAGIC = b"EVX1"
# magic, body crc, first_position, next_position, segment size, segment mtime_ns,
# frames, streams-json length, dir-json length; then a crc of those bytes
_HEAD = struct.Struct("<4sIQQQqQQQ")
_HEAD_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _HEAD_CRC.size
_COLUMNS = 5  # position, first version, offset, length, count


def index_path(index_dir: Path, first_position: int) -> Path:
    return index_dir / f"{first_position:020d}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class IndexHeader:
    body_crc: int
    first_position: int
    next_position: int
    seg_size: int
    seg_mtime_ns: int
    n_frames: int
    streams_len: int
    dir_len: int


class SegIndex:
    """A loaded index: the frame columns and this segment's streams (the directory lazily)."""

    __slots__ = ("_body", "cnt", "fv", "header", "len", "off", "pos", "streams")

    def __init__(self, header: IndexHeader, body: bytes) -> None:
        n = header.n_frames
        cols = []
        for c in range(_COLUMNS):
            a = array("q")
            a.frombytes(body[c * 8 * n : (c + 1) * 8 * n])
            if sys.byteorder == "big":
                a.byteswap()
            cols.append(a)
        self.header = header
        self.pos, self.fv, self.off, self.len, self.cnt = cols
        start = _COLUMNS * 8 * n
        self.streams: dict[str, list[Any]] = orjson.loads(body[start : start + header.streams_len])
        self._body = body

    def directory(self) -> dict[str, list[int]]:
        """{stream: [version, last segment holding it]} as of the end of this segment."""
        start = _COLUMNS * 8 * self.header.n_frames + self.header.streams_len
        d: dict[str, list[int]] = orjson.loads(self._body[start : start + self.header.dir_len])
        return d


def read_header(path: Path) -> IndexHeader | None:
    """The header of an index file, or None if it is missing or does not check out."""
    try:
        with open(path, "rb") as f:
            data = f.read(HEADER_SIZE)
    except FileNotFoundError:
        return None
    return _parse_header(data)


def _parse_header(data: bytes) -> IndexHeader | None:
    if len(data) < HEADER_SIZE:
        return None
    (crc,) = _HEAD_CRC.unpack_from(data, _HEAD.size)
    if zlib.crc32(data[: _HEAD.size]) != crc:
        return None
    magic, *fields = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        return None
    return IndexHeader(*fields)


def matches(header: IndexHeader | None, first_position: int, st: os.stat_result) -> bool:
    """Does ``header`` describe the segment as it is now (position, size, mtime)?"""
    return (
        header is not None
        and header.first_position == first_position
        and header.seg_size == st.st_size
        and header.seg_mtime_ns == st.st_mtime_ns
    )


def load(path: Path, first_position: int, st: os.stat_result) -> SegIndex | None:
    """The index at ``path`` if it checks out against the segment's stat, else None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    h = _parse_header(data)
    if not matches(h, first_position, st):
        return None
    assert h is not None
    body = data[HEADER_SIZE:]
    need = _COLUMNS * 8 * h.n_frames + h.streams_len + h.dir_len
    if len(body) != need or zlib.crc32(body) != h.body_crc:
        return None
    try:
        return SegIndex(h, body)
    except (orjson.JSONDecodeError, ValueError):
        return None


def encode(
    first_position: int,
    next_position: int,
    st: os.stat_result,
    columns: Sequence[array[int]],
    streams: dict[str, list[Any]],
    directory: dict[str, list[int]],
) -> bytes:
    """The bytes of an index file."""
    n = len(columns[0])
    parts = []
    for col in columns:
        a = array("q", col)
        if len(a) != n:
            raise ValueError("index columns must have equal lengths")
        if sys.byteorder == "big":
            a.byteswap()
        parts.append(a.tobytes())
    sj = orjson.dumps(streams, option=orjson.OPT_SORT_KEYS)
    dj = orjson.dumps(directory, option=orjson.OPT_SORT_KEYS)
    body = b"".join([*parts, sj, dj])
    head = _HEAD.pack(
        MAGIC,
        zlib.crc32(body),
        first_position,
        next_position,
        st.st_size,
        st.st_mtime_ns,
        n,
        len(sj),
        len(dj),
    )
    return head + _HEAD_CRC.pack(zlib.crc32(head)) + body


def decode(data: bytes) -> SegIndex:
    """A SegIndex from bytes that ``encode`` made (and nobody damaged since)."""
    h = _parse_header(data)
    assert h is not None
    return SegIndex(h, data[HEADER_SIZE:])


def write(index_dir: Path, first_position: int, data: bytes, *, fsync: bool) -> None:
    """Write an index atomically (temporary file, fsync, rename, directory fsync)."""
    final = index_path(index_dir, first_position)
    tmp = index_dir / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            pwrite_all(fd, data, 0)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(index_dir)


def scan(
    seg_path: Path,
    first_position: int,
    prev_dir: dict[str, list[int]],
) -> tuple[int, tuple[array[int], ...], dict[str, list[Any]], dict[str, list[int]]]:
    """Verify a whole sealed segment and index it (a rebuild): every frame whole and
    CRC-valid, positions following on from ``first_position`` and versions from
    ``prev_dir`` (the directory of the segment before). Returns (next_position, columns,
    streams, directory); raises CorruptLog naming the segment and offset.
    """
    data = seg_path.read_bytes()
    cols: tuple[array[int], ...] = tuple(array("q") for _ in range(_COLUMNS))
    pos_c, fv_c, off_c, len_c, cnt_c = cols
    streams: dict[str, list[Any]] = {}
    directory = dict(prev_dir)
    next_position = first_position
    stop = fr.ScanStop(0)
    for f in fr.iter_frames(data, 0, len(data), 0, stop):
        if f.first_position != next_position:
            raise CorruptLog(
                str(seg_path),
                f.offset,
                f"frame has position {f.first_position}, expected {next_position}",
            )
        sid = f.stream_id
        entry = streams.get(sid)
        if entry is None:
            try:
                check_stream_id(sid)
            except InvalidStreamId as e:
                raise CorruptLog(str(seg_path), f.offset, str(e)) from e
            entry = streams[sid] = [prev_dir[sid][1] if sid in prev_dir else 0, []]
        version = directory[sid][0] if sid in directory else 0
        if f.first_version != version + 1:
            raise CorruptLog(
                str(seg_path),
                f.offset,
                f"frame of stream {sid!r} starts at version {f.first_version}, "
                f"expected {version + 1}",
            )
        entry[1].append(len(pos_c))
        directory[sid] = [f.first_version + f.n_events - 1, first_position]
        pos_c.append(f.first_position)
        fv_c.append(f.first_version)
        off_c.append(f.offset)
        len_c.append(f.length)
        cnt_c.append(f.n_events)
        next_position += f.n_events
    if stop.problem is not None:
        raise CorruptLog(str(seg_path), stop.offset, f"{stop.problem} in a sealed segment")
    return next_position, cols, streams, directory
