"""Segment frames as Arrow tables, and the SQL that turns frames into event rows.

Shared by the query layer and compaction. Imports no DuckDB itself.
"""

from __future__ import annotations

import os
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
        ("payload", pa.string()),
    ]
)

# The columns of the ``events`` view, in order.
EVENT_COLUMNS = "stream_id, version, type, recorded_at, data, position, event_id, metadata"

# Rows of events from a table of frames named {frames} (FRAME_SCHEMA), plus a ``seg`` column.
EXPAND_SQL = """
WITH f AS (
    SELECT seg, stream_id, first_version, first_position, recorded_at,
           json_extract(payload::JSON, '$[*]') AS evs
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


def read_segment_frames(path: Path, seg: int, start: int = 0) -> SegmentFrames:
    """Parse complete, CRC-valid frames of ``path`` from ``start`` to its current size.

    Stops at the first incomplete or bad frame (a write in progress, in the active segment).
    """
    sids: list[str] = []
    fvs: list[int] = []
    fps: list[int] = []
    ras: list[float] = []
    payloads: list[str] = []
    events = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = start
        problem: str | None = None
        while pos < end:
            buf = pread_exact(fd, min(READ_CHUNK, end - pos), pos)
            if len(buf) >= fr.HEADER_SIZE and buf[:4] == fr.MAGIC:
                need = fr.HEADER.unpack_from(buf, 0)[1]
                if len(buf) < need <= end - pos:
                    buf = pread_exact(fd, need, pos)
            stop = fr.ScanStop(pos)
            for f in fr.iter_frames(buf, 0, len(buf), pos, stop):
                sids.append(f.stream_id)
                fvs.append(f.first_version)
                fps.append(f.first_position)
                ras.append(f.recorded_at)
                payloads.append(f.payload.decode("utf-8"))
                events += f.n_events
            progressed = stop.offset > pos
            pos = stop.offset
            if stop.problem is None and progressed:
                continue
            if stop.problem == fr.INCOMPLETE and progressed and pos < end:
                continue  # the chunk ended inside a frame
            problem = stop.problem or fr.INCOMPLETE
            break
    finally:
        os.close(fd)
    table = pa.table(
        [
            pa.array([seg] * len(sids), pa.int64()),
            pa.array(sids, pa.string()),
            pa.array(fvs, pa.int64()),
            pa.array(fps, pa.int64()),
            pa.array(ras, pa.float64()),
            pa.array(payloads, pa.string()),
        ],
        schema=FRAME_SCHEMA,
    )
    return SegmentFrames(table, pos, problem, events)
