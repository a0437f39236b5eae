"""Analytics' typed tables persisted in ``<data_dir>/analytics/tables.duckdb``, by log position.

The file holds the tables ``_lifecycle``, ``_requests``, ``_file_events`` (folded from the
log exactly as an in-memory connection folds them) and ``_meta``: the schema (a checksum of
the fold's SQL, so changing it rebuilds the file), the log position folded up to and where
that is in the log (segment, byte offset), so catching up reads only what came after.
Tables and position change in one transaction per step, so after a crash at any moment the
file is a fold of the log up to its recorded position: never ahead, never disagreeing.

A DuckDB file open read-write locks out every other process, readers too, and one open
read-only blocks writers. So nobody keeps it open read-write: a new connection takes
``analytics/LOCK`` (flock), catches the file up in a short read-write session (skipped if
another connection has the file attached: then it stays behind and connections fold the
difference in memory), attaches it read-only, and releases the lock. A file that is
missing, unreadable or of another schema is rebuilt from the log.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from eventlog.query import EventTail

log = logging.getLogger("batchlog.analytics")

DB_DIR = "analytics"
DB_NAME = "tables.duckdb"
LOCK_NAME = "LOCK"
ATTACHED = "hist"

# fold(con, src, lo, hi): fold the events of table ``src`` (positions lo < p <= hi) into
# the tables on ``con``
Fold = Callable[[duckdb.DuckDBPyConnection, str, int, int], None]

_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # The fold's JSON parsing keeps buffers per thread; one thread folds a refresh's
    # bounded chunks in ~20 MiB less (issue 14). Queries use their own connection.
    "threads": 1,
}


def db_path(data_dir: Path) -> Path:
    return data_dir / DB_DIR / DB_NAME


def _meta(con: duckdb.DuckDBPyConnection, prefix: str = "") -> tuple[int, ...] | None:
    try:
        rows = con.execute(
            f'SELECT schema, position, segment, "offset" FROM {prefix}_meta'
        ).fetchall()
    except duckdb.Error:
        return None
    return tuple(int(v) for v in rows[0]) if len(rows) == 1 else None


def _usable(log_dir: Path, meta: tuple[int, ...] | None, schema: int) -> bool:
    """Does the file's position still lie in this log? (Same schema, its segment there.)"""
    if meta is None or meta[0] != schema:
        return False
    _, position, segment, offset = meta
    if position == 0:
        return True
    try:
        size = (log_dir / "segments" / f"{segment:020d}.seg").stat().st_size
    except FileNotFoundError:
        return False
    return size >= offset


def _create(con: duckdb.DuckDBPyConnection, ddl: str, schema: int) -> None:
    for (name,) in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall():
        con.execute(f'DROP TABLE "{name}"')
    con.execute(ddl)
    con.execute(
        'CREATE TABLE _meta (schema BIGINT, position BIGINT, segment BIGINT, "offset" BIGINT)'
    )
    con.execute("INSERT INTO _meta VALUES (?, 0, 1, 0)", [schema])


def _connect(path: Path) -> duckdb.DuckDBPyConnection | None:
    """The file open read-write; None if some connection has it attached. A file DuckDB
    cannot read is deleted and made again (it only ever holds what the log can rebuild)."""
    try:
        return duckdb.connect(str(path), config=_CONFIG)
    except duckdb.ResourceInUseException:
        return None  # attached in this process
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            return None  # attached by a reader in another process
        why = str(e)
    except duckdb.Error as e:
        why = str(e)
    log.warning("analytics: %s is unreadable (%s); rebuilding it from the log", path, why)
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    return duckdb.connect(str(path), config=_CONFIG)


def catch_up(path: Path, log_dir: Path, tail: EventTail, fold: Fold, ddl: str, schema: int) -> bool:
    """Fold what the log has beyond the file's position into the file, one ``tail.fetch``
    (a bounded piece of a segment) per transaction. False (nothing done) when a connection has the file attached."""
    con = _connect(path)
    if con is None:
        return False
    try:
        meta = _meta(con)
        if not _usable(log_dir, meta, schema):
            if meta is not None:
                log.warning("analytics: %s does not match this log or code; rebuilding", path)
            con.execute("BEGIN")
            _create(con, ddl, schema)
            con.execute("COMMIT")
            meta = (schema, 0, 1, 0)
        assert meta is not None
        _, position, segment, offset = meta
        tail.seed(segment, offset)
        while True:
            con.execute("BEGIN")
            hi = tail.fetch(con, position, "_src")
            if hi <= position:
                con.execute("ROLLBACK")
                return True
            fold(con, "_src", position, hi)
            con.execute(
                'UPDATE _meta SET position = ?, segment = ?, "offset" = ?', [hi, *tail.where]
            )
            con.execute("COMMIT")
            position = hi
    finally:
        con.close()


@contextmanager
def _locked(data_dir: Path) -> Iterator[Path | None]:
    """The file's path with ``analytics/LOCK`` held (made owner-only); None (and a log
    line) when the directory cannot be made or written, a read-only data dir say."""
    path = db_path(data_dir)
    try:
        # Owner-only, like the rest of the data dir (docs/security.md): the directory
        # closes the moment DuckDB creates a file with the caller's umask.
        path.parent.mkdir(mode=0o700, exist_ok=True)
        if path.parent.stat().st_mode & 0o077:
            path.parent.chmod(0o700)
        lock_fd = os.open(path.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        log.info("analytics: no persisted tables (%s); folding the log in memory", e)
        yield None
        return
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # writers hold it for their whole session
        yield path
    finally:
        os.close(lock_fd)  # releases the flock


def _catch_up_logged(
    path: Path, log_dir: Path, tail: EventTail, fold: Fold, ddl: str, schema: int
) -> bool:
    try:
        return catch_up(path, log_dir, tail, fold, ddl, schema)
    except (duckdb.Error, OSError) as e:
        log.warning("analytics: could not update %s: %s", path, e)
        return False


def update(
    data_dir: Path, log_dir: Path, tail: EventTail, fold: Fold, ddl: str, schema: int
) -> bool:
    """Only catch the file up (the coordinator's refresh child): no connection to query
    with, so the process holds nothing but the fold's chunk. False when nothing could be
    done (the file attached elsewhere, a read-only data dir, an error: logged)."""
    with _locked(data_dir) as path:
        if path is None:
            return False
        done = _catch_up_logged(path, log_dir, tail, fold, ddl, schema)
        if path.exists():
            path.chmod(0o600)
        return done


def open_persisted(
    data_dir: Path,
    log_dir: Path,
    con: duckdb.DuckDBPyConnection,
    tail: EventTail,
    fold: Fold,
    ddl: str,
    schema: int,
) -> tuple[int, int, int] | None:
    """Catch the file up (best effort) and attach it read-only to ``con`` as ``hist``.

    Returns (position, segment, offset) of the attached tables, or None when there is no
    usable file (a read-only data dir, say): then the caller folds the log in memory.
    """
    with _locked(data_dir) as path:
        if path is None:
            return None
        _catch_up_logged(path, log_dir, tail, fold, ddl, schema)
        if not path.exists():
            return None
        path.chmod(0o600)
        quoted = "'" + str(path).replace("'", "''") + "'"
        try:
            con.execute(f"ATTACH {quoted} AS {ATTACHED} (READ_ONLY)")
        except duckdb.Error as e:
            log.warning("analytics: could not attach %s: %s", path, e)
            return None
        meta = _meta(con, f"{ATTACHED}.")
        if meta is None or not _usable(log_dir, meta, schema):
            con.execute(f"DETACH {ATTACHED}")
            return None
        return meta[1], meta[2], meta[3]
