"""The catalog of everything ever made, on disk: each file's record and each batch's id,
tenant and list key, in SQLite (``data_dir/checkpoints/catalog.sqlite``).

The read model (`batches/readmodel.py`) keeps in memory only what the work at hand needs
(batches not long terminal, live claims); what grows with history lives here and is
looked up by key: GET of a file, the pages of ``GET /v1/files`` and ``GET /v1/batches``
(per tenant, by index), the files due to expire, a batch's tenant. So neither a restart
nor the coordinator's memory grows with the number of files and batches ever made.

A projection of the log like the read model, with its own position (the last event
applied, committed in the same transaction as the rows): the model feeds it every event
and it skips those at or before its position, so replaying a suffix of the log over it is
harmless. It is a cache of the log: deleted or damaged, it is rebuilt by a full replay.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SCHEMA = 1
NAME = "catalog.sqlite"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, tenant TEXT NOT NULL,
    purpose TEXT NOT NULL, bytes INTEGER NOT NULL, expires_at INTEGER, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, seq);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, created_at, seq);
"""

BatchKey = tuple[int, int, str]  # (created_at, position of BatchCreated, batch id)


class CatalogFailed(Exception):
    """A write to the catalog failed (a full disk): what was applied since the last
    commit is rolled back, and the read model over it must be restored again."""


class CatalogStore:
    def __init__(self, path: Path | None = None, *, fsync: bool = True) -> None:
        """``path`` None: in memory (tests, tools, the in-process service)."""
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the coordinator's event loop (created elsewhere).
        self.db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            isolation_level=None,
            check_same_thread=False,
        )
        if path is not None:
            self.db.execute("PRAGMA journal_mode=WAL")
            # Small, frequent transactions: keep the WAL file small (a full-disk floor is
            # a few MiB), folded into the database every 256 pages.
            self.db.execute("PRAGMA wal_autocheckpoint=256")
            self.db.execute(f"PRAGMA journal_size_limit={1 << 20}")
            self.db.execute(f"PRAGMA synchronous={'NORMAL' if fsync else 'OFF'}")
        if self._meta("schema", SCHEMA) != SCHEMA:
            self.db.executescript(
                "DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS batches; DELETE FROM meta;"
            )
        self.db.executescript(_TABLES)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA,))
        self.position = self._meta("position", 0)  # the last event applied (committed or not)
        self.batch_count = self._meta("batch_count", 0)
        self._dirty = False

    def _meta(self, key: str, default: int) -> int:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # no table yet
            return default
        return int(row[0]) if row is not None else default

    def reset(self) -> None:
        """Forget everything (the log it was built from is not this one): replay rebuilds."""
        self.rollback()
        self.db.executescript("DELETE FROM files; DELETE FROM batches;")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('position', 0)")
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('batch_count', 0)")
        self.position = self.batch_count = 0

    # -- writes: applied by the read model in log order, committed by its owner --------

    def _write(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            if not self._dirty:
                self.db.execute("BEGIN")
                self._dirty = True
            return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            self.rollback()
            raise CatalogFailed(f"catalog write failed: {exc}") from exc

    def advance(self, position: int) -> bool:
        """Move to ``position``; False when the event there was applied already."""
        if position <= self.position:
            return False
        self.position = position
        return True

    def commit(self, force: bool = False) -> None:
        """Make what was applied durable, with the position (``force``: even when only
        the position moved, as before a read-model checkpoint, which must not be ahead)."""
        if not self._dirty and not force:
            return
        self._write("INSERT OR REPLACE INTO meta VALUES ('position', ?)", (self.position,))
        self._write("INSERT OR REPLACE INTO meta VALUES ('batch_count', ?)", (self.batch_count,))
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise CatalogFailed(f"catalog commit failed: {exc}") from exc
        self._dirty = False

    def rollback(self) -> None:
        """Drop what was applied since the last commit (as a crash would)."""
        if self._dirty:
            self._dirty = False
            with contextlib.suppress(sqlite3.Error):  # (sqlite may have rolled back already)
                self.db.execute("ROLLBACK")
        self.position = self._meta("position", 0)
        self.batch_count = self._meta("batch_count", 0)

    def close(self) -> None:
        self.commit()
        self.db.close()

    def put_file(self, record: dict[str, Any], seq: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record["file_id"],
                seq,
                record["tenant"],
                record["purpose"],
                int(record["bytes"]),
                record.get("expires_at"),
                orjson.dumps(record),
            ),
        )

    def drop_file(self, file_id: str) -> None:
        self._write("DELETE FROM files WHERE file_id = ?", (file_id,))

    def add_batch(self, batch_id: str, tenant: str, created_at: int, seq: int) -> None:
        cur = self._write(
            "INSERT OR IGNORE INTO batches VALUES (?, ?, ?, ?)", (batch_id, tenant, created_at, seq)
        )
        self.batch_count += cur.rowcount

    # -- files -----------------------------------------------------------------------

    def file(self, file_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT record FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return orjson.loads(row[0]) if row is not None else None  # type: ignore[no-any-return]

    def list_files(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """In upload order (the log's), or its reverse for ``desc``; ``after`` must be one
        of the listed files (else the page is empty)."""
        where, args = "tenant = ?", [tenant]
        if purpose is not None:
            where += " AND purpose = ?"
            args.append(purpose)
        if after is not None:
            row = self.db.execute(
                f"SELECT seq FROM files WHERE file_id = ? AND {where}", (after, *args)
            ).fetchone()
            if row is None:
                return [], False
            where += " AND seq < ?" if order == "desc" else " AND seq > ?"
            args.append(row[0])
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.db.execute(
            f"SELECT record FROM files WHERE {where} ORDER BY seq {direction} LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def stored_bytes(self, tenant: str, purpose: str) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(bytes), 0) FROM files WHERE tenant = ? AND purpose = ?",
            (tenant, purpose),
        ).fetchone()
        return int(row[0])

    def due_files(self, now: int) -> list[str]:
        """Files whose ``expires_at`` has passed, oldest first."""
        rows = self.db.execute(
            "SELECT file_id FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? "
            "ORDER BY expires_at, seq",
            (now,),
        ).fetchall()
        return [r[0] for r in rows]

    def file_ids(self) -> Iterator[str]:
        for (file_id,) in self.db.execute("SELECT file_id FROM files ORDER BY seq"):
            yield file_id

    def file_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM files").fetchone()[0])

    # -- batches ---------------------------------------------------------------------

    def batch_key(self, batch_id: str) -> tuple[str, BatchKey] | None:
        """(tenant, list key) of a batch ever made, or None."""
        row = self.db.execute(
            "SELECT tenant, created_at, seq FROM batches WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return (row[0], (int(row[1]), int(row[2]), batch_id)) if row is not None else None

    def batch_ids(self, tenant: str, before: BatchKey | None, limit: int) -> list[str]:
        """A tenant's batches newest first, those before ``before`` (a list key) only."""
        sql, args = "", []
        if before is not None:
            sql, args = " AND (created_at, seq) < (?, ?)", [before[0], before[1]]
        rows = self.db.execute(
            f"SELECT batch_id FROM batches WHERE tenant = ?{sql} "
            "ORDER BY created_at DESC, seq DESC LIMIT ?",
            (tenant, *args, limit),
        ).fetchall()
        return [r[0] for r in rows]

    def all_batch_ids(self) -> Iterator[str]:
        for (batch_id,) in self.db.execute("SELECT batch_id FROM batches ORDER BY seq"):
            yield batch_id
