"""Group commit, shared by both backends: many appenders, one commit at a time.

The first appender to arrive becomes the leader and commits everything queued meanwhile
in one go (one write + one fdatasync for the file store, one transaction for
PostgreSQL); the others sleep until they are answered. A leader that is done hands the
lead to the oldest waiting append, if any, so no appender waits for a thread that has
nothing left to do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar


class Pending:
    """One append waiting for a commit; a backend subclasses it with its payload."""

    __slots__ = ("done", "error", "version", "wake")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.version = 0
        # released when the request is done, or when it is made the next leader
        self.wake = threading.Lock()
        self.wake.acquire()


R = TypeVar("R", bound=Pending)


class GroupCommit(Generic[R]):
    """``commit(batch)`` commits a batch of requests and sets each one's ``done``,
    ``version`` or ``error`` (and releases ``wake`` of those it answered)."""

    def __init__(self, commit: Callable[[list[R]], None]) -> None:
        # Held by the leader while it commits; whoever must not run beside a commit
        # (closing the store) takes it too.
        self.turn = threading.Lock()
        self._commit = commit
        self._queue: list[R] = []  # appends waiting for the next commit
        self._lock = threading.Lock()
        self._leading = False  # a leader is committing (or about to); guarded by _lock

    def submit(self, req: R) -> int:
        """Queue ``req`` and return its new stream version once committed (or raise)."""
        with self._lock:
            self._queue.append(req)
            lead = not self._leading
            self._leading = True
        if not lead:
            req.wake.acquire()
        if not req.done:
            self._lead()
        if req.error is not None:
            raise req.error
        return req.version

    def _lead(self) -> None:
        try:
            with self.turn:
                with self._lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].wake.release()  # not done: it wakes up as the next leader
                else:
                    self._leading = False
