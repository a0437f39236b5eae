from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventlog import EventLog, EventStore
from eventlog.postgres import PostgresEventStore


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def open_store(log_dir: Path) -> Iterator[Callable[..., EventStore]]:
    """Open stores on ``log_dir`` (or another path); all are closed at the end of the test."""
    opened: list[EventStore] = []

    def _open(path: Path | None = None, **kw: object) -> EventStore:
        s = EventStore.open(path or log_dir, **kw)  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


BACKENDS = ["file", "postgres"]
_schemas = itertools.count()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_log(request: pytest.FixtureRequest, backend: str, log_dir: Path) -> Iterator[Any]:
    """Open handles on this test's log, on every backend: the contract tests use this.

    ``open_log()`` opens one more handle (another incarnation) on the same log (keyword
    arguments are file-store options, ignored by other backends); the
    fixture's ``.state()`` returns everything the log holds, to show that nothing changed.
    """
    opened: list[EventLog] = []
    if backend == "file":

        def _open(**file_options: Any) -> EventLog:
            s = EventStore.open(log_dir, **file_options)
            opened.append(s)
            return s

        def _state() -> object:
            return snapshot_files(log_dir)

    else:
        server = request.getfixturevalue("pg_server")
        schema = f"t{os.getpid()}_{next(_schemas)}"

        def _open(**file_options: Any) -> EventLog:  # segment_bytes etc.: files only
            s = PostgresEventStore.open(server.url, schema=schema)
            opened.append(s)
            return s

        def _state() -> object:
            with psycopg.connect(server.url) as c:
                return {
                    t: c.execute(f"SELECT * FROM {schema}.{t} ORDER BY 1").fetchall()
                    for t in ("head", "streams", "events", "snapshots")
                }

    _open.state = _state  # type: ignore[attr-defined]
    yield _open
    for s in opened:
        s.close()
    if backend == "postgres":
        with psycopg.connect(server.url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing changed)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
