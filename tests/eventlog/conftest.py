from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventlog import EventStore


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


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing changed)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
