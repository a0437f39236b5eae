"""Live progress (SSE) and partial results, through httpx against `batchlog serve`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import connect_sse

from batches.testing import FakeUpstream, Service
from batches.watch import watch
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def live(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        # one request at a time, so a batch stays in progress long enough to watch
        "BATCHLOG_CHUNK_SIZE": "1",
        "BATCHLOG_CHUNKS_IN_FLIGHT": "1",
        "BATCHLOG_SSE_HEARTBEAT_S": "0.2",
        **FAST_RETRIES,
    }
    with Service(tmp_path_factory.mktemp("live") / "data", env) as svc:
        yield svc


@pytest.fixture(autouse=True)
def clean_upstream(upstream: FakeUpstream) -> Iterator[None]:
    upstream.reset()
    yield
    upstream.reset()


def start(svc: Service, n: int) -> str:
    client = svc.client()
    source = upload(client, chat_lines(n))
    return str(
        client.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h").id
    )


def timeline(svc: Service, batch_id: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{svc.url}/batches/{batch_id}/events", params={"limit": 1000}).json()
    assert not page["has_more"]
    return list(page["data"])


def sse(
    svc: Service,
    batch_id: str,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Read the stream until the server closes it (or ``stop_after`` events); returns
    the events (checking ``id:``) and the comment lines seen (heartbeats)."""
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(30.0)) as client,
        client.stream(
            "GET",
            f"{svc.url}/batches/{batch_id}/events",
            params={"stream": "true"},
            headers=headers or {},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        block: list[str] = []
        for raw in response.iter_lines():
            if raw.startswith(":"):
                comments.append(raw)
            elif raw:
                block.append(raw)
            elif block:
                fields = dict(line.split(": ", 1) for line in block)
                item = orjson.loads(fields["data"])
                assert fields["id"] == str(item["version"])
                events.append(item)
                block = []
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events, comments


def test_stream_sends_every_event_then_closes(live: Service, upstream: FakeUpstream) -> None:
    upstream.configure(latency_ms=50)
    batch_id = start(live, 8)
    events, _ = sse(live, batch_id)  # returns only because the server closed the stream
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "BatchCompleted"
    assert events == timeline(live, batch_id)
    assert sum(e["type"] == "RequestSucceeded" for e in events) == 8


def test_resume_with_last_event_id_has_no_gaps_or_duplicates(
    live: Service, upstream: FakeUpstream
) -> None:
    upstream.configure(latency_ms=50)
    batch_id = start(live, 8)
    head, _ = sse(live, batch_id, stop_after=3)
    tail, _ = sse(live, batch_id, headers={"Last-Event-ID": str(head[-1]["version"])})
    assert [e["version"] for e in head + tail] == list(range(1, len(head + tail) + 1))
    assert head + tail == timeline(live, batch_id)
    # after the terminal event there is nothing more: the stream closes at once
    rest, _ = sse(live, batch_id, headers={"Last-Event-ID": str(tail[-1]["version"])})
    assert rest == []


def test_heartbeat_while_idle(live: Service, upstream: FakeUpstream) -> None:
    # The one request hangs upstream (until the 10 s upstream timeout), so the stream is
    # idle: heartbeats come; a cancel then ends the batch and the stream.
    upstream.configure(fail_first_n=1, fail_status="timeout")
    batch_id = start(live, 1)
    seen: list[str] = []

    def cancel_once_pinged() -> None:
        with (
            httpx.Client(timeout=30.0) as client,
            connect_sse(
                client, "GET", f"{live.url}/batches/{batch_id}/events", params={"stream": "true"}
            ) as source,
        ):
            for line in source.response.iter_lines():
                if line.startswith(":"):
                    seen.append(line)
                    live.client().batches.cancel(batch_id)
                    return

    cancel_once_pinged()
    assert seen, "no heartbeat comment"
    events, _ = sse(live, batch_id)
    assert events[-1]["type"] == "BatchCancelled"


def test_stream_errors_are_openai_envelopes(live: Service) -> None:
    missing = httpx.get(f"{live.url}/batches/batch_nope/events", params={"stream": "true"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    batch_id = start(live, 1)
    bad = httpx.get(
        f"{live.url}/batches/{batch_id}/events",
        params={"stream": "true"},
        headers={"Last-Event-ID": "nope"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


def test_watch_folds_the_stream_into_the_batch(live: Service, upstream: FakeUpstream) -> None:
    upstream.configure(latency_ms=20)
    batch_id = start(live, 5)
    seen: list[str] = []
    done = watch(live.url, batch_id, progress=False, on_event=lambda e: seen.append(e["type"]))
    final = live.client().batches.retrieve(batch_id).model_dump(mode="json")
    assert done["status"] == "completed" and seen[-1] == "BatchCompleted"
    for key in ("request_counts", "usage", "output_file_id", "completed_at", "model"):
        assert done[key] == final[key], key


def read_results(svc: Service, batch_id: str, **params: Any) -> tuple[str, list[bytes]]:
    r = httpx.get(f"{svc.url}/batches/{batch_id}/results", params=params, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return r.headers["x-batchlog-batch-status"], r.content.splitlines(keepends=True)


def test_partial_results_are_a_prefix_of_the_output_file(
    live: Service, upstream: FakeUpstream
) -> None:
    upstream.configure(latency_ms=150)
    n = 20
    batch_id = start(live, n)
    partial: list[list[bytes]] = []
    consumed: list[bytes] = []  # a consumer reading as it goes, with after=<lines so far>
    while True:
        status, lines = read_results(live, batch_id)
        if status == "in_progress" and 0 < len(lines) < n:
            partial.append(lines)
        _, more = read_results(live, batch_id, after=len(consumed))
        consumed += more
        if status in ("completed", "failed", "cancelled", "expired"):
            break
    client = live.client()
    final = wait_for(client, batch_id, {"completed"})
    output = client.files.content(final.output_file_id).content.splitlines(keepends=True)
    assert partial, "never saw the batch part-done"  # 20 requests one at a time, 150 ms each
    for lines in partial:
        assert lines == output[: len(lines)]
    assert consumed == output
    assert read_results(live, batch_id)[1] == output
    assert read_results(live, batch_id, after=7, limit=5)[1] == output[7:12]
    assert read_results(live, batch_id, after=n)[1] == []
    assert read_results(live, batch_id, kind="error")[1] == []


def test_error_results_match_the_error_file(live: Service, upstream: FakeUpstream) -> None:
    upstream.configure(fail_first_n=10, fail_status=400)  # every request fails, not retried
    batch_id = start(live, 4)
    client = live.client()
    final = wait_for(client, batch_id, {"completed"})
    assert final.output_file_id is None
    errors = client.files.content(final.error_file_id).content.splitlines(keepends=True)
    assert read_results(live, batch_id, kind="error") == ("completed", errors)
    assert read_results(live, batch_id, kind="output")[1] == []


def test_results_are_tenant_scoped_and_enveloped(live: Service) -> None:
    missing = httpx.get(f"{live.url}/batches/batch_nope/results")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    bad = httpx.get(f"{live.url}/batches/batch_nope/results", params={"kind": "both"})
    assert bad.status_code == 400


def test_watch_resumes_across_a_kill_9_of_the_server(live: Service, upstream: FakeUpstream) -> None:
    """The SSE crash test: the server (and its Ray) is killed -9 mid-batch and started
    again; watch() reconnects with Last-Event-ID and sees every event exactly once.
    The module's last test: it restarts the module's server (same data dir, same port)."""
    upstream.configure(latency_ms=100)
    svc = live
    batch_id = start(svc, 20)
    seen: list[dict[str, Any]] = []
    result: dict[str, Any] = {}

    def follow() -> None:
        result["batch"] = watch(
            svc.url, batch_id, progress=False, on_event=seen.append, timeout_s=600
        )

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    while sum(e["type"] == "RequestSucceeded" for e in seen) < 3:
        assert watcher.is_alive(), result
        time.sleep(0.05)
    svc.kill()
    svc.start()
    watcher.join(timeout=600)
    assert result["batch"]["status"] == "completed"
    assert [e["version"] for e in seen] == list(range(1, len(seen) + 1))
    assert seen == timeline(svc, batch_id)
    assert result["batch"]["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
