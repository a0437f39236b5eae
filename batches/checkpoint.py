"""Checkpoints of the coordinator's read model: its state at a log position, saved
atomically, so a start restores it and replays only the events after that position.

Stored as ``<dir>/readmodel.snap`` in the event log's snapshot format (CRC'd, written to a
temporary file, fsynced, renamed into place, directory fsynced), with the log position as
its version. A checkpoint that is missing, damaged or of another schema is ignored (the
model is replayed from the log, as without checkpoints): it is a cache, never the truth.
Replaying from a checkpoint gives the same model as replaying the whole log (a property
test checks it).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from pathlib import Path
from typing import Any

from batches.domain import decider
from batches.readmodel import ReadModel
from eventlog.snapshots import read_snapshot, write_snapshot

log = logging.getLogger("batchlog.checkpoint")

NAME = "readmodel"
DIR = "checkpoints"  # under the data dir
SCHEMA = 2  # 2: the model keeps each stream's version (its writers append at it)


def to_dict(model: ReadModel) -> dict[str, Any]:
    """Everything the model holds, as JSON-ready data."""
    out: dict[str, Any] = {"schema": SCHEMA}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name == "batches":  # those in memory; the others by their tenant
            out[f.name] = {k: decider.state_to_dict(v) for k, v in value.hot.items()}
            out["cold_batches"] = dict(value.cold)
        elif f.name == "_batch_keys":
            out[f.name] = [list(k) for k in value]
        elif f.name in ("_key_of", "idempotency", "_expiry", "_active"):
            continue  # derived: from _batch_keys, claims, files, batches
        else:
            out[f.name] = value
    return out


def from_dict(data: dict[str, Any]) -> ReadModel:
    """The model ``to_dict`` described."""
    model = ReadModel()
    names = {f.name for f in dataclasses.fields(model)}
    for name, value in data.items():
        if name == "schema" or name not in names:
            continue
        if name == "batches":
            for k, v in value.items():
                model.batches.hot[k] = decider.state_from_dict(v)
            model.batches.cold.update(data.get("cold_batches") or {})
        elif name == "_batch_keys":
            model._batch_keys = [(int(c), int(p), str(b)) for c, p, b in value]
            model._key_of = {k[2]: k for k in model._batch_keys}
        else:
            setattr(model, name, value)
    hot = model.batches.hot
    model._active = [
        k for k in model._batch_keys if k[2] in hot and hot[k[2]].status in decider.ACTIVE_STATUSES
    ]
    model._expiry = [
        (int(f["expires_at"]), f["file_id"])
        for f in model.files.values()
        if f.get("expires_at") is not None
    ]
    heapq.heapify(model._expiry)
    for claim in model.claims.values():  # in log order, as the model folded them
        model.idempotency.claim(
            claim["tenant"], claim["key"], claim["digest"], claim["batch_id"], claim["at"]
        )
    return model


def save(directory: Path, model: ReadModel, *, fsync: bool = True) -> bool:
    """Save the model at its position (atomically); False when there is nothing yet."""
    return save_dict(directory, model.position, to_dict(model), fsync=fsync)


def save_dict(directory: Path, position: int, state: dict[str, Any], *, fsync: bool) -> bool:
    """Save what ``to_dict`` gave at ``position`` (the file I/O, apart: a caller can take
    the dict on its event loop and write it from a thread)."""
    if position < 1:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    write_snapshot(directory, NAME, position, state, fsync=fsync)
    return True


def load(directory: Path, head: int | None = None) -> ReadModel | None:
    """The saved model, or None (no checkpoint, damaged, other schema, or ahead of the
    log's ``head``: replay instead)."""
    snap = read_snapshot(directory, NAME)
    if snap is None or snap.state.get("schema") != SCHEMA:
        return None
    if head is not None and snap.version > head:
        log.warning(
            "ignoring the read-model checkpoint at %d: the log ends at %d", snap.version, head
        )
        return None
    model = from_dict(snap.state)
    if model.position != snap.version:
        return None
    return model
