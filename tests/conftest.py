"""Fixtures shared by every test directory: a real PostgreSQL server for the suite.

Also counts the `batchlog serve` boots of the run (the slow part of the e2e tier): the
harness appends a line per boot to $BATCHLOG_TEST_BOOT_LOG, and the summary says how
many and how long they took. Set the variable yourself to add up several runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batches.testing.pgserver import PgServer
from batches.testing.service import BOOT_LOG_ENV

_boot_log_start = 0


def pytest_configure(config: pytest.Config) -> None:
    global _boot_log_start
    if hasattr(config, "workerinput"):  # an xdist worker: it inherits the controller's
        if config.workerinput.get("columns_unset"):  # xdist's workers get COLUMNS=80
            os.environ.pop("COLUMNS", None)  # (CLI tables would wrap, unlike in one process)
        return
    path = os.environ.get(BOOT_LOG_ENV)
    if not path:
        path = os.path.join(tempfile.mkdtemp(prefix="batchlog-boots-"), "boots.jsonl")
        os.environ[BOOT_LOG_ENV] = path
    log = Path(path)
    _boot_log_start = log.stat().st_size if log.exists() else 0


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    log = Path(os.environ.get(BOOT_LOG_ENV, ""))
    if not log.is_file():
        terminalreporter.write_line("batchlog serve boots: 0")
        return
    with open(log, "rb") as f:
        f.seek(_boot_log_start)
        lines = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    boots = [b["seconds"] for b in lines if b["event"] == "boot"]
    stops = [b["seconds"] for b in lines if b["event"] == "stop"]
    terminalreporter.write_line(
        f"batchlog serve boots: {len(boots)} ({sum(boots):.0f} s to healthy,"
        f" {sum(stops):.0f} s in {len(stops)} stops; {log})"
    )


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


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["columns_unset"] = "COLUMNS" not in os.environ


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With pytest-xdist's `--dist loadfile` (the Makefile's XDIST): a module's tests in
    one worker, so a module-scoped `batchlog serve` boots once, and all of tests/models in
    one worker, so the embedded models load once (its fixtures are package-scoped).
    (`--dist loadgroup` would do it with marks, but xdist 3.8's marks are lost on pytest 9.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/models/" if path.startswith("tests/models/") else path

    return ByModule(config, log)
