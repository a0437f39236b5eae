"""The frame codec: one frame per append group.

Layout (little-endian), 44 bytes of header then the stream id then the payload::

    0   4  magic            b"EVT1"
    4   4  frame_len  u32   whole frame, header included
    8   4  crc32      u32   zlib.crc32 of bytes [12, frame_len)
    12  8  first_position u64
    20  8  first_version  u64
    28  8  recorded_at    f64 (unix seconds)
    36  4  count      u32   events in the group (>= 1)
    40  2  sid_len    u16   stream id length in bytes (ASCII)
    42  2  flags      u16   0 (reserved)
    44  .. stream id, then the payload: orjson of [[event_id, type, data, metadata], ...]
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from random import getrandbits
from typing import Any, NamedTuple

import orjson

from .errors import SerializationError
from .model import NewEvent

MAGIC = b"EVT1"
HEADER = struct.Struct("<4sIIQQdIHH")
HEADER_SIZE = HEADER.size  # 44
_FIELDS = struct.Struct("<QQdIHH")
CRC_START = 12
MAX_FRAME = 1 << 30  # a group larger than 1 GiB is refused

# Why a scan stopped. INCOMPLETE: the bytes end inside a frame (a write in progress or torn).
INCOMPLETE = "incomplete frame"
BAD_MAGIC = "bad magic"
BAD_LENGTH = "bad frame length"
BAD_CRC = "checksum mismatch"
BAD_HEADER = "bad header field"

_DUMP_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class FrameInfo(NamedTuple):
    offset: int  # absolute byte offset of the frame in its file
    length: int
    first_position: int
    first_version: int
    recorded_at: float
    n_events: int
    stream_id: str
    payload: bytes


def dumps(value: Any, what: str) -> bytes:
    """orjson-encode ``value`` strictly (no datetimes, dataclasses, non-str keys)."""
    try:
        return orjson.dumps(value, option=_DUMP_OPTS)
    except (TypeError, orjson.JSONEncodeError) as e:
        raise SerializationError(f"{what} cannot be serialized as JSON: {e}") from e


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_event_id() -> str:
    """A random (version 4) UUID as 32 hex digits, in the format of uuid.uuid4().hex.

    The bits come from the ``random`` module (seeded from os.urandom, reseeded in a forked
    child), not from a system call per id: ids must be unique, not unguessable.
    """
    return f"{getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


def encode_payload(events: Sequence[NewEvent]) -> bytes:
    """Check and encode a group of new events; raises SerializationError, writes nothing."""
    rows = []
    for i, ev in enumerate(events):
        if not isinstance(ev, NewEvent):
            raise SerializationError(f"event {i} is {type(ev).__name__}, not NewEvent")
        if not isinstance(ev.type, str) or not ev.type:
            raise SerializationError(f"event {i}: type must be a non-empty str")
        if not isinstance(ev.data, dict):
            raise SerializationError(f"event {i} ({ev.type}): data must be a dict")
        meta = {} if ev.metadata is None else ev.metadata
        if not isinstance(meta, dict):
            raise SerializationError(f"event {i} ({ev.type}): metadata must be a dict or None")
        rows.append([new_event_id(), ev.type, ev.data, meta])
    payload = dumps(rows, "event data")
    if len(payload) > MAX_FRAME - HEADER_SIZE - 256:
        raise SerializationError(f"event group of {len(payload)} bytes is too large")
    return payload


def encode_frame(
    stream_id: bytes,
    first_position: int,
    first_version: int,
    recorded_at: float,
    count: int,
    payload: bytes,
) -> bytes:
    fields = _FIELDS.pack(first_position, first_version, recorded_at, count, len(stream_id), 0)
    crc = zlib.crc32(payload, zlib.crc32(stream_id, zlib.crc32(fields)))
    length = HEADER_SIZE + len(stream_id) + len(payload)
    return b"".join((MAGIC, struct.pack("<II", length, crc), fields, stream_id, payload))


def parse_frame(buf: bytes, pos: int, end: int, base: int = 0) -> FrameInfo | str:
    """Parse the frame at ``buf[pos:]`` (not past ``end``): a FrameInfo, or why not."""
    if end - pos < HEADER_SIZE:
        n = min(4, end - pos)
        return INCOMPLETE if buf[pos : pos + n] == MAGIC[:n] else BAD_MAGIC
    magic, length, crc, fp, fv, ra, count, sid_len, flags = HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        return BAD_MAGIC
    if length < HEADER_SIZE + sid_len + 2 or length > MAX_FRAME:
        return BAD_LENGTH
    if pos + length > end:
        return INCOMPLETE
    if zlib.crc32(memoryview(buf)[pos + CRC_START : pos + length]) != crc:
        return BAD_CRC
    if count == 0 or flags != 0 or sid_len == 0 or fp == 0 or fv == 0:
        return BAD_HEADER
    s = pos + HEADER_SIZE
    try:
        sid = buf[s : s + sid_len].decode("ascii")
    except UnicodeDecodeError:
        return BAD_HEADER
    return FrameInfo(base + pos, length, fp, fv, ra, count, sid, buf[s + sid_len : pos + length])


class ScanStop:
    """Where and why an iteration over frames stopped (filled in as it runs)."""

    __slots__ = ("offset", "problem")

    def __init__(self, offset: int) -> None:
        self.offset = offset  # absolute offset just after the last good frame
        self.problem: str | None = None  # None: reached the end cleanly


def iter_frames(buf: bytes, start: int, end: int, base: int, stop: ScanStop) -> Iterator[FrameInfo]:
    """Yield the good frames of ``buf[start:end]``; ``stop`` says where and why it stopped."""
    pos = start
    while pos < end:
        got = parse_frame(buf, pos, end, base)
        if isinstance(got, str):
            stop.offset = base + pos
            stop.problem = got
            return
        yield got
        pos += got.length
    stop.offset = base + pos
    stop.problem = None


def find_frame_after(buf: bytes, start: int) -> int | None:
    """Offset of the first CRC-valid frame at or after ``start`` in ``buf``, or None."""
    i = buf.find(MAGIC, start)
    while i != -1:
        if isinstance(parse_frame(buf, i, len(buf)), FrameInfo):
            return i
        i = buf.find(MAGIC, i + 1)
    return None


_unpack_header = HEADER.unpack_from
_crc32 = zlib.crc32
_loads = orjson.loads


def read_frame(
    buf: bytes, pos: int, length: int
) -> tuple[str, int, int, float, list[list[Any]]] | str:
    """Check and decode the frame of known ``length`` at ``buf[pos:]`` (the read path).

    Returns (stream_id, first_version, first_position, recorded_at, rows), or why not.
    """
    if len(buf) - pos < max(length, HEADER_SIZE):
        return INCOMPLETE
    magic, flen, crc, fp, fv, ra, _count, sid_len, _flags = _unpack_header(buf, pos)
    end = pos + length
    if magic != MAGIC or flen != length:
        return BAD_MAGIC if magic != MAGIC else BAD_LENGTH
    mv = memoryview(buf)
    if _crc32(mv[pos + CRC_START : end]) != crc:
        return BAD_CRC
    s = pos + HEADER_SIZE
    return buf[s : s + sid_len].decode("ascii"), fv, fp, ra, _loads(mv[s + sid_len : end])
