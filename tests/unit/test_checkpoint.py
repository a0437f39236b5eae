"""Read-model checkpoints: a checkpoint at any position plus the events after it gives the
model a full replay gives (property test), through a real file; a bad one is ignored."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from batches import catalogstore, checkpoint
from batches.catalogstore import CatalogStore
from batches.domain import decider as d
from batches.readmodel import ReadModel
from tests.unit.helpers import T0, Run, create, outcome

FATES = ["validating", "failed", "in_progress", "cancelling", "cancelled", "expired", "completed"]
Event = tuple[str, str, dict[str, Any]]


def batch_events(i: int, fate: str, key: str | None) -> list[Event]:
    batch_id = f"batch_{i:024d}"
    run = create(Run(), batch_id=batch_id, at=T0 + i % 3, idempotency_key=key, tenant=f"t{i % 2}")
    if fate == "failed":
        run.do(d.RecordValidation(at=T0 + 9, errors=[{"code": "x", "message": "m"}]))
    elif fate != "validating":
        run.do(d.RecordValidation(at=T0 + 9, model="m", total=2))
        if fate in ("cancelling", "cancelled"):
            run.do(d.Cancel(at=T0 + 10))
            if fate == "cancelled":
                run.do(d.FinishCancel(at=T0 + 11, output_file_id=None, error_file_id="f-e"))
        elif fate == "expired":
            run.do(d.Expire(at=run.s.expires_at, output_file_id=None, error_file_id="f-e"))
        elif fate == "completed":
            run.do(d.RecordOutcomes([outcome(1), outcome(2, ok=False)]))
            run.do(d.StartFinalizing(at=T0 + 12))
            run.do(d.Complete(at=T0 + 13, output_file_id="f-o", error_file_id="f-e"))
    events: list[Event] = [("batch-" + batch_id, t, data) for t, data in run.events]
    if key is not None:
        claim = {
            "tenant": f"t{i % 2}",
            "key": key,
            "digest": f"digest-{i}",
            "batch_id": batch_id,
            "params": {"batch_id": batch_id},
            "at": T0 + i,
        }
        events.insert(0, ("coordinator", "IdempotencyKeyClaimed", claim))
    return events


def file_events(j: int, deleted: bool, expires: bool = False) -> list[Event]:
    up = {
        "file_id": f"file-{j}",
        "tenant": f"t{j % 2}",
        "filename": f"{j}.jsonl",
        "purpose": "batch",
        "bytes": 10 + j,
        "created_at": T0 + j,
        "expires_at": T0 + 100 - j if expires else None,
        "path": f"files/file-{j}",
        "sha256": "0" * 64,
        "lines": 1,
    }
    out: list[Event] = [("files", "FileUploaded", up)]
    if deleted:
        out.append(("files", "FileDeleted", {"file_id": f"file-{j}", "at": T0 + 50}))
    return out


def views(model: ReadModel) -> dict[str, Any]:
    """What the model holds (cold batches loaded) and what it answers."""
    held = checkpoint.to_dict(model)
    del held["batches"]  # which are in memory depends on evictions, not on the log
    held["all batches"] = {k: d.state_to_dict(model.batches[k]) for k in sorted(model.batches)}
    held["files"] = {k: model.files[k] for k in sorted(model.files)}
    out: dict[str, Any] = {"dict": held, "len": (len(model.batches), len(model.files))}
    for tenant in ("t0", "t1"):
        listed = [b.id for b in model.list_batches(tenant, None, 100)[0]]
        paged = []  # the same list two at a time, each page after the last id of the one before
        after = None
        while True:
            page, more = model.list_batches(tenant, after, 2)
            paged += [b.id for b in page]
            if not more:
                break
            after = page[-1].id
        out[tenant] = (
            listed,
            paged,
            [f["file_id"] for f in model.list_files(tenant, None, None, 100, "asc")[0]],
            [f["file_id"] for f in model.list_files(tenant, "batch", "file-1", 100, "desc")[0]],
            model.stored_bytes(tenant, "batch"),
            [
                getattr(model.idempotency.lookup(tenant, f"k{i}", T0, 10**9), "batch_id", None)
                for i in range(8)
            ],
        )
    out["active"] = [b.id for b in model.active_batches()]
    out["due"] = model.due_files(T0 + 10**6)
    return out


def apply(model: ReadModel, log: list[Event], start: int, end: int) -> None:
    for pos in range(start + 1, end + 1):
        stream, type_, ev_data = log[pos - 1]
        model.apply(stream, type_, ev_data, pos)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_checkpoint_plus_catch_up_equals_full_replay(data: st.DataObject) -> None:
    """A coordinator checkpoints at k, runs on (its catalog committed at m, applied up to
    j, then it dies: what was not committed is lost), and restarts from the checkpoint
    and the catalog on disk (or, the catalog lost, from the log alone)."""
    queues: list[list[Event]] = []
    for i in range(data.draw(st.integers(0, 7), label="batches")):
        fate = data.draw(st.sampled_from(FATES))
        key = data.draw(st.sampled_from([None, f"k{i}", f"k{i % 2}"]))
        queues.append(batch_events(i, fate, key))
    for j in range(data.draw(st.integers(0, 4), label="files")):
        queues.append(file_events(j, data.draw(st.booleans()), data.draw(st.booleans())))
    log: list[Event] = []
    while queues:  # interleave the streams, each in its own order
        q = queues[data.draw(st.integers(0, len(queues) - 1))]
        log.append(q.pop(0))
        queues = [q for q in queues if q]

    full = ReadModel()
    apply(full, log, 0, len(log))

    def loader(batch_id: str) -> d.BatchState | None:  # the stream, as the log has it
        return d.fold((t, e) for s_, t, e in log if s_ == "batch-" + batch_id)

    k = data.draw(st.integers(0, len(log)), label="checkpoint at")
    m = data.draw(st.integers(k, len(log)), label="catalog committed at")
    j = data.draw(st.integers(m, len(log)), label="died at")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / catalogstore.NAME
        partial = ReadModel(CatalogStore(path, fsync=False))
        partial.batches.loader = loader
        apply(partial, log, 0, k)
        if data.draw(st.booleans(), label="evict terminal batches"):
            partial.batches.evict(T0 + 10**6, 0)
        saved = checkpoint.save(Path(tmp), partial, fsync=False)
        assert saved == (k > 0)
        apply(partial, log, k, m)
        partial.catalog.commit(force=True)
        apply(partial, log, m, j)
        partial.catalog.db.close()  # died: what was applied after m is rolled back
        if data.draw(st.booleans(), label="catalog lost"):
            for f in Path(tmp).glob(catalogstore.NAME + "*"):
                f.unlink()
        catalog = CatalogStore(path, fsync=False)
        restored = checkpoint.load(Path(tmp), len(log), catalog) or ReadModel(catalog)
        restored.batches.loader = loader
        start = restored.position
        assert start in (k, 0)
        # memory holds what the checkpoint held, not every batch ever made
        assert set(restored.batches.hot) <= set(partial.batches.hot)
        apply(restored, log, start, len(log))
        assert views(restored) == views(full)
        catalog.close()
    # the index of active batches is what a scan of every batch finds
    keys = sorted(full.catalog.batch_key(b)[1] for b in full.catalog.all_batch_ids())  # type: ignore[index]
    scan = [k[2] for k in keys if full.batches[k[2]].status in d.ACTIVE_STATUSES]
    assert [b.id for b in full.active_batches()] == scan
    assert [b.id for b in restored.active_batches()] == scan


def test_prune_claims_drops_old_claims_only_and_answers_the_same() -> None:
    model = ReadModel()
    log = batch_events(1, "completed", "k1") + batch_events(2, "validating", "k2")
    half = batch_events(3, "validating", "k3")[:1]  # a claim whose create never landed
    for pos, (stream, type_, ev_data) in enumerate(log + half, start=1):
        model.apply(stream, type_, ev_data, pos)
    before = [
        model.idempotency.lookup(t, f"k{i}", T0 + 7, 5) for t in ("t0", "t1") for i in (1, 2, 3)
    ]
    # claims were made at T0+1, T0+2, T0+3; with retention 5, at T0+7 the first two are old
    assert [c is not None for c in before] == [False] * 5 + [True]  # only k3 (t1) is live
    assert model.prune_claims(T0 + 7, 5) == 2
    assert set(model.claims) == {"batch_" + f"{3:024d}"}  # its batch does not exist yet
    after = [
        model.idempotency.lookup(t, f"k{i}", T0 + 7, 5) for t in ("t0", "t1") for i in (1, 2, 3)
    ]
    assert after == before
    assert model.idempotency.lookup("t1", "k3", T0 + 4, 5) is not None
    assert model.prune_claims(T0 + 7, 5) == 0


def test_a_damaged_or_foreign_checkpoint_is_ignored(tmp_path: Path) -> None:
    model = ReadModel()
    for pos, (stream, type_, ev_data) in enumerate(batch_events(1, "completed", "k1"), 1):
        model.apply(stream, type_, ev_data, pos)
    assert checkpoint.save(tmp_path, model, fsync=False)
    assert checkpoint.load(tmp_path) is not None
    path = tmp_path / "readmodel.snap"
    good = path.read_bytes()
    path.write_bytes(good[:-3] + b"xyz")
    assert checkpoint.load(tmp_path) is None  # CRC
    path.write_bytes(good[: len(good) // 2])
    assert checkpoint.load(tmp_path) is None  # cut short
    assert not checkpoint.save(tmp_path / "empty", ReadModel(), fsync=False)
    assert checkpoint.load(tmp_path / "empty") is None
