"""The commit lock: a POSIX record lock (fcntl.lockf) on ``LOCK``, shared within a process.

POSIX record locks belong to a process, not to a file descriptor, and closing *any*
descriptor of the file drops them. So every EventStore of one process that opens the same
directory shares one descriptor and one threading lock (taken first), kept here.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class CommitLock:
    """Exclusive across processes (lockf) and across handles and threads of this process."""

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        self.fd = fd
        self.key = key
        self.refs = 0
        self.local = threading.Lock()

    def acquire(self) -> None:
        self.local.acquire()
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.local.release()
            raise

    def release(self) -> None:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        finally:
            self.local.release()


_registry: dict[tuple[int, int], CommitLock] = {}
_registry_lock = threading.Lock()


def open_commit_lock(path: Path) -> CommitLock:
    """The process's CommitLock for the lock file ``path`` (created if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _registry_lock:
        lock = _registry.get(key)
        if lock is None:
            lock = _registry[key] = CommitLock(fd, key)
            lock.refs += 1
            return lock
        lock.refs += 1
    # Closing our extra descriptor would drop the record lock if another thread of this
    # process held it right now, so close it only while holding the threading lock.
    with lock.local:
        os.close(fd)
    return lock


def close_commit_lock(lock: CommitLock) -> None:
    with _registry_lock:
        lock.refs -= 1
        if lock.refs == 0:
            _registry.pop(lock.key, None)
            os.close(lock.fd)


def _after_fork_in_child() -> None:
    # Record locks are not inherited by a child, and a threading lock may have been copied
    # while held by a thread that does not exist in the child.
    for lock in _registry.values():
        lock.local = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
