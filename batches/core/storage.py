"""Wiring a core to its storage: the log, the file store, the read-model checkpoint (and
the persisted analytics tables kept current beside them).

The one place that turns settings into the core's ports (the coordinator calls it):
the log and files (under the data dir, or in PostgreSQL: `batches/backends.py`), the
read model restored from its
last checkpoint (the core replays only the log after it), and a log reopened after a
failed write once the disk has room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

from batches import catalogstore, checkpoint
from batches.backends import open_event_log, open_file_store
from batches.catalogstore import CatalogStore
from batches.core.coordination import Coordination, CoreConfig
from batches.filestore import free_bytes
from batches.readmodel import ReadModel
from batches.settings import Settings
from eventlog import EventLog
from eventlog.compaction import compact

log = logging.getLogger("batchlog.core")

RECOVER_FREE = 1 << 20  # reopen a failed log only once the disk has this much room


class Checkpoints:
    """The read model saved at a log position (`batches/checkpoint.py`), over the catalog
    of files and batches beside it (`batches/catalogstore.py`)."""

    def __init__(self, settings: Settings) -> None:
        self.directory: Path = settings.data_dir / checkpoint.DIR
        self.fsync = settings.fsync
        self.catalog = CatalogStore(self.directory / catalogstore.NAME, fsync=settings.fsync)
        self.saved = 0  # the position of the last checkpoint written or restored

    def load(self, head: int) -> ReadModel:
        """The model restored from the last checkpoint, or an empty one (over the catalog,
        which then takes only the events it has not seen) that the core replays."""
        if self.catalog.position > head:
            log.warning(
                "the catalog is ahead of the log (%d > %d): rebuilt", self.catalog.position, head
            )
            self.catalog.reset()
        model = checkpoint.load(self.directory, head, self.catalog)
        self.saved = model.position if model is not None else 0
        return model if model is not None else ReadModel(self.catalog)

    async def save(self, model: ReadModel) -> None:
        """Taken on the caller's event loop (where nothing changes the model meanwhile),
        written from a thread. The catalog is committed first: never behind a checkpoint."""
        position = model.position
        if position > self.saved:
            model.catalog.commit(force=True)
            state = checkpoint.to_dict(model)
            await asyncio.to_thread(
                checkpoint.save_dict, self.directory, position, state, fsync=self.fsync
            )
            self.saved = position


class AnalyticsRefresh:
    """Keeps `data_dir/analytics/tables.duckdb` current (docs/analytics.md): folds what the
    log gained into it, in a niced child process (DuckDB's memory stays out of the caller;
    a connection holding the file makes it a no-op). Off with the PostgreSQL log (the
    analytics read segment files) or BATCHLOG_ANALYTICS_REFRESH=false."""

    TIMEOUT_S = 600  # a first build over a long history takes a while

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self.enabled = settings.analytics_refresh and settings.database_url is None
        self.done = 0  # the log position the tables were last brought to

    async def run(self, position: int) -> None:
        if not self.enabled or position <= self.done:
            return
        proc = await asyncio.create_subprocess_exec(
            "nice", "-n", "10", sys.executable, "-m", "batches.analytics", str(self.data_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.TIMEOUT_S)
        except TimeoutError:
            proc.kill()  # its transaction is lost: the file stays a fold of the log
            await proc.wait()
            log.warning("analytics refresh took over %d s; stopped", self.TIMEOUT_S)
            return
        if proc.returncode != 0:
            log.warning("analytics refresh failed: %s", err.decode(errors="replace")[-2000:])
            return
        self.done = position


class Upkeep:
    """What the coordinator does about once a minute, besides supervising: sealed log
    segments get their Parquet copy (docs/eventlog.md; the file log only), memory is
    bounded (`Coordination.forget_old`), the read model is checkpointed, and the
    analytics tables catch up."""

    def __init__(self, settings: Settings, checkpoints: Checkpoints) -> None:
        self.log_dir = settings.log_dir if settings.database_url is None else None
        self.checkpoints = checkpoints
        self.analytics = AnalyticsRefresh(settings)

    async def run(self, core: Coordination) -> None:
        if core.fault is not None:
            return  # the log failed a write: nothing to compact or save until it recovers
        if self.log_dir is not None:
            await asyncio.to_thread(compact, self.log_dir)
        core.forget_old()
        await self.checkpoints.save(core.model)
        await self.analytics.run(core.model.position)


def open_core(settings: Settings, checkpoints: Checkpoints) -> Coordination:
    store = open_event_log(settings)
    core: Coordination

    def reopen() -> EventLog | None:
        """A fresh store after a failed write, once the disk has room again."""
        local = settings.database_url is None
        if local and free_bytes(settings.data_dir) < max(settings.min_free_bytes, RECOVER_FREE):
            return None
        with contextlib.suppress(Exception):
            core.log.close()
        try:
            return open_event_log(settings)
        except Exception:
            log.exception("reopening the event log failed; still refusing writes")
            return None

    core = Coordination(
        store,
        open_file_store(settings),
        clock=time.time,
        reopen=reopen,
        model=checkpoints.load(store.head()),
        restore=checkpoints.load,
        config=CoreConfig.from_settings(settings),
    )
    return core
