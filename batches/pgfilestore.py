"""PgFileStore: file contents in PostgreSQL, readable from every node of a cluster.

The `FileStore` port (batches/filestore.py) over two tables: `<schema>.files` maps a file
id to its current upload and `<schema>.chunks` holds an upload's bytes in pieces of at
most 1 MiB. Memory stays bounded both ways:

* a writer streams on its own connection, inside one transaction, flushing a piece
  whenever 1 MiB has gathered; commit points the file at the new upload (dropping the old
  one's pieces) and commits: the file is whole or absent, and an upload that dies (client
  gone, process killed) leaves nothing behind, because its transaction never commits;
* a reader pages through the pieces a few at a time on its own connection.

Pieces are `bytea` with storage EXTERNAL (no TOAST compression: JSONL compresses, but the
CPU is better spent elsewhere and ranges stay cheap).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from batches.filestore import READ_CHUNK, FileStore, FileTooLarge, FileWriter

PIECE = 1 << 20  # bytes per stored piece
PAGE = 4  # pieces per read query
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,40}")
T = TypeVar("T")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.files (
    file_id text PRIMARY KEY,
    upload_id uuid NOT NULL,
    size bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.chunks (
    upload_id uuid NOT NULL,
    seq int NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
DO $$ BEGIN  -- only once: ALTER TABLE would wait for every reader of the table
    IF (SELECT attstorage FROM pg_attribute
        WHERE attrelid = '{s}.chunks'::regclass AND attname = 'data') <> 'e' THEN
        ALTER TABLE {s}.chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END $$;
"""


