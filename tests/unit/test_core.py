"""The application core without Ray: a real file-backed event log and file store in a
temp dir, a clock that moves only when told, ids from a counter."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from batches.catalogstore import CatalogFailed, CatalogStore
from batches.core import Coordination, CoreConfig
from batches.core.restarts import RestartBudget
from batches.core.supervision import Supervision
from batches.domain import events as ev
from batches.domain.errors import (
    ConcurrentUpdate,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    StorageUnavailable,
)
from batches.filestore import LocalFileStore
from batches.readmodel import ReadModel
from eventlog import EventStore, NewEvent, StoreFailed

T0 = 1_700_000_000
PARAMS = {"endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": None}


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


class CountingIds:
    def __init__(self) -> None:
        self.n = 0

    def _next(self) -> int:
        self.n += 1
        return self.n

    def batch_id(self) -> str:
        return f"batch_{self._next():04d}"

    def file_id(self) -> str:
        return f"file-{self._next():04d}"


class World:
    """One data dir; `core()` opens a core on it, as a restarted coordinator would."""

    def __init__(self, root: Path, max_active: int = 2) -> None:
        self.root = root
        self.clock = Clock()
        self.ids = CountingIds()
        self.config = CoreConfig(max_active_batches=max_active, idempotency_retention_s=3600)
        self.log = EventStore.open(root / "log", fsync=False)
        self.files = LocalFileStore(root)

    def core(self, log: Any = None) -> Coordination:
        return Coordination(
            log or self.log, self.files, clock=self.clock, ids=self.ids, config=self.config
        )

    def upload(self, core: Coordination, tenant: str = "t", purpose: str = "batch") -> str:
        file_id = self.ids.file_id()
        with self.files.writer(file_id) as w:
            w.write(b'{"custom_id": "a"}\n')
        wire = core.register_file(tenant, file_id, "in.jsonl", purpose, w.bytes, w.sha256, 1)
        return str(wire["id"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.log.close()


def create(core: Coordination, file_id: str, key: str | None = None, **extra: Any) -> Any:
    return core.create_batch("t", {**PARAMS, "input_file_id": file_id, **extra}, key)


# -- files ---------------------------------------------------------------------------


def test_files_register_list_get_delete(world: World) -> None:
    core = world.core()
    file_id = world.upload(core)
    wire = core.get_file("t", file_id)
    assert (wire["id"], wire["purpose"], wire["created_at"]) == (file_id, "batch", T0)
    again = core.register_file("t", file_id, "other.jsonl", "batch", 1, "x", 1)
    assert again == wire  # a known file id is recorded once
    assert [f["id"] for f in core.list_files("t", None, None, 10, "desc")["data"]] == [file_id]
    with pytest.raises(NotFound):
        core.get_file("someone-else", file_id)
    assert core.delete_file("t", file_id)["deleted"] is True
    assert not world.files.exists(file_id)
    with pytest.raises(NotFound):
        core.delete_file("t", file_id)
    assert [e.type for e in world.log.read(ev.FILES_STREAM)] == [ev.FILE_UPLOADED, ev.FILE_DELETED]


def test_create_needs_a_batch_file_of_the_tenant(world: World) -> None:
    core = world.core()
    other = world.upload(core, purpose="user_data")
    with pytest.raises(InvalidRequest) as info:
        create(core, other)
    assert info.value.code == "invalid_input_file_id"
    assert world.log.streams(ev.BATCH_STREAM_PREFIX) == []
    # An unknown file (here: another tenant's) makes a batch, as on OpenAI: it is
    # `validating`, the log holds its creation only, and it is admitted like any other
    # (its actor's validation finds the file missing and fails it).
    theirs = world.upload(core, tenant="t2")
    batch = create(core, theirs)["batch"]
    assert (batch["status"], batch["errors"]) == ("validating", None)
    stream = ev.batch_stream(batch["id"])
    assert [e.type for e in world.log.read(stream)] == [ev.BATCH_CREATED]
    assert core.admissions(running=()) == [batch["id"]]


# -- idempotency ---------------------------------------------------------------------


def test_idempotent_create_and_conflict(world: World) -> None:
    core = world.core()
    file_id = world.upload(core)
    first = create(core, file_id, key="k1")
    assert first["created"] and first["batch"]["status"] == "validating"
    world.clock.now += 10
    again = create(core, file_id, key="k1")
    assert (again["created"], again["batch"]["id"]) == (False, first["batch"]["id"])
    with pytest.raises(IdempotencyConflict):
        create(core, file_id, key="k1", metadata={"x": "y"})
    assert len(world.log.streams(ev.BATCH_STREAM_PREFIX)) == 1
    # Another tenant's key space, and a key past retention, make new batches.
    theirs = world.upload(core, tenant="t2")
    assert core.create_batch("t2", {**PARAMS, "input_file_id": theirs}, "k1")["created"]
    world.clock.now += 3600
    later = create(core, file_id, key="k1")
    assert later["created"] and later["batch"]["id"] != first["batch"]["id"]


def test_restarted_core_keeps_the_idempotency_index(world: World) -> None:
    file_id = world.upload(world.core())
    first = create(world.core(), file_id, key="k")
    again = create(world.core(), file_id, key="k")  # a fresh core rebuilds from the log
    assert (again["created"], again["batch"]["id"]) == (False, first["batch"]["id"])


class CrashBeforeBatchCreated:
    """The log as a coordinator sees it when it dies right after the key's claim."""

    def __init__(self, log: EventStore) -> None:
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        if stream_id.startswith(ev.BATCH_STREAM_PREFIX):
            raise SystemExit("killed between the claim and BatchCreated")
        return self.log.append(stream_id, events, expected_version)


