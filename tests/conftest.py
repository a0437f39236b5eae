"""Fixtures shared by every test directory: a real PostgreSQL server for the suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batches.testing.pgserver import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole session (each test uses its own schema)."""
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_database(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session's server; its URL. Dropped afterwards."""
    import re

    import psycopg

    name = "db_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    with psycopg.connect(pg_server.url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    yield pg_server.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_server.url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
