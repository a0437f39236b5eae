"""The secrets actors need (upstream API key, webhook secrets) in PostgreSQL.

With a local data dir they sit in `data_dir/secrets.json` (0600); with a database an
actor may run on a node that has no such file, so `batchlog serve` writes them into
`batchlog_secrets.secrets` at start and actors read them from there wherever they run.
They never go into the event log, actor arguments or a log line. Whoever can read this
database can read them, as they can read every tenant's files in it: grant accordingly
(docs/scaling.md).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_DDL = """
CREATE SCHEMA IF NOT EXISTS batchlog_secrets;
CREATE TABLE IF NOT EXISTS batchlog_secrets.secrets (
    name text PRIMARY KEY,
    value jsonb NOT NULL
);
"""


def write(url: str, secrets: dict[str, Any]) -> None:
    """Replace the stored secrets with these (a None value removes that secret)."""
    with psycopg.connect(url, connect_timeout=30) as conn, conn.transaction():
        # Two serves starting at once: CREATE ... IF NOT EXISTS can still collide.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('batchlog_secrets'))")
        conn.execute(_DDL)
        for name, value in secrets.items():
            if value is None:
                conn.execute("DELETE FROM batchlog_secrets.secrets WHERE name = %s", [name])
            else:
                conn.execute(
                    "INSERT INTO batchlog_secrets.secrets (name, value) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    [name, Jsonb(value)],
                )


def read(url: str, name: str) -> Any:
    """The stored secret `name`, or None (also before any serve wrote the table)."""
    with psycopg.connect(url, connect_timeout=30) as conn:
        if conn.execute("SELECT to_regclass('batchlog_secrets.secrets')").fetchone() == (None,):
            return None
        row = conn.execute(
            "SELECT value FROM batchlog_secrets.secrets WHERE name = %s", [name]
        ).fetchone()
    return None if row is None else row[0]
