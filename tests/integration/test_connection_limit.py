"""The connection limit over real HTTP: the server `batchlog serve` builds (serve.make_server,
real uvicorn on 127.0.0.1) over the real app, an in-process core and a real log; no Ray.

uvicorn's own ``limit_concurrency`` answered a plain-text "Service Unavailable"; the
gate now keeps the limit and answers in OpenAI's envelope, before reading a header
beyond the request line's, so a flood of connections is still refused cheaply."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from batches.api import create_app
from batches.core import Coordination
from batches.core.coordination import CoreConfig
from batches.core.inprocess import InProcessBatchService
from batches.filestore import LocalFileStore
from batches.settings import Settings
from batches.testing import free_port
from batchlog.serve import make_server
from eventlog import EventStore

LIMIT = 3


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    settings = Settings(
        data_dir=tmp_path / "data", host="127.0.0.1", port=free_port(), max_connections=LIMIT
    )
    log = EventStore.open(settings.log_dir, fsync=False)
    files = LocalFileStore(settings.data_dir)
    core = Coordination(log, files, clock=time.time, config=CoreConfig.from_settings(settings))
    counted: list[Callable[[], int]] = []

    def build(open_connections: Callable[[], int]) -> FastAPI:
        counted.append(open_connections)
        return create_app(
            settings, InProcessBatchService(core), files, open_connections=open_connections
        )

    server = make_server(settings, build)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the server did not start")
        yield f"http://127.0.0.1:{settings.port}", counted[0]
    finally:
        server.should_exit = True
        thread.join(30)
        log.close()


def test_over_the_connection_limit_answers_openai_envelope(
    served: tuple[str, Callable[[], int]],
) -> None:
    url, open_connections = served
    port = int(url.rsplit(":", 1)[1])
    # A slowloris: connections that never finish their headers, plus idle ones.
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIMIT)]
    try:
        held[0].sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        wait_until(lambda: open_connections() == LIMIT, "the server did not count them")
        r = httpx.get(url + "/health")  # the fourth connection
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/json"
        assert r.headers["connection"] == "close"
        assert r.json() == {
            "error": {
                "message": "The server has too many open connections; retry later.",
                "type": "server_error",
                "param": None,
                "code": "overloaded",
            }
        }
        # The refused connection is closed by the server: it holds nothing.
        wait_until(lambda: open_connections() == LIMIT, "the refused connection stayed open")
        held.pop().close()
        wait_until(lambda: open_connections() == LIMIT - 1, "a closed connection was counted")
        ok = httpx.get(url + "/health")  # the third: served
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "ok"
    finally:
        for s in held:
            s.close()
