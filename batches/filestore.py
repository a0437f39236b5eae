"""File contents: the `FileStore` port and its local-directory implementation.

The event log records that a file exists (`FileUploaded`); a file store holds the bytes.
A file's event is appended only after its bytes are durable, so an acknowledged upload
never points at a missing or half-written file. `LocalFileStore` writes tmp + fsync +
rename under `<data_dir>/files/`, so a file is whole or absent; other backends (a
database for clusters without a shared disk) implement the same two protocols.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

READ_CHUNK = 1 << 20


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"File is larger than the {limit} byte limit.")
        self.limit = limit


@runtime_checkable
class FileWriter(Protocol):
    """Streams one file in; counts size, lines and sha256. A context manager: leaving
    the block normally commits (durable, then visible), an exception aborts."""

    bytes: int  # so far; `builtins.bytes` below, as this name shadows the type here

    def write(self, chunk: builtins.bytes) -> None: ...
    @property
    def sha256(self) -> str: ...
    @property
    def line_count(self) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> FileWriter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class FileStore(Protocol):
    """Where file contents live, by file id. Writes are durable once committed."""

    def location(self, file_id: str) -> str:
        """What `FileUploaded` records as the file's `path` (backend-specific)."""
        ...

    def writer(self, file_id: str, max_bytes: int | None = None) -> FileWriter: ...
    def exists(self, file_id: str) -> bool: ...
    def size(self, file_id: str) -> int: ...
    def lines(self, file_id: str, max_line_bytes: int | None = None) -> Iterator[bytes]:
        """The file's lines, streamed: memory stays bounded by one line, and by
        max_line_bytes + 1 when given (a longer line is cut there, the rest skipped)."""
        ...

    def sweep(self, known: set[str], older_than_s: float) -> list[str]:
        """Remove contents no event names, older than older_than_s; their ids."""
        ...

    def chunks(self, file_id: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The file's bytes in pieces of at most `size`, for downloads."""
        ...

    def delete(self, file_id: str) -> None:
        """Remove the file; deleting a missing file is not an error."""
        ...


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on path's filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableWriter:
    """Streams bytes into `<final>.tmp`, counting size, lines and sha256; commit renames."""

    def __init__(self, final: Path, max_bytes: int | None = None) -> None:
        self.final = final
        self.tmp = final.with_name(final.name + ".tmp")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.lines = 0
        self._last = b"\n"
        self._sha = hashlib.sha256()
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")  # closed in commit/abort

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.bytes += len(chunk)
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        self.lines += chunk.count(b"\n")
        self._last = chunk[-1:]
        self._sha.update(chunk)
        self._fh.write(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def line_count(self) -> int:
        # A last line without a trailing newline still counts.
        return self.lines + (0 if self._last == b"\n" else 1)

    def commit(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.tmp, self.final)
        except BaseException:
            self.abort()  # ENOSPC/EIO: no .tmp left behind, no descriptor held open
            raise
        _fsync_dir(self.final.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # closing flushes, which can fail again
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> DurableWriter:
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


class LocalFileStore:
    """Content files under `<data_dir>/files/<file_id>` (every node must see data_dir)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "files"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def location(self, file_id: str) -> str:
        return f"files/{file_id}"

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def writer(self, file_id: str, max_bytes: int | None = None) -> DurableWriter:
        return DurableWriter(self.path(file_id), max_bytes)

    def exists(self, file_id: str) -> bool:
        return self.path(file_id).exists()

    def size(self, file_id: str) -> int:
        return self.path(file_id).stat().st_size

    def lines(self, file_id: str, max_line_bytes: int | None = None) -> Iterator[bytes]:
        """Stream the lines of a file; memory stays bounded by one line.

        With `max_line_bytes`, a longer line is never read whole: its first
        max_line_bytes + 1 bytes stand for it (enough for the size check to refuse it)
        and the rest is skipped in pieces."""
        with open(self.path(file_id), "rb") as fh:
            if max_line_bytes is None:
                yield from fh
                return
            while line := fh.readline(max_line_bytes + 1):
                if len(line) > max_line_bytes and not line.endswith(b"\n"):
                    while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                yield line

    def sweep(self, known: set[str], older_than_s: float) -> list[str]:
        """Remove content files no event names (a registration that failed after the
        bytes were written) and leftover .tmp files, once older than `older_than_s` so
        that an upload still in flight is never touched."""
        cutoff = time.time() - older_than_s
        removed = []
        for path in self.root.iterdir():
            name = path.name.removesuffix(".tmp")
            if (path.name.endswith(".tmp") or name not in known) and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path.name)
        return removed

    def chunks(self, file_id: str, size: int = READ_CHUNK) -> Iterator[bytes]:
        with open(self.path(file_id), "rb") as fh:
            while chunk := fh.read(size):
                yield chunk

    def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)
