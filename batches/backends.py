"""Where state lives: the event log and the file contents, chosen by the settings.

Without `database_url` (BATCHLOG_DATABASE_URL): the file store and content files under
`data_dir` (one machine). With it: both in PostgreSQL, so batch actors, the coordinator
and façades may run on any node of a Ray cluster (docs/scaling.md).
"""

from __future__ import annotations

from batches.filestore import FileStore, LocalFileStore
from batches.settings import Settings
from eventlog import EventLog, EventStore

# How long a writer keeps reconnecting while the database is away before it raises
# StoreUnavailable. Batch actors pause through a restart; the coordinator answers API
# calls with 503 soon instead of hanging them.
ACTOR_RETRY_S = 3600.0
API_RETRY_S = 5.0


def open_event_log(settings: Settings, *, retry_for: float = API_RETRY_S) -> EventLog:
    if settings.database_url:
        from eventlog.postgres import PostgresEventStore

        return PostgresEventStore.open(settings.database_url, retry_for=retry_for)
    return EventStore.open(settings.log_dir, fsync=settings.fsync)


def open_file_store(settings: Settings) -> FileStore:
    if settings.database_url:
        from batches.pgfilestore import PgFileStore

        return PgFileStore(settings.database_url)
    return LocalFileStore(settings.data_dir)
