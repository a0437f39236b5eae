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


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
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
def service(
    upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("svc") / "data"
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        # Small limits so that oversize inputs are cheap to make.
        "BATCHLOG_MAX_FILE_BYTES": str(LIMIT_BYTES),
        "BATCHLOG_MAX_REQUESTS_PER_BATCH": str(LIMIT_REQUESTS),
        **FAST_RETRIES,
    }
    with Service(data, env) as svc:
        yield svc


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
