"""The analytics views (``events``, ``batches``, ``requests``, ``files``) over an event
log in PostgreSQL: the same DuckDB tables and views as ``batches.analytics.Analytics``,
fed from ``<schema>.events`` instead of the log's segment files.

Events are copied into the in-memory DuckDB once, by global position, in pages through
Arrow (never the whole log in one Python list); each refresh copies only what was
committed since, and the global order has no gaps that fill in later
(eventlog/postgres.py), so "everything up to position p" is final once seen.
"""

from __future__ import annotations

import re

import duckdb
import psycopg
import pyarrow as pa

from batches import analytics as an

PAGE = 20_000
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_EVENTS = """
CREATE TABLE events (
    stream_id VARCHAR, version BIGINT, type VARCHAR, recorded_at TIMESTAMPTZ, data JSON,
    position BIGINT, event_id VARCHAR, metadata JSON
)
"""


class _Raw:
    """What ``Analytics`` calls to refresh its raw ``events``: here, the same copy."""

    def __init__(self, owner: PgAnalytics) -> None:
        self.owner = owner

    def refresh(self) -> int:
        return self.owner.refresh()


class PgAnalytics(an.Analytics):
    """``Analytics`` over PostgreSQL (``BATCHLOG_DATABASE_URL``); read-only there."""

    def __init__(self, database_url: str, *, schema: str = "eventlog") -> None:
        if _SCHEMA.fullmatch(schema) is None:
            raise ValueError(f"invalid schema name {schema!r}")
        self._pg = psycopg.connect(database_url, autocommit=True)
        self._schema = schema
        self._con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        self._query = _Raw(self)  # type: ignore[assignment]
        self._seen = 0
        self._into = an._TABLE_NAMES
        self._con.execute(_EVENTS)
        self._con.execute(an._TABLES)
        self._con.execute(an._VIEWS)

    def refresh(self) -> int:
        """Copy and fold what was committed since the last refresh; returns how many."""
        start = self._seen
        q = (
            "SELECT stream_id, version, type, recorded_at, data::text, position, event_id, "
            f"metadata::text FROM {self._schema}.events WHERE position > %s "
            "ORDER BY position LIMIT %s"
        )
        while True:
            rows = self._pg.execute(q, [self._seen, PAGE]).fetchall()  # type: ignore[arg-type]
            if not rows:
                return self._seen - start
            cols = list(zip(*rows, strict=True))
            page = pa.table(
                {
                    "stream_id": pa.array(cols[0], pa.string()),
                    "version": pa.array(cols[1], pa.int64()),
                    "type": pa.array(cols[2], pa.string()),
                    "recorded_at": pa.array(cols[3], pa.float64()),
                    "data": pa.array(cols[4], pa.string()),
                    "position": pa.array(cols[5], pa.int64()),
                    "event_id": pa.array(cols[6], pa.string()),
                    "metadata": pa.array(cols[7], pa.string()),
                }
            )
            lo, hi = self._seen, int(cols[5][-1])
            self._con.register("_page", page)
            self._con.execute("BEGIN")
            try:
                self._con.execute(
                    "CREATE OR REPLACE TEMP TABLE _src AS SELECT stream_id, version, type, "
                    "to_timestamp(recorded_at) AS recorded_at, data::JSON AS data, position, "
                    "event_id, metadata::JSON AS metadata FROM _page"
                )
                self._con.execute("INSERT INTO events SELECT * FROM _src")
                an._fold(self._con, "_src", lo, hi, self._into)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            finally:
                self._con.unregister("_page")
            self._seen = hi

    def close(self) -> None:
        self._con.close()
        self._pg.close()
