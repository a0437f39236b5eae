"""Compaction: each sealed segment gets a Parquet copy for fast SQL.

``parquet/<first_position:020d>.parquet`` is written to a temporary file, checked, fsynced and
renamed into place, then the directory is fsynced. A segment is read from Parquet iff that
file exists, so a compaction killed at any moment leaves each event visible exactly once
(a leftover ``.tmp`` is ignored, and removed by the next run). Segment files are kept: they
stay the source of truth for stream reads.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CorruptLog
from .segments import PARQUET_DIR, fsync_dir, list_segments, parquet_path

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger("eventlog")

TMP_SUFFIX = ".tmp"


def compact(path: str | Path) -> list[Path]:
    """Write a Parquet file for every sealed segment that has none; returns the new files."""
    root = Path(path)
    pq_dir = root / PARQUET_DIR
    if not pq_dir.exists():
        pq_dir.mkdir(parents=True, exist_ok=True)
        fsync_dir(root)
    lock_fd = os.open(pq_dir / "COMPACT_LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(lock_fd, fcntl.LOCK_EX)  # one compaction at a time (then tmp files are ours)
        for leftover in pq_dir.glob("*" + TMP_SUFFIX):
            log.info("removing leftover compaction file %s", leftover)
            leftover.unlink(missing_ok=True)
        written: list[Path] = []
        sealed = list_segments(root / "segments")[:-1]
        todo = [(f, p) for f, p in sealed if not parquet_path(root, p).exists()]
        if not todo:
            return written
        # DuckDB and pyarrow (~50 MiB) only once a segment is sealed: the coordinator
        # runs this every minute and should not carry them for nothing.
        from .query import connect

        con = connect()
        try:
            for first, seg_path in todo:
                final = parquet_path(root, seg_path)
                _compact_one(con, seg_path, first, final)
                written.append(final)
        finally:
            con.close()
            if written:
                fsync_dir(pq_dir)
        return written
    finally:
        os.close(lock_fd)  # releases the lock


def _compact_one(con: duckdb.DuckDBPyConnection, seg_path: Path, first: int, final: Path) -> None:
    from .query import _sql_str
    from .tables import EVENT_COLUMNS, EXPAND_SQL, read_segment_frames

    got = read_segment_frames(seg_path, first)
    if got.problem is not None:
        raise CorruptLog(str(seg_path), got.stop, f"{got.problem} in a sealed segment")
    tmp = final.with_name(final.name + TMP_SUFFIX)
    con.register("_frames", got.table)
    try:
        con.execute(
            f"COPY (SELECT {EVENT_COLUMNS} FROM ({EXPAND_SQL.format(frames='_frames')}) "
            f"ORDER BY position) TO {_sql_str(str(tmp))} (FORMAT parquet)"
        ).fetchall()
        rows = con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(str(tmp))})").fetchall()
        if rows[0][0] != got.events:
            raise RuntimeError(f"compaction of {seg_path} wrote {rows} rows, want {got.events}")
    finally:
        con.unregister("_frames")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
