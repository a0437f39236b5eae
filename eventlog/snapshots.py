"""Snapshots: ``snapshots/<stream_id>.snap``, CRC-framed, replaced atomically.

Layout (little-endian): magic b"EVS1" (4), total length u32 (4), crc32 u32 of bytes
[12, end) (4), version u64 (8), stream id length u16 (2), flags u16 (2), the stream id,
then the state as orjson. Written to a temporary file, fsynced, renamed over the old one,
and the directory fsynced.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson

from .frames import dumps
from .model import Snapshot
from .segments import fsync_dir, pwrite_all

log = logging.getLogger("eventlog")

MAGIC = b"EVS1"
_HEAD = struct.Struct("<4sII")
_FIELDS = struct.Struct("<QHH")
_HEADER_SIZE = _HEAD.size + _FIELDS.size  # 24
SUFFIX = ".snap"


def snapshot_path(snap_dir: Path, stream_id: str) -> Path:
    return snap_dir / f"{stream_id}{SUFFIX}"


def write_snapshot(
    snap_dir: Path, stream_id: str, version: int, state: dict[str, Any], *, fsync: bool
) -> None:
    body = dumps(state, "snapshot state")
    sid = stream_id.encode("ascii")
    fields = _FIELDS.pack(version, len(sid), 0)
    crc = zlib.crc32(body, zlib.crc32(sid, zlib.crc32(fields)))
    data = b"".join(
        (_HEAD.pack(MAGIC, _HEADER_SIZE + len(sid) + len(body), crc), fields, sid, body)
    )
    final = snapshot_path(snap_dir, stream_id)
    tmp = snap_dir / f".{stream_id}{SUFFIX}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
        fsync_dir(snap_dir)


def read_snapshot(snap_dir: Path, stream_id: str) -> Snapshot | None:
    """The stored snapshot, or None if there is none or it does not check out (logged)."""
    path = snapshot_path(snap_dir, stream_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    problem = _check(data, stream_id)
    if problem is not None:
        log.warning("ignoring snapshot %s: %s; the stream will be replayed", path, problem)
        return None
    version, sid_len, _ = _FIELDS.unpack_from(data, _HEAD.size)
    try:
        state = orjson.loads(data[_HEADER_SIZE + sid_len :])
    except orjson.JSONDecodeError as e:
        log.warning("ignoring snapshot %s: %s; the stream will be replayed", path, e)
        return None
    if not isinstance(state, dict):
        log.warning("ignoring snapshot %s: state is not an object", path)
        return None
    return Snapshot(stream_id, version, state)


def _check(data: bytes, stream_id: str) -> str | None:
    if len(data) < _HEADER_SIZE:
        return "too short"
    magic, length, crc = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        return "bad magic"
    if length != len(data):
        return f"length {length} but file has {len(data)} bytes"
    if zlib.crc32(memoryview(data)[_HEAD.size :]) != crc:
        return "checksum mismatch"
    version, sid_len, flags = _FIELDS.unpack_from(data, _HEAD.size)
    if flags != 0 or version < 1:
        return "bad header field"
    if data[_HEADER_SIZE : _HEADER_SIZE + sid_len] != stream_id.encode("ascii"):
        return "written for another stream"
    return None
