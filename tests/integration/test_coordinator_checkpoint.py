"""The coordinator restores its read model from the last checkpoint and replays only the
events after it (real log and files on disk; the coordinator object, no Ray cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from actors.coordinator import Coordinator
from batches import checkpoint
from batches.readmodel import ReadModel
from eventlog import EventStore
from tests.analytics.synth import Writer, delete, outcome, upload
from tests.unit.test_checkpoint import views


def coordinator(data_dir: Path) -> Coordinator:
    return Coordinator({"data_dir": str(data_dir), "fsync": False})


def full_replay(data_dir: Path) -> ReadModel:
    model = ReadModel()
    with EventStore.open(data_dir / "log", fsync=False) as s:
        for e in s.read_all():
            model.apply(e.stream_id, e.type, e.data, e.position)
    return model


def history(data_dir: Path, start: int, n: int) -> None:
    with EventStore.open(data_dir / "log", fsync=False) as s:
        for i in range(start, start + n):
            upload(s, f"file-{i}")
            w = Writer(s, f"b{i}", tenant="t0").create().validate(2).outcomes([outcome(1)])
            if i % 2:
                w.outcomes([outcome(2)]).finish()
            else:
                delete(s, f"file-{i}")


def test_restart_restores_the_checkpoint_and_catches_up(tmp_path: Path) -> None:
    history(tmp_path, 0, 6)
    c1 = coordinator(tmp_path)
    asyncio.run(c1._checkpoint())
    at = c1.model.position
    c1.store.close()
    saved = checkpoint.load(tmp_path / checkpoint.DIR)
    assert saved is not None and saved.position == at
    history(tmp_path, 6, 4)  # after the checkpoint

    c2 = coordinator(tmp_path)
    assert views(c2.model) == views(full_replay(tmp_path))
    assert c2.model.position > at
    c2.store.close()

    # It really starts from the checkpoint: a mark only the checkpoint holds shows up.
    marked = checkpoint.load(tmp_path / checkpoint.DIR)
    assert marked is not None
    marked.files["file-only-in-the-checkpoint"] = dict(marked.files["file-1"])
    checkpoint.save(tmp_path / checkpoint.DIR, marked, fsync=False)
    c3 = coordinator(tmp_path)
    assert "file-only-in-the-checkpoint" in c3.model.files
    c3.store.close()


def test_a_checkpoint_ahead_of_the_log_is_ignored(tmp_path: Path) -> None:
    history(tmp_path, 0, 3)
    c1 = coordinator(tmp_path)
    model = c1.model
    c1.store.close()
    model.position += 1_000  # as if the log had been replaced by a shorter one
    checkpoint.save(tmp_path / checkpoint.DIR, model, fsync=False)
    c2 = coordinator(tmp_path)
    assert views(c2.model) == views(full_replay(tmp_path))
    c2.store.close()