def test_crash_between_claim_and_create_is_finished_on_restart(world: World) -> None:
    file_id = world.upload(world.core())
    with pytest.raises(SystemExit):
        create(
            world.core(CrashBeforeBatchCreated(world.log)), file_id, key="k", metadata={"a": "b"}
        )
    [claim] = world.log.read(ev.COORDINATOR_STREAM)
    batch_id = claim.data["batch_id"]
    assert world.log.version(ev.batch_stream(batch_id)) == 0

    restarted = world.core()
    assert restarted.repair() == [batch_id]
    assert restarted.repair() == []  # once only
    batch = restarted.get_batch("t", batch_id)
    assert (batch["metadata"], batch["input_file_id"]) == ({"a": "b"}, file_id)
    # The client's retry of the cut-off create gets the batch the claim made.
    again = create(restarted, file_id, key="k", metadata={"a": "b"})
    assert (again["created"], again["batch"]["id"]) == (False, batch_id)


# -- admission, queue position, cancel and expiry of queued batches --------------------------


def make_batches(world: World, core: Coordination, n: int) -> list[str]:
    file_id = world.upload(core)
    ids = []
    for _ in range(n):
        ids.append(create(core, file_id)["batch"]["id"])
        world.clock.now += 1
    return ids


def test_admission_is_oldest_first_within_free_slots(world: World) -> None:
    core = world.core()
    a, b, _c = make_batches(world, core, 3)
    assert core.admissions(running=()) == [a, b]
    assert core.admissions(running={a}) == [b]
    assert core.admissions(running={a, b}) == []


def test_cancelling_then_overdue_batches_are_admitted_first(world: World) -> None:
    core = world.core()
    a, _b, c = make_batches(world, core, 3)
    assert core.cancel_queued("t", c)["status"] == "cancelling"
    assert core.admissions(running=())[0] == c
    # Once every window is over, the overdue ones come before ones still in time.
    world.clock.now = T0 + 86_400 + 0.5  # a is overdue (created first), b and c are not
    assert core.admissions(running=()) == [c, a]


def test_queue_position(world: World) -> None:
    core = world.core()
    a, b, c = make_batches(world, core, 3)
    assert [core.get_batch("t", x).get("queue_position") for x in (a, b, c)] == [1, 2, 3]
    running = {a}
    assert "queue_position" not in core.get_batch("t", a, running)
    assert core.get_batch("t", c, running)["queue_position"] == 2
    listed = core.list_batches("t", None, 10, running)["data"]
    assert [(x["id"], x.get("queue_position")) for x in listed] == [(c, 2), (b, 1), (a, None)]


def test_cancel_of_a_queued_batch_is_idempotent_and_refused_when_terminal(world: World) -> None:
    core = world.core()
    [a] = make_batches(world, core, 1)
    core.cancel_queued("t", a)
    core.cancel_queued("t", a)
    assert [e.type for e in world.log.read(ev.batch_stream(a))] == [
        ev.BATCH_CREATED,
        ev.BATCH_CANCEL_REQUESTED,
    ]
    with pytest.raises(NotFound):
        core.cancel_queued("other", a)


