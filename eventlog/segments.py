"""Segment files and the small file-system helpers around them.

The log is ``segments/<first_position:020d>.seg``; the last one is the active one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
READ_CHUNK = 8 << 20


def segment_name(first_position: int) -> str:
    return f"{first_position:020d}{SEGMENT_SUFFIX}"


def list_segments(seg_dir: Path) -> list[tuple[int, Path]]:
    """(first_position, path) of every segment file, ascending; other names are ignored."""
    out = []
    try:
        names = os.listdir(seg_dir)
    except FileNotFoundError:
        return []
    for name in names:
        m = _SEGMENT_NAME.fullmatch(name)
        if m:
            out.append((int(m.group(1)), seg_dir / name))
    out.sort()
    return out


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read ``size`` bytes at ``offset`` (fewer only at end of file)."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


# Compaction's Parquet copies (eventlog/compaction.py), beside the segments.
PARQUET_DIR = "parquet"
PARQUET_SUFFIX = ".parquet"


def parquet_path(root: Path, segment: Path) -> Path:
    """``parquet/<first_position:020d>.parquet`` for ``segments/<first_position:020d>.seg``."""
    return root / PARQUET_DIR / (segment.stem + PARQUET_SUFFIX)
