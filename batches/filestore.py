"""File contents on disk: written tmp + fsync + rename, so a file is whole or absent.

The event log records that a file exists (`FileUploaded`); this module holds the bytes.
A file's event is appended only after its bytes are durable, so an acknowledged upload
never points at a missing or half-written file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"File is larger than the {limit} byte limit.")
        self.limit = limit


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
        final.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort

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
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)

    def abort(self) -> None:
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


class FileStore:
    """Content files under `<data_dir>/files/<file_id>`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "files"
        self.root.mkdir(parents=True, exist_ok=True)

    def relative_path(self, file_id: str) -> str:
        return f"files/{file_id}"

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def writer(self, file_id: str, max_bytes: int | None = None) -> DurableWriter:
        return DurableWriter(self.path(file_id), max_bytes)

    def lines(self, file_id: str) -> Iterator[bytes]:
        """Stream the lines of a file; memory stays bounded by one line."""
        with open(self.path(file_id), "rb") as fh:
            yield from fh

    def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)