def test_queued_batches_expire_when_their_window_ends(world: World) -> None:
    core = world.core()
    a, b = make_batches(world, core, 2)
    world.clock.now = T0 + 86_400 - 1
    assert core.expire_queued(running=()) == []
    world.clock.now = T0 + 86_400
    assert core.expire_queued(running={b}) == [a]  # b has an actor: the actor expires it
    batch = core.get_batch("t", a)
    assert (batch["status"], batch["expired_at"], batch["error_file_id"]) == (
        "expired",
        T0 + 86_400,
        None,
    )
    assert core.admissions(running=()) == [b]
    with pytest.raises(InvalidTransition):
        core.cancel_queued("t", a)


def test_shortened_completion_window_is_recorded(world: World) -> None:
    world.config = CoreConfig(completion_window_s=6)
    core = world.core()
    [a] = make_batches(world, core, 1)
    assert core.get_batch("t", a)["expires_at"] == T0 + 6


def test_batch_events_page_by_version(world: World) -> None:
    core = world.core()
    [a] = make_batches(world, core, 1)
    core.cancel_queued("t", a)
    first = core.batch_events("t", a, None, 1)
    assert [e["type"] for e in first["data"]] == [ev.BATCH_CREATED] and first["has_more"]
    rest = core.batch_events("t", a, 1, 10)
    assert [e["version"] for e in rest["data"]] == [2] and not rest["has_more"]


# -- one writer per stream: a stale writer is refused --------------------------------------


class SomeoneWritesFirst:
    """Another writer appends to the stream between this core's decision and its append."""

    def __init__(self, log: EventStore, event: NewEvent) -> None:
        self.log, self.event, self.fired = log, event, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        if not self.fired:
            self.fired = True
            self.log.append(stream_id, [self.event], self.log.version(stream_id))
        return self.log.append(stream_id, events, expected_version)


def test_a_stale_batch_stream_writer_is_refused(world: World) -> None:
    [a] = make_batches(world, world.core(), 1)
    zombie_wrote = NewEvent(ev.BATCH_VALIDATED, {"model": "m", "total": 1, "at": T0})
    core = world.core(SomeoneWritesFirst(world.log, zombie_wrote))
    with pytest.raises(ConcurrentUpdate) as refused:
        core.cancel_queued("t", a)
    assert refused.value.message == (
        f"batch-{a} changed while this request was decided (expected version 1, found 2); retry."
    )
    types = [e.type for e in world.log.read(ev.batch_stream(a))]
    assert types == [ev.BATCH_CREATED, ev.BATCH_VALIDATED]  # the cancel was not merged in
    assert core.get_batch("t", a)["status"] == "in_progress"  # and the core caught up


def test_a_stale_files_writer_is_refused(world: World) -> None:
    core = world.core()
    file_id = world.upload(core)
    other = NewEvent(ev.FILE_DELETED, {"file_id": file_id, "at": T0})
    stale = world.core(SomeoneWritesFirst(world.log, other))
    with pytest.raises(ConcurrentUpdate):
        stale.register_file("t", "file-new", "x.jsonl", "batch", 1, hashlib.sha256().hexdigest(), 1)
    assert [e.data["file_id"] for e in world.log.read(ev.FILES_STREAM)] == [file_id, file_id]


def test_a_stale_idempotency_claim_writer_is_refused(world: World) -> None:
    """Two coordinator incarnations (a zombie and its successor) claim keys: the one whose
    view of the coordinator stream is stale writes nothing, neither claim nor batch."""
    file_id = world.upload(world.core())
    theirs = {
        "tenant": "t",
        "key": "k-other",
        "digest": "d",
        "batch_id": "batch_other",
        "params": {},
        "at": T0,
    }
    stale = world.core(SomeoneWritesFirst(world.log, NewEvent(ev.IDEMPOTENCY_KEY_CLAIMED, theirs)))
    with pytest.raises(ConcurrentUpdate):
        create(stale, file_id, key="k")
    assert [e.data["key"] for e in world.log.read(ev.COORDINATOR_STREAM)] == ["k-other"]
    assert world.log.streams(ev.BATCH_STREAM_PREFIX) == []
    again = create(stale, file_id, key="k")  # it caught up: the retry is decided afresh
    assert again["created"]
    assert [e.data["key"] for e in world.log.read(ev.COORDINATOR_STREAM)] == ["k-other", "k"]


