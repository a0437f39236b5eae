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
