"""The EventLog port: every backend satisfies it, statically (mypy) and at run time."""

from __future__ import annotations

from pathlib import Path

from eventlog import EventLog, EventStore, NewEvent


def _typed(store: EventLog) -> EventLog:
    # mypy checks this assignment: EventStore must structurally match the Protocol
    return store


def test_file_store_satisfies_the_port(tmp_path: Path) -> None:
    with EventStore.open(tmp_path / "log", fsync=False) as store:
        port = _typed(store)
        assert isinstance(port, EventLog)
        assert port.append("s", [NewEvent("T", {})], 0) == 1
        assert [e.version for e in port.read("s")] == [1]


def test_port_is_not_satisfied_by_anything() -> None:
    class Partial:
        def append(self, stream_id: str, events: object, expected_version: int) -> int:
            return 0

    assert not isinstance(Partial(), EventLog)
