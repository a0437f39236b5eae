"""The analytics views over the PostgreSQL event log give what they give over the file
log: the same synthetic history written to both, every view compared row by row (all
but commit times), incremental refresh included."""

from __future__ import annotations

from pathlib import Path

import psycopg

from batches.analytics import Analytics
from batches.pganalytics import PgAnalytics
from eventlog import EventStore
from eventlog.postgres import PostgresEventStore
from tests.analytics.synth import Writer, outcome
from tests.analytics.test_analytics_unit import history

# what depends on commit times (recorded_at and the phase durations taken from it)
_TIMED = "last_event_at, validating_s, in_progress_s, finalizing_s, cancelling_s, duration_s"
QUERIES = {
    "batches": f"SELECT * EXCLUDE ({_TIMED}) FROM batches ORDER BY batch_id",
    "requests": "SELECT * EXCLUDE (recorded_at) FROM requests ORDER BY position",
    "files": "SELECT * FROM files ORDER BY file_id",
    "events": "SELECT stream_id, version, type, data, position FROM events ORDER BY position",
}


def test_views_match_the_file_backend(pg_server, tmp_path: Path) -> None:
    schema = "analytics_eq"
    files = EventStore.open(tmp_path / "data" / "log", fsync=False)
    pg = PostgresEventStore.open(pg_server.url, schema=schema)
    try:
        history(files)
        history(pg)
        a = Analytics(tmp_path / "data", persist=False)
        b = PgAnalytics(pg_server.url, schema=schema)
        for name, q in QUERIES.items():
            assert b.sql(q) == a.sql(q), name
        assert len(b.sql(QUERIES["requests"])) > 0
        # later events: both catch up incrementally
        for store in (files, pg):
            Writer(store, "b-late").create().validate(1).outcomes([outcome(1)]).finish()
        for name, q in QUERIES.items():
            assert b.sql(q) == a.sql(q), name
        assert b.batch("b-late") is not None and b.batch("b-late")["status"] == "completed"
        assert [e["type"] for e in b.timeline("b-late")] == [
            e["type"] for e in a.timeline("b-late")
        ]
        a.close()
        b.close()
    finally:
        files.close()
        pg.close()
        with psycopg.connect(pg_server.url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_cli_reads_postgres_when_the_database_url_is_set(pg_database, tmp_path) -> None:
    """`batchlog stats` / `sql` with BATCHLOG_DATABASE_URL: the same CLI, no data dir."""
    import json
    import os
    import subprocess
    import sys

    pg = PostgresEventStore.open(pg_database)
    history(pg)
    pg.close()
    env = {**os.environ, "BATCHLOG_DATABASE_URL": pg_database}
    cmd = [sys.executable, "-m", "batchlog.cli", "sql", "--format", "json"]
    out = subprocess.run(
        [*cmd, "SELECT batch_id, status FROM batches ORDER BY batch_id"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    ).stdout
    rows = json.loads(out)
    assert {r["batch_id"]: r["status"] for r in rows}["b-ok"] == "completed"


def test_connect_finds_the_log_in_postgres(pg_database, tmp_path, monkeypatch) -> None:
    """`connect()` (the notebook's entry point) follows BATCHLOG_DATABASE_URL;
    `Analytics(data_dir)` reads files only, and says where the log is."""
    import pytest

    from batches.analytics import connect

    pg = PostgresEventStore.open(pg_database)
    history(pg)
    pg.close()
    monkeypatch.setenv("BATCHLOG_DATABASE_URL", pg_database)
    with connect(tmp_path / "nothing-here") as a:
        assert isinstance(a, PgAnalytics)
        assert a.batch("b-ok")["status"] == "completed"
    with pytest.raises(FileNotFoundError, match="BATCHLOG_DATABASE_URL is set"):
        Analytics(tmp_path / "nothing-here")
    monkeypatch.delenv("BATCHLOG_DATABASE_URL")
    with pytest.raises(FileNotFoundError):
        connect(tmp_path / "nothing-here")
