"""kill -9 mid-batch: the batch still completes, each line has exactly one outcome, and no
request whose outcome was already in the log is sent upstream again."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batches.testing import FakeUpstream, Service
from eventlog import EventStore
from eventlog.postgres import PostgresEventStore
from tests.e2e.conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

pytestmark = pytest.mark.e2e

N = 300


@pytest.fixture(scope="module")
def module_service(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {"BATCHLOG_UPSTREAM": upstream.url, **FAST_RETRIES}
    svc = Service(tmp_path_factory.mktemp("crash") / "data", env)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def svc(module_service: Service, upstream: FakeUpstream) -> Iterator[Service]:
    """One server for the module's crash tests (each runs its own batch): running, and
    started again if a test before left it dead."""
    upstream.reset()
    upstream.configure(latency_ms=20)
    if module_service.proc is None:
        module_service.start()
    yield module_service
    upstream.reset()


def recorded_custom_ids(data_dir: Path, batch_id: str) -> set[str]:
    url = os.environ.get("BATCHLOG_DATABASE_URL")  # `make e2e-postgres` style runs
    store = PostgresEventStore.open(url) if url else EventStore.open(data_dir / "log")
    try:
        events = store.read(f"batch-{batch_id}")
    finally:
        store.close()
    return {e.data["custom_id"] for e in events if e.type in ("RequestSucceeded", "RequestFailed")}


def wait_progress(client, batch_id: str, at_least: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch_id).request_counts.completed < at_least:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)


def check_exactly_once(
    client, done, upstream: FakeUpstream, batch_id: str, recorded: set[str]
) -> None:  # type: ignore[no-untyped-def]
    assert done.status == "completed", done
    lines = read_lines(client, done.output_file_id) + read_lines(client, done.error_file_id)
    ids = Counter(line["custom_id"] for line in lines)
    assert set(ids) == {f"k-{i}" for i in range(N)}
    assert max(ids.values()) == 1, "a custom_id appears twice"
    assert done.request_counts.completed + done.request_counts.failed == N
    sent = Counter(r["key"] for r in upstream.requests() if r["key"])
    repeated = [cid for cid in recorded if sent[f"{batch_id}:{cid}"] != 1]
    assert not repeated, f"re-sent after their outcome was recorded: {repeated[:5]}"


def test_kill_server_mid_batch_then_restart(svc: Service, upstream: FakeUpstream) -> None:
    client = svc.client()
    source = upload(client, chat_lines(N, prefix="k"))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    try:
        wait_progress(client, batch.id, 40)
    finally:
        svc.kill()
    recorded = recorded_custom_ids(svc.data_dir, batch.id)
    assert 0 < len(recorded) < N
    svc.start()  # the same data dir and settings: a restart after kill -9
    client = svc.client()
    assert client.files.retrieve(source.id).id == source.id  # uploads survive
    done = wait_for(client, batch.id, {"completed", "failed"}, timeout=180)
    check_exactly_once(client, done, upstream, batch.id, recorded)


def test_kill_batch_actor_process(svc: Service, upstream: FakeUpstream) -> None:
    data = svc.data_dir
    client = svc.client()
    source = upload(client, chat_lines(N, prefix="k"))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_progress(client, batch.id, 40)
    # Read before the kill: whatever is in the log now must never be sent again.
    recorded = recorded_custom_ids(data, batch.id)
    pids = svc.pids("BatchActor")
    assert pids, "no batch actor process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    done = wait_for(client, batch.id, {"completed", "failed"}, timeout=180)
    check_exactly_once(client, done, upstream, batch.id, recorded)


def test_kill_coordinator_mid_batch_sends_nothing_twice(
    svc: Service, upstream: FakeUpstream
) -> None:
    """The batch actors and the upstream executor are not the coordinator's: its
    kill -9 does not stop them, so not one request is sent upstream twice."""
    client = svc.client()
    source = upload(client, chat_lines(N, prefix="k"))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_progress(client, batch.id, 40)
    actors = svc.pids("BatchActor")
    (coordinator,) = svc.pids("ray::Coordinator")
    os.kill(coordinator, signal.SIGKILL)
    done = wait_for(client, batch.id, {"completed", "failed"}, timeout=180)
    check_exactly_once(client, done, upstream, batch.id, {f"k-{i}" for i in range(N)})
    assert actors and svc.pids("ray::Coordinator") != [coordinator]


def test_kill_upstream_executor_fails_its_lines_with_executor_error(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The executor's process dies with requests in flight: the batch goes on, and each
    line it held ends in the error file as ``executor_error`` (docs/errors.md)."""
    env = {"BATCHLOG_UPSTREAM": upstream.url, **FAST_RETRIES}
    upstream.reset()
    upstream.configure(latency_ms=3000)
    try:
        with Service(tmp_path / "data", env) as svc:
            client = svc.client()
            source = upload(client, chat_lines(20, prefix="x"))
            batch = client.batches.create(
                input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            wait_for(client, batch.id, {"in_progress"})
            pids = svc.pids("ray::UpstreamExecutor")
            assert pids, "no upstream executor process found"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            done = wait_for(client, batch.id, {"completed", "failed"}, timeout=180)
            errors = read_lines(client, done.error_file_id) if done.error_file_id else []
    finally:
        upstream.reset()
    assert done.status == "completed", done
    lost = [e for e in errors if e["error"] and e["error"]["code"] == "executor_error"]
    assert lost, errors[:3]
    for e in lost:
        assert e["response"] is None
        assert e["error"]["message"].startswith(
            "The executor failed while running this request: "
        ), e
