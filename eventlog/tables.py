"""Segment frames as Arrow tables, and the SQL that turns frames into event rows.

Shared by the query layer and compaction. Imports no DuckDB itself.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pyarrow as pa

from . import frames as fr
from .segments import READ_CHUNK, pread_exact

FRAME_SCHEMA = pa.schema(
    [
        ("seg", pa.int64()),
        ("stream_id", pa.string()),
        ("first_version", pa.int64()),
        ("first_position", pa.int64()),
        ("recorded_at", pa.float64()),
        ("payload", pa.binary()),  # UTF-8 JSON, decoded by DuckDB
    ]
)

# The columns of the ``events`` view, in order.
EVENT_COLUMNS = "stream_id, version, type, recorded_at, data, position, event_id, metadata"

# Rows of events from a table of frames named {frames} (FRAME_SCHEMA), plus a ``seg`` column.
EXPAND_SQL = """
WITH f AS (
    SELECT seg, stream_id, first_version, first_position, recorded_at,
           json_extract(decode(payload)::JSON, '$[*]') AS evs
    FROM {frames}
), u AS (
    SELECT seg, stream_id, first_version, first_position, recorded_at,
           unnest(evs) AS ev, unnest(range(len(evs))) AS i
    FROM f
)
SELECT seg,
       stream_id,
       first_version + i AS version,
       ev ->> '$[1]' AS type,
       to_timestamp(recorded_at) AS recorded_at,
       ev -> '$[2]' AS data,
       first_position + i AS position,
       ev ->> '$[0]' AS event_id,
       ev -> '$[3]' AS metadata
FROM u
"""


class SegmentFrames:
    """Good frames read from a segment file: an Arrow table, where reading stopped, and why."""

    def __init__(self, table: pa.Table, stop: int, problem: str | None, events: int) -> None:
        self.table = table
        self.stop = stop
        self.problem = problem  # None: reached the end of the file cleanly
        self.events = events


def read_segment_frames(
    path: Path, seg: int, start: int = 0, *, max_bytes: int | None = None, after: int = 0
) -> SegmentFrames:
    """Parse complete, CRC-valid frames of ``path`` from ``start`` to its current size.

    Stops at the first incomplete or bad frame (a write in progress, in the active segment).
    ``after``: frames whose events all lie at or before that position are skipped (read,
    not kept). ``max_bytes``: stop cleanly (``problem`` None, ``stop`` at a frame boundary)
    once the kept frames reach that many bytes, so a reader can go through a long segment
    in bounded pieces (a frame larger than that is still returned whole).
    """
    sids: list[str] = []
    fvs: list[int] = []
    fps: list[int] = []
    ras: list[float] = []
    payloads: list[bytes] = []
    events = 0
    kept = 0  # bytes of the frames kept
    full = False
    problem: str | None = None
    read = READ_CHUNK if max_bytes is None else max(1, min(READ_CHUNK, max_bytes))
    unpack, crc32 = fr.HEADER.unpack_from, zlib.crc32
    hs, magic_ok, crc_start = fr.HEADER_SIZE, fr.MAGIC, fr.CRC_START
    fd = os.open(path, os.O_RDONLY)
    try:
        file_end = os.fstat(fd).st_size
        base = start
        while base < file_end:
            buf = pread_exact(fd, min(read, file_end - base), base)
            if len(buf) >= hs and buf[:4] == magic_ok:
                need = unpack(buf, 0)[1]
                if len(buf) < need <= file_end - base:  # one frame larger than a chunk
                    buf = pread_exact(fd, need, base)
            mv = memoryview(buf)
            n = len(buf)
            pos = 0
            while n - pos >= hs:  # fr.parse_frame, inlined
                magic, length, crc, fp, fv, ra, count, sid_len, flags = unpack(buf, pos)
                end = pos + length
                if (
                    magic != magic_ok
                    or not hs + sid_len + 2 <= length <= fr.MAX_FRAME
                    or end > n
                    or crc32(mv[pos + crc_start : end]) != crc
                    or not count
                    or flags
                ):
                    break
                if fp + count - 1 > after:
                    s = pos + hs
                    sids.append(buf[s : s + sid_len].decode("ascii", "replace"))
                    fvs.append(fv)
                    fps.append(fp)
                    ras.append(ra)
                    payloads.append(buf[s + sid_len : end])
                    events += count
                    kept += length
                pos = end
                if max_bytes is not None and kept >= max_bytes:
                    full = True
                    break
            if full:
                base += pos
                break
            if pos == n:
                base += n
                continue
            if pos > 0 and base + n < file_end:
                base += pos  # the chunk ended inside a frame
                continue
            got = fr.parse_frame(buf, pos, n)
            problem = got if isinstance(got, str) else fr.BAD_HEADER
            base += pos
            break
    finally:
        os.close(fd)
    table = pa.table(
        [
            pa.repeat(pa.scalar(seg, pa.int64()), len(sids)),
            pa.array(sids, pa.string()),
            pa.array(fvs, pa.int64()),
            pa.array(fps, pa.int64()),
            pa.array(ras, pa.float64()),
            pa.array(payloads, pa.binary()),
        ],
        schema=FRAME_SCHEMA,
    )
    return SegmentFrames(table, base, problem, events)
