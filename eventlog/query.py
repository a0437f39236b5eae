"""SQL over the event log with DuckDB: a read-only, lock-free view of every event.

    q = EventQuery(path)
    q.sql("SELECT type, count(*) FROM events GROUP BY type")
    q.refresh()   # see events appended since

The view ``events(stream_id, version, type, recorded_at TIMESTAMPTZ, data JSON, position,
event_id, metadata JSON)`` is a UNION of

* ``read_parquet`` over the Parquet files of compacted sealed segments, and
* an in-memory table of the other segments (the active one, uncompacted sealed ones),
  parsed here in Python: complete, CRC-valid frames only, so a frame being written is
  invisible until it is whole.

A segment is read from Parquet iff its Parquet file exists (compaction renames it into
place atomically), so each event is seen exactly once. Nothing here takes a lock or writes
to the log; the DuckDB database is in memory, so it locks no file either.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from .errors import CorruptLog
from .segments import PARQUET_DIR, PARQUET_SUFFIX, list_segments, parquet_path
from .tables import EVENT_COLUMNS, EXPAND_SQL, read_segment_frames

_LIVE_DDL = """
CREATE TABLE _live (
    seg BIGINT, stream_id VARCHAR, version BIGINT, type VARCHAR,
    recorded_at TIMESTAMPTZ, data JSON, position BIGINT, event_id VARCHAR, metadata JSON
)
"""


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that never downloads or autoloads extensions."""
    return duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class EventQuery:
    """A DuckDB connection with an ``events`` view over the log at ``path``."""

    def __init__(self, path: str | Path, *, lazy: bool = False) -> None:
        self._root = Path(path)
        self._con = connect()
        # Our own statements go through a cursor (a second connection to the same in-memory
        # database), so a result the user left half-fetched on .connection never blocks them.
        self._work = self._con.cursor()
        self._run(_LIVE_DDL)
        self._parsed: dict[int, int] = {}  # segment first position -> offset parsed so far
        if lazy:  # ``events`` stays empty until the first refresh()
            self._define_view([])
        else:
            self.refresh()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    def refresh(self) -> None:
        """Look again at the log: new frames, new segments, newly compacted segments."""
        segments = list_segments(self._root / "segments")
        pq_dir = self._root / PARQUET_DIR
        try:
            have = {n for n in os.listdir(pq_dir) if n.endswith(PARQUET_SUFFIX)}
        except FileNotFoundError:
            have = set()
        parquet_files: list[str] = []
        for i, (first, seg_path) in enumerate(segments):
            if seg_path.stem + PARQUET_SUFFIX in have:
                parquet_files.append(str(parquet_path(self._root, seg_path)))
                if first in self._parsed:  # compacted since we parsed it: drop our copy
                    self._run("DELETE FROM _live WHERE seg = ?", [first])
                    del self._parsed[first]
                continue
            start = self._parsed.get(first, 0)
            got = read_segment_frames(seg_path, first, start)
            sealed = i < len(segments) - 1
            if sealed and got.problem is not None:
                raise CorruptLog(str(seg_path), got.stop, f"{got.problem} in a sealed segment")
            if got.table.num_rows:
                self._insert(got.table)
            self._parsed[first] = got.stop
        self._define_view(parquet_files)

    def _insert(self, frames: pa.Table) -> None:
        self._work.register("_frames", frames)
        try:
            self._run("INSERT INTO _live " + EXPAND_SQL.format(frames="_frames"))
        finally:
            self._work.unregister("_frames")

    def _define_view(self, parquet_files: list[str]) -> None:
        live = f"SELECT {EVENT_COLUMNS} FROM _live"
        if parquet_files:
            files = ", ".join(_sql_str(p) for p in parquet_files)
            compacted = (
                "SELECT stream_id, version, type, recorded_at, data::JSON AS data, position, "
                f"event_id, metadata::JSON AS metadata FROM read_parquet([{files}])"
            )
            body = f"{compacted} UNION ALL {live}"
        else:
            body = live
        self._run(f"CREATE OR REPLACE VIEW events AS {body}")

    def _run(self, statement: str, params: Any = None) -> None:
        # DuckDB 2.x: a result left unfetched blocks the connection, so always drain it
        self._work.execute(statement, params).fetchall()

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``query`` (with optional ``params``) and fetch every row."""
        return self._con.execute(query, params).fetchall()

    def arrow(self, query: str, params: Any = None) -> pa.Table:
        """Run ``query`` and return the result as a pyarrow Table."""
        return self._con.sql(query, params=params).to_arrow_table()

    def close(self) -> None:
        self._work.close()
        self._con.close()

    def __enter__(self) -> EventQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventTail:
    """The events after a log position, one segment at a time, read incrementally: the
    source of a projection kept by position (analytics' persisted tables).

    ``fetch(con, after, table)`` fills the temporary table ``table`` (the ``events`` view's
    columns) on ``con`` with the events after ``after`` of the first segment that has any:
    ``read_parquet`` for a compacted sealed segment, else the segment's complete, CRC-valid
    frames from where the previous fetch stopped (or from a ``seed``), so following the
    log costs only what was appended. Takes no lock, writes nothing to the log.

    ``chunk_bytes`` bounds one fetch to about that many bytes of the log (whole frames;
    for a compacted segment, as many events as its average takes), so a long segment comes
    in pieces: DuckDB's parse of the JSON costs ~20x the bytes it parses, so a whole 64 MiB
    segment at once would take over a GiB. None: a segment (what is left of it) at once.
    """

    def __init__(self, path: str | Path, *, chunk_bytes: int | None = None) -> None:
        self._root = Path(path)
        self.chunk_bytes = chunk_bytes
        self._parsed: dict[int, int] = {}  # segment first position -> offset read up to
        self.where = (0, 0)  # (segment, offset) just after the last frame fetched

    def seed(self, segment: int, offset: int) -> None:
        """Frames of ``segment`` before ``offset`` were fetched already (by another run)."""
        self._parsed = {segment: offset}
        self.where = (segment, offset)

    def fetch(self, con: duckdb.DuckDBPyConnection, after: int, table: str) -> int:
        """Fill ``table`` as above; returns the highest position in it (``after``: none)."""
        segments = list_segments(self._root / "segments")
        firsts = [first for first, _ in segments]
        start = max(bisect_right(firsts, after + 1) - 1, 0)
        for i in range(start, len(segments)):
            first, path = segments[i]
            sealed = i < len(segments) - 1
            if sealed and segments[i + 1][0] - 1 <= after:
                continue
            pq = parquet_path(self._root, path)
            if sealed and pq.exists():
                last = segments[i + 1][0] - 1
                lo = max(after, first - 1)
                hi = last
                if self.chunk_bytes is not None:  # the segment's average event size
                    size = max(path.stat().st_size, 1)
                    hi = min(last, lo + max(1, self.chunk_bytes * (last - first + 1) // size))
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT stream_id, version, type, "
                    "recorded_at, data::JSON AS data, position, event_id, "
                    "metadata::JSON AS metadata FROM read_parquet(?) "
                    "WHERE position > ? AND position <= ?",
                    [str(pq), lo, hi],
                ).fetchall()
                if hi == last:
                    self._parsed[first] = path.stat().st_size
                # else: no byte offset is known for ``hi``; the one kept is at or before it
                # (a reader seeded there skips the frames it has already seen)
            else:
                got = read_segment_frames(
                    path, first, self._parsed.get(first, 0), max_bytes=self.chunk_bytes, after=after
                )
                if sealed and got.problem is not None:
                    raise CorruptLog(str(path), got.stop, f"{got.problem} in a sealed segment")
                self._parsed[first] = got.stop
                frames = got.table  # only frames with events after ``after``
                con.register("_tail_frames", frames)
                try:
                    con.execute(
                        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {EVENT_COLUMNS} FROM ("
                        + EXPAND_SQL.format(frames="_tail_frames")
                        + ") WHERE position > ?",
                        [after],
                    ).fetchall()
                finally:
                    con.unregister("_tail_frames")
            ((top,),) = con.execute(f"SELECT max(position) FROM {table}").fetchall()
            self.where = (first, self._parsed.get(first, 0))
            if top is not None or not sealed:
                return int(top) if top is not None else after
        return after