def test_the_core_never_writes_a_stream_an_actor_owns(world: World) -> None:
    core = world.core()
    [a] = make_batches(world, core, 1)
    world.clock.now = T0 + 86_400
    assert core.expire_queued(running={a}) == []  # overdue, but its actor expires it
    with pytest.raises(ValueError):
        core.cancel_queued("t", a, running={a})
    assert [e.type for e in world.log.read(ev.batch_stream(a))] == [ev.BATCH_CREATED]


# -- a failed log write: refuse everything until the log is reopened ------------------------


class FailingLog:
    """A log whose appends fail as a full disk makes them fail (the store fails closed)."""

    def __init__(self, log: EventStore) -> None:
        self.log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        raise StoreFailed("write failed: No space left on device")


def test_a_failed_write_refuses_until_the_log_is_reopened(world: World) -> None:
    file_id = world.upload(world.core())
    fresh: list[Any] = []  # what `reopen` hands back: nothing while the disk is full
    core = Coordination(
        FailingLog(world.log),
        world.files,
        clock=world.clock,
        ids=world.ids,
        config=world.config,
        reopen=lambda: fresh[0] if fresh else None,
    )
    with pytest.raises(StorageUnavailable):
        create(core, file_id, key="k")
    assert core.health(())["status"] == "faulted"
    with pytest.raises(StorageUnavailable):  # still refused, and nothing was written
        create(core, file_id, key="k")
    assert world.log.streams(ev.BATCH_STREAM_PREFIX) == []
    fresh.append(world.log)  # room again
    assert core.recover() and core.health(())["status"] == "ok"
    made = create(core, file_id, key="k")
    assert made["created"] and core.get_batch("t", made["batch"]["id"])["status"] == "validating"


# -- supervision: who runs, who owns a batch stream, back-off and give-up -------------------


class StoreFailedInTheActor(Exception):
    """What Ray raises when a batch actor's log write failed (its repr names the cause)."""

    def __repr__(self) -> str:
        return "RayTaskError(StoreFailed('No space left on device'))"


