"""The coordinator restores its read model from the last checkpoint and replays only the
events after it (real log and files on disk; the coordinator object, no Ray cluster:
the actor's shell loads and saves checkpoints, its core replays the tail)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import duckdb

from actors.coordinator import Coordinator
from batches import analytics_store, checkpoint, timetravel
from batches.analytics import Analytics
from batches.domain import decider
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
            model.apply(e.stream_id, e.type, e.data, e.position, e.version)
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
    asyncio.run(c1.checkpoints.save(c1.core.model))
    at = c1.core.model.position
    c1.core.log.close()
    saved = checkpoint.load(tmp_path / checkpoint.DIR)
    assert saved is not None and saved.position == at
    history(tmp_path, 6, 4)  # after the checkpoint

    c2 = coordinator(tmp_path)
    assert views(c2.core.model) == views(full_replay(tmp_path))
    assert c2.core.model.position > at
    c2.core.log.close()

    # It really starts from the checkpoint: a mark only the checkpoint holds shows up.
    marked = checkpoint.load(tmp_path / checkpoint.DIR)
    assert marked is not None
    mark = {"only": "in the checkpoint"}
    marked.batches.hot["b0"] = dataclasses.replace(marked.batches.hot["b0"], metadata=mark)
    checkpoint.save(tmp_path / checkpoint.DIR, marked, fsync=False)
    c3 = coordinator(tmp_path)
    assert c3.core.model.batches["b0"].metadata == mark
    # and the catalog from its own file: files and batches made after the checkpoint
    assert c3.core.model.catalog.position >= c3.core.model.position > at
    assert "file-9" in c3.core.model.files and "b9" in c3.core.model.batches
    c3.core.log.close()


def test_a_checkpoint_ahead_of_the_log_is_ignored(tmp_path: Path) -> None:
    history(tmp_path, 0, 3)
    c1 = coordinator(tmp_path)
    model = c1.core.model
    c1.core.log.close()
    model.position += 1_000  # as if the log had been replaced by a shorter one
    checkpoint.save(tmp_path / checkpoint.DIR, model, fsync=False)
    c2 = coordinator(tmp_path)
    assert views(c2.core.model) == views(full_replay(tmp_path))
    c2.core.log.close()


def test_old_terminal_batches_leave_memory_and_are_served_from_the_log(tmp_path: Path) -> None:
    history(tmp_path, 0, 8)  # b1, b3, b5, b7 completed (long ago); the others in progress
    with EventStore.open(tmp_path / "log", fsync=False) as s:  # as the actor does at the end
        state = timetravel.state_as_of(s, "b1")
        assert state is not None
        s.save_snapshot("batch-b1", state.version, decider.state_to_dict(state))
    c = coordinator(tmp_path)
    before = {i: decider.to_wire(c.core.model.batches[i]) for i in sorted(c.core.model.batches)}
    pages = [b.id for b in c.core.model.list_batches("t0", None, 3)[0]]
    page2 = [b.id for b in c.core.model.list_batches("t0", pages[-1], 3)[0]]

    assert c.core.model.batches.evict(time.time(), c.settings.hot_batch_window_s) == 4
    assert sorted(c.core.model.batches.hot) == ["b0", "b2", "b4", "b6"]  # running ones stay
    assert len(c.core.model.batches) == 8 and "b1" in c.core.model.batches
    assert {
        i: decider.to_wire(c.core.model.batch("t0", i)) for i in sorted(c.core.model.batches)
    } == before
    assert [b.id for b in c.core.model.list_batches("t0", None, 3)[0]] == pages
    assert [b.id for b in c.core.model.list_batches("t0", pages[-1], 3)[0]] == page2
    assert c.core.model.batch("t1", "b1") is None  # another tenant's, even cold
    asyncio.run(c.checkpoints.save(c.core.model))
    c.core.log.close()

    c2 = coordinator(tmp_path)  # restored: still cold, still served
    assert sorted(c2.core.model.batches.cold()) == ["b1", "b3", "b5", "b7"]
    assert decider.to_wire(c2.core.model.batch("t0", "b7")) == before["b7"]
    c2.core.log.close()


def test_the_coordinator_keeps_the_analytics_tables_up_to_date(tmp_path: Path) -> None:
    """Once a minute it folds new events into data_dir/analytics/tables.duckdb (a child
    process), so a `batchlog sql` finds them there and folds nothing itself."""
    history(tmp_path, 0, 4)
    c = coordinator(tmp_path)
    asyncio.run(c.upkeep.analytics.run(c.core.model.position))
    assert analytics_meta(tmp_path)[1] == c.core.model.position
    history(tmp_path, 4, 3)
    c.core.catch_up()
    asyncio.run(c.upkeep.analytics.run(c.core.model.position))
    head = c.core.model.position
    assert analytics_meta(tmp_path)[1] == head
    c.core.log.close()
    with Analytics(tmp_path) as a:
        assert a.position == head
        assert a.refresh() == 0  # nothing left to fold in memory
        assert a.sql("SELECT count(*) FROM batches") == [(7,)]


def analytics_meta(data_dir: Path) -> tuple[int, ...]:
    con = duckdb.connect(str(analytics_store.db_path(data_dir)), read_only=True)
    try:
        meta = analytics_store._meta(con)
    finally:
        con.close()
    assert meta is not None
    return meta
