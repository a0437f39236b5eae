"""End-to-end fixtures: a fake upstream and `batchlog serve`, both real subprocesses."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batches.testing import FakeUpstream, Service

FAST_RETRIES = {
    "BATCHLOG_RETRY_MAX_ATTEMPTS": "3",
    "BATCHLOG_RETRY_BASE_DELAY_S": "0.02",
    "BATCHLOG_RETRY_MAX_DELAY_S": "0.2",
    "BATCHLOG_UPSTREAM_TIMEOUT_S": "10",
}


LIMIT_BYTES = 256 * 1024
LIMIT_REQUESTS = 400


@pytest.fixture(scope="session")
def shared_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _in_fresh_database(request: pytest.FixtureRequest) -> Iterator[None]:
    if not os.environ.get("BATCHLOG_E2E_POSTGRES"):
        yield
        return
    patch = pytest.MonkeyPatch()
    patch.setenv("BATCHLOG_DATABASE_URL", fresh_database(request.getfixturevalue("pg_server")))
    yield
    patch.undo()


@pytest.fixture(scope="module", autouse=True)
def postgres_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """`make e2e-postgres` (BATCHLOG_E2E_POSTGRES): every `batchlog serve` keeps its log
    and files in a fresh PostgreSQL database (Service passes its environment on): one
    per module for the module's services, one per test for those a test starts."""
    yield from _in_fresh_database(request)


@pytest.fixture(autouse=True)
def postgres_state_per_test(request: pytest.FixtureRequest, postgres_state: None) -> Iterator[None]:
    # Only where a test may start a service of its own (it gets a data dir: tmp_path);
    # a database costs ~0.4 s to create.
    if "tmp_path" in request.fixturenames:
        yield from _in_fresh_database(request)
    else:
        yield


@pytest.fixture(scope="module")
def upstream(shared_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream, as fresh as a new one: no requests, default switches."""
    shared_upstream.reset()
    yield shared_upstream
    shared_upstream.reset()


# The `service` fixture's server, shared by every module that uses it (they make their
# own files and batches, and list only what they made); stopped after the last e2e test.
_shared: dict[str, Any] = {}


@pytest.fixture(scope="module")
def service(
    shared_upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_state: None,
) -> Service:
    # Under BATCHLOG_E2E_POSTGRES each module has its own database (postgres_state), so
    # the server is shared only by modules on the same one: with files, by all of them.
    database = os.environ.get("BATCHLOG_DATABASE_URL", "")
    svc: Service | None = _shared.get("service")
    alive = svc is not None and svc.proc is not None and svc.proc.poll() is None
    if svc is not None and alive and _shared["database"] == database:
        return svc
    _stop_shared()
    data = tmp_path_factory.mktemp("svc") / "data"
    env = {
        "BATCHLOG_UPSTREAM": shared_upstream.url,
        # Small limits so that oversize inputs are cheap to make.
        "BATCHLOG_MAX_FILE_BYTES": str(LIMIT_BYTES),
        "BATCHLOG_MAX_REQUESTS_PER_BATCH": str(LIMIT_REQUESTS),
        **FAST_RETRIES,
    }
    svc = Service(data, env).start()
    _shared.update(service=svc, database=database)
    return svc


def _stop_shared() -> None:
    svc = _shared.pop("service", None)
    if svc is not None:
        svc.stop()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The shared server goes once the run leaves tests/e2e (not at the session's end:
    an idle Ray would take CPU from the models and analytics tests that follow)."""
    if nextitem is None or Path(__file__).parent not in Path(nextitem.path).parents:
        _stop_shared()


def pytest_sessionfinish() -> None:
    _stop_shared()


def fresh_database(server: Any) -> str:
    """A new, empty database on the test PostgreSQL server; its URL."""
    import uuid

    import psycopg

    name = f"e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return str(server.url.rsplit("/", 1)[0] + "/" + name)


def chat_lines(n: int, model: str = "fake-chat", prefix: str = "req") -> bytes:
    lines = [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def upload(client: Any, content: bytes, name: str = "input.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(content)), purpose="batch")


def wait_for(client: Any, batch_id: str, statuses: set[str], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} stuck in {batch.status}: {batch}")
        time.sleep(0.2)


def read_lines(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = client.files.content(file_id).content
    return [orjson.loads(line) for line in content.splitlines() if line.strip()]


def data_dir_of(service: Service) -> Path:
    return service.data_dir