class PgFileWriter:
    """Streams one file into PostgreSQL; counts size, lines and sha256 (a `FileWriter`)."""

    def __init__(self, store: PgFileStore, file_id: str, max_bytes: int | None) -> None:
        self.store = store
        self.file_id = file_id
        self.max_bytes = max_bytes
        self.bytes = 0
        self.lines = 0
        self._last = b"\n"
        self._sha = hashlib.sha256()
        self._buf = bytearray()
        self._seq = 0
        self._upload = uuid.uuid4()
        self._conn: psycopg.Connection[Any] | None = store.connect()
        self._conn.execute("BEGIN")

    def write(self, chunk: builtins.bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        self.lines += chunk.count(b"\n")
        self._last = chunk[-1:]
        self._sha.update(chunk)
        self._buf += chunk
        while len(self._buf) >= PIECE:
            self._flush(PIECE)

    def _flush(self, n: int) -> None:
        assert self._conn is not None
        piece = bytes(self._buf[:n])
        del self._buf[:n]
        self._conn.execute(
            f"INSERT INTO {self.store.schema}.chunks (upload_id, seq, data) VALUES (%s, %s, %b)",  # type: ignore[arg-type]
            [self._upload, self._seq, piece],
        )
        self._seq += 1

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def line_count(self) -> int:
        return self.lines + (0 if self._last == b"\n" else 1)

    def commit(self) -> None:
        conn, s = self._conn, self.store.schema
        assert conn is not None, "the writer is closed"
        try:
            if self._buf:
                self._flush(len(self._buf))
            old = conn.execute(
                f"SELECT upload_id FROM {s}.files WHERE file_id = %s FOR UPDATE",  # type: ignore[arg-type]
                [self.file_id],
            ).fetchone()
            if old is not None:
                conn.execute(f"DELETE FROM {s}.chunks WHERE upload_id = %s", [old[0]])  # type: ignore[arg-type]
            conn.execute(
                f"INSERT INTO {s}.files (file_id, upload_id, size) VALUES (%s, %s, %s) "  # type: ignore[arg-type]
                "ON CONFLICT (file_id) DO UPDATE SET upload_id = excluded.upload_id, "
                "size = excluded.size, created_at = now()",
                [self.file_id, self._upload, self.bytes],
            )
            conn.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        self._close()

    def abort(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")
        self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._buf = bytearray()

    def __enter__(self) -> PgFileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class PgFileStore:
    """File contents in one PostgreSQL schema (a `FileStore`). Thread-safe."""

    def __init__(self, url: str, schema: str = "batchlog_files") -> None:
        if _SCHEMA.fullmatch(schema) is None:
            raise ValueError(f"invalid schema name {schema!r}")
        self.url = url
        self.schema = schema
        self._meta: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"files:{schema}"])
            conn.execute(_DDL.format(s=schema))  # type: ignore[arg-type]

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, application_name="batchlog-files")

    def _query(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """A short query on the shared connection; one retry on a fresh one if it broke."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._meta is None or self._meta.closed:
                        self._meta = self.connect()
                    return fn(self._meta)
                except psycopg.OperationalError:
                    if self._meta is not None:
                        self._meta.close()
                    self._meta = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._meta is not None:
                self._meta.close()
                self._meta = None

    def location(self, file_id: str) -> str:
        return f"postgresql:{self.schema}.files/{file_id}"

    def writer(self, file_id: str, max_bytes: int | None = None) -> PgFileWriter:
        return PgFileWriter(self, file_id, max_bytes)

    def _row(self, file_id: str) -> tuple[Any, int] | None:
        q = f"SELECT upload_id, size FROM {self.schema}.files WHERE file_id = %s"
        row = self._query(lambda c: c.execute(q, [file_id]).fetchone())  # type: ignore[arg-type]
        return None if row is None else (row[0], int(row[1]))

    def exists(self, file_id: str) -> bool:
        return self._row(file_id) is not None

    def size(self, file_id: str) -> int:
        row = self._row(file_id)
        if row is None:
            raise FileNotFoundError(file_id)
        return row[1]

    def _pieces(self, file_id: str) -> Iterator[bytes]:
        row = self._row(file_id)
        if row is None:
            raise FileNotFoundError(file_id)
        upload = row[0]
        q = (
            f"SELECT seq, data FROM {self.schema}.chunks WHERE upload_id = %s AND seq >= %s "
            "ORDER BY seq LIMIT %s"
        )
        with self.connect() as conn:
            seq = 0
            while True:
                rows = conn.execute(q, [upload, seq, PAGE]).fetchall()  # type: ignore[arg-type]
                for s, data in rows:
                    if s != seq:  # the file was replaced or deleted while we read it
                        raise FileNotFoundError(f"{file_id} changed while it was read")
                    seq += 1
                    yield bytes(data)
                if len(rows) < PAGE:
                    return

    def chunks(self, file_id: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        for piece in self._pieces(file_id):
            for i in range(0, len(piece), size):
                yield piece[i : i + size]

    def lines(self, file_id: str, max_line_bytes: int | None = None) -> Iterator[bytes]:
        """The file's lines, memory bounded by one line (by max_line_bytes + 1 when given:
        a longer line is cut there and the rest skipped, as LocalFileStore does)."""
        cap = None if max_line_bytes is None else max_line_bytes + 1
        line = bytearray()
        skipping = False
        for piece in self._pieces(file_id):
            start = 0
            while start < len(piece):
                nl = piece.find(b"\n", start)
                end = len(piece) if nl < 0 else nl + 1
                if not skipping:
                    line += piece[start:end]
                    if cap is not None and (
                        len(line) > cap or (len(line) == cap and not line.endswith(b"\n"))
                    ):
                        yield bytes(line[:cap])
                        line.clear()
                        skipping = True
                if nl >= 0:
                    if skipping:
                        skipping = False
                    elif line:
                        yield bytes(line)
                        line.clear()
                start = end
        if line and not skipping:
            yield bytes(line)

    def sweep(self, known: set[str], older_than_s: float) -> list[str]:
        """Remove committed files no event names, once older than older_than_s (a failed
        registration). An upload in flight has no row yet: nothing to leave behind."""
        s = self.schema

        def run(c: psycopg.Connection[Any]) -> list[str]:
            rows = c.execute(
                f"SELECT file_id FROM {s}.files WHERE created_at < now() - make_interval(secs => %s)",  # type: ignore[arg-type]
                [older_than_s],
            ).fetchall()
            return [r[0] for r in rows if r[0] not in known]

        removed = self._query(run)
        for file_id in removed:
            self.delete(file_id)
        return removed

    def delete(self, file_id: str) -> None:
        s = self.schema
        q = (
            f"WITH f AS (DELETE FROM {s}.files WHERE file_id = %s RETURNING upload_id) "
            f"DELETE FROM {s}.chunks WHERE upload_id IN (SELECT upload_id FROM f)"
        )
        self._query(lambda c: c.execute(q, [file_id]))  # type: ignore[arg-type]


if TYPE_CHECKING:  # mypy proves the backend matches the port

    def _is_a_file_store(store: PgFileStore, writer: PgFileWriter) -> tuple[FileStore, FileWriter]:
        return store, writer