class Launches:
    """The `Launch` port: records which batches were started, hands back a handle."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def __call__(self, batch_id: str) -> str:
        self.started.append(batch_id)
        return f"handle-{batch_id}"


def supervision(world: World, core: Coordination, max_restarts: int = 1) -> Supervision:
    budget = RestartBudget(max_restarts, base_s=2.0)
    return Supervision(core, budget, launch=Launches(), monotonic=world.clock)


def test_supervision_starts_what_fits_and_takes_a_stream_back_when_a_run_ends(
    world: World,
) -> None:
    core = world.core()
    a, b, c = make_batches(world, core, 3)
    sup = supervision(world, core)
    assert sup.start(orphan_grace_s=0) == {"batches": 3, "active": 3}
    assert sup.admit() == [a, b] and sup.launch.started == [a, b]  # type: ignore[attr-defined]
    assert sup.admit() == []  # no free slot
    assert sup.get_batch("t", c)["queue_position"] == 1
    # A running batch is its actor's to cancel: the core writes nothing.
    assert sup.cancel("t", a) == f"handle-{a}"
    assert [e.type for e in world.log.read(ev.batch_stream(a))] == [ev.BATCH_CREATED]
    # A queued one is the core's: cancelled here, and admitted first when a slot frees.
    assert sup.cancel("t", c) is None
    assert sup.get_batch("t", c)["status"] == "cancelling"
    assert sup.ended(b) is None
    assert set(sup.running) == {a, c}
    with pytest.raises(NotFound):
        sup.cancel("other-tenant", c)


def test_a_create_is_admitted_at_once_and_answered_as_it_stands(world: World) -> None:
    world.config = CoreConfig(max_active_batches=1)
    core = world.core()
    sup = supervision(world, core)
    file_id = world.upload(core)
    first = sup.create_batch("t", {**PARAMS, "input_file_id": file_id}, None)["batch"]
    second = sup.create_batch("t", {**PARAMS, "input_file_id": file_id}, None)["batch"]
    assert "queue_position" not in first and first["id"] in sup.running  # started
    assert second["queue_position"] == 1 and second["id"] not in sup.running
    listed = sup.list_batches("t", None, 10)["data"]
    assert [b.get("queue_position") for b in listed] == [1, None]
    assert sup.health()["running"] == [first["id"]]


def test_supervision_backs_off_then_gives_up_and_storage_faults_do_not_count(
    world: World,
) -> None:
    core = world.core()
    [a] = make_batches(world, core, 1)
    sup = supervision(world, core, max_restarts=1)
    assert sup.admit() == [a]
    assert sup.ended(a, RuntimeError("actor died")) is None  # first failure: back off 2 s
    assert a not in sup.running
    world.clock.now += 2
    assert sup.admit() == [a]
    for _ in range(3):  # a full disk is the store's fault: backs off, never gives up
        assert sup.ended(a, StoreFailedInTheActor()) is None
        world.clock.now += 60
        assert sup.admit() == [a]
    reason = sup.ended(a, RuntimeError("actor died again"))
    assert reason is not None and "2 times" in reason
    batch = core.get_batch("t", a)
    assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "batch_crashed"
    world.clock.now += 60
    assert sup.admit() == []  # never a loop


def test_supervision_round_expires_queued_batches_and_files(world: World) -> None:
    world.config = CoreConfig(batch_file_ttl_s=100, max_active_batches=1)
    core = world.core()
    a, b = make_batches(world, core, 2)
    spare = world.upload(core)
    sup = supervision(world, core)
    assert sup.admit() == [a]
    world.clock.now = T0 + 86_400 + 1  # both windows over (b was created a second later)
    assert sup.round()
    assert core.get_batch("t", b)["status"] == "expired"
    assert core.get_batch("t", a, sup.running)["status"] == "validating"  # its actor's to expire
    # Past their 100 s: the spare file is gone, the input of a (still running) waits for it.
    listed = [f["id"] for f in core.list_files("t", None, None, 10, "desc")["data"]]
    assert spare not in listed and listed == [core.get_batch("t", a)["input_file_id"]]


class CatalogOnAFullDisk(CatalogStore):
    """A catalog (a real SQLite file) whose commits fail while the disk is `full`."""

    full = False  # (the disk's: every instance's)

    def commit(self, force: bool = False) -> None:
        if self.full and self._dirty:
            self.rollback()
            raise CatalogFailed("catalog commit failed: database or disk is full")
        super().commit(force)


def test_a_failed_catalog_write_refuses_writes_until_the_model_is_restored(world: World) -> None:
    path = world.root / "catalog.sqlite"

    def restore(head: int) -> ReadModel:  # as at a start: the catalog from its file
        return ReadModel(CatalogOnAFullDisk(path, fsync=False))

    core = Coordination(
        world.log,
        world.files,
        clock=world.clock,
        ids=world.ids,
        config=world.config,
        model=restore(0),
        reopen=lambda: None if CatalogOnAFullDisk.full else world.log,  # room again?
        restore=restore,
    )
    kept = world.upload(core)
    catalog = core.model.catalog
    assert isinstance(catalog, CatalogOnAFullDisk)
    CatalogOnAFullDisk.full = True
    with pytest.raises(StorageUnavailable):
        world.upload(core)  # its event is in the log; the catalog could not take it
    assert core.health(())["status"] == "faulted"
    # The log is ahead of a model that cannot fold it: a façade's change request must not
    # be told "something changed" over and over (docs/read-cache.md).
    world.log.append("someone-else", [NewEvent("Noted", {})], 0)  # (a stream no model reads)
    assert world.log.head() > core.model.position and not core.behind()
    with pytest.raises(StorageUnavailable):
        create(core, kept)  # refused, nothing written
    assert world.log.streams(ev.BATCH_STREAM_PREFIX) == []
    assert not core.recover()  # the disk still full
    CatalogOnAFullDisk.full = False
    assert core.recover() and core.health(())["status"] == "ok"
    assert core.model.catalog is not catalog  # restored over the catalog's file
    listed = [f["id"] for f in core.list_files("t", None, None, 10, "asc")["data"]]
    assert listed == [e.data["file_id"] for e in world.log.read(ev.FILES_STREAM)]
    assert len(listed) == 2 and create(core, kept)["created"]
