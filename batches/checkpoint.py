"""Checkpoints of the coordinator's read model: its state at a log position, saved
atomically, so a start restores it and replays only the events after that position.

Stored as ``<dir>/readmodel.snap`` in the event log's snapshot format (CRC'd, written to a
temporary file, fsynced, renamed into place, directory fsynced), with the log position as
its version. It holds only what the model keeps in memory (hot batches, the active index,
live claims, the core's stream versions), so its size follows the work at hand; the rest
is in the catalog beside it (``catalog.sqlite``, `batches/catalogstore.py`), which is
committed first and so is never behind a checkpoint (one that is, after a power loss, is
not used). A checkpoint that is missing, damaged, of another schema or ahead of the log is
ignored (the model is replayed from the log): it is a cache, never the truth. Replaying
from a checkpoint gives the same model as replaying the whole log (a property test checks
it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from batches.catalogstore import CatalogStore
from batches.domain import decider
from batches.readmodel import ReadModel
from eventlog.snapshots import read_snapshot, write_snapshot

log = logging.getLogger("batchlog.checkpoint")

NAME = "readmodel"
DIR = "checkpoints"  # under the data dir
SCHEMA = 3  # 3: files and every batch's list key moved to the catalog


def to_dict(model: ReadModel) -> dict[str, Any]:
    """What the model holds in memory, as JSON-ready data."""
    return {
        "schema": SCHEMA,
        "position": model.position,
        "batches": {k: decider.state_to_dict(v) for k, v in model.batches.hot.items()},
        "active": [list(k) for k in model.active],
        "claims": model.claims,
        "versions": model.versions,
    }


def from_dict(data: dict[str, Any], catalog: CatalogStore | None = None) -> ReadModel:
    """The model ``to_dict`` described, over ``catalog``."""
    model = ReadModel(catalog)
    model.position = int(data["position"])
    for k, v in data["batches"].items():
        model.batches.hot[k] = decider.state_from_dict(v)
    model.active = [(int(c), int(p), str(b)) for c, p, b in data["active"]]
    model._active_key = {k[2]: k for k in model.active}
    model.claims = dict(data["claims"])
    model.versions = {k: int(v) for k, v in data["versions"].items()}
    for claim in model.claims.values():  # in log order, as the model folded them
        model.idempotency.claim(
            claim["tenant"], claim["key"], claim["digest"], claim["batch_id"], claim["at"]
        )
    return model


def save(directory: Path, model: ReadModel, *, fsync: bool = True) -> bool:
    """Commit the catalog, then save the model at its position (atomically); False when
    there is nothing yet."""
    model.catalog.commit(force=True)
    return save_dict(directory, model.position, to_dict(model), fsync=fsync)


def save_dict(directory: Path, position: int, state: dict[str, Any], *, fsync: bool) -> bool:
    """Save what ``to_dict`` gave at ``position`` (the file I/O, apart: a caller can take
    the dict on its event loop and write it from a thread)."""
    if position < 1:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    write_snapshot(directory, NAME, position, state, fsync=fsync)
    return True


def load(
    directory: Path, head: int | None = None, catalog: CatalogStore | None = None
) -> ReadModel | None:
    """The saved model over ``catalog``, or None (no checkpoint, damaged, other schema,
    ahead of the log's ``head``, or ahead of the catalog: replay instead)."""
    snap = read_snapshot(directory, NAME)
    if snap is None or snap.state.get("schema") != SCHEMA:
        return None
    if head is not None and snap.version > head:
        log.warning(
            "ignoring the read-model checkpoint at %d: the log ends at %d", snap.version, head
        )
        return None
    if catalog is not None and catalog.position < snap.version:
        log.warning(
            "ignoring the read-model checkpoint at %d: the catalog is at %d",
            snap.version,
            catalog.position,
        )
        return None
    model = from_dict(snap.state, catalog)
    if model.position != snap.version:
        return None
    return model
