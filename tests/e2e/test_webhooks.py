"""Webhooks end to end: `batchlog serve` POSTs to a real HTTP receiver, which verifies
every delivery with the openai SDK's `client.webhooks.unwrap`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from batches.testing import FakeUpstream, Service
from batches.webhooks import new_secret
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
FAST_WEBHOOKS = {"BATCHLOG_WEBHOOK_RETRY_BASE_S": "0.2", "BATCHLOG_WEBHOOK_RETRY_MAX_DELAY_S": "1"}


class Receiver:
    """A webhook receiver on loopback: records each delivery and answers with the next
    status of ``script`` (then ``default``)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.default = 200
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with outer.lock:
                    status = outer.script.pop(0) if outer.script else outer.default
                    outer.received.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def deliveries(self, batch_id: str, path: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for r in self.received
                if batch_id.encode() in r["body"] and (path is None or r["path"] == path)
            ]

    def wait(
        self, batch_id: str, ok: bool = True, timeout: float = 120.0, path: str | None = None
    ) -> list[dict[str, Any]]:
        """Every delivery of ``batch_id`` once one was answered 2xx (or any, ok=False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.deliveries(batch_id, path)
            if got and (not ok or any(200 <= r["status"] < 300 for r in got)):
                return got
            time.sleep(0.1)
        raise TimeoutError(f"no {'acknowledged ' if ok else ''}delivery for {batch_id}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(delivery: dict[str, Any], secret: str) -> Any:
    """What a receiver written for OpenAI does: the SDK checks the signature and parses."""
    return openai.OpenAI(api_key="unused").webhooks.unwrap(
        delivery["body"], delivery["headers"], secret=secret
    )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


SECRET = new_secret()
ALICE_SECRET = new_secret()


@pytest.fixture(scope="module")
def hooked(
    upstream: FakeUpstream, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_API_KEYS": "ka:alice,kb:bob",
        "BATCHLOG_WEBHOOK_URL": receiver.url("/deployment"),
        "BATCHLOG_WEBHOOK_SECRET": SECRET,
        "BATCHLOG_TENANT_WEBHOOKS": f"alice={receiver.url('/alice')}|{ALICE_SECRET}",
        **FAST_WEBHOOKS,
        **FAST_RETRIES,
    }
    with Service(tmp_path_factory.mktemp("hooks") / "data", env) as svc:
        yield svc


def run_batch(client: openai.OpenAI, n: int = 2) -> str:
    source = upload(client, chat_lines(n))
    batch = client.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h")
    wait_for(client, batch.id, {"completed", "failed", "cancelled", "expired"})
    return str(batch.id)


def timeline(svc: Service, batch_id: str, key: str) -> list[dict[str, Any]]:
    page = httpx.get(
        f"{svc.url}/batches/{batch_id}/events",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    return list(page["data"])


def test_completed_batch_is_delivered_signed_and_in_the_timeline(
    hooked: Service, receiver: Receiver
) -> None:
    batch_id = run_batch(hooked.client(api_key="kb"))
    [delivery] = receiver.wait(batch_id)
    assert delivery["path"] == "/deployment"  # bob has no webhook of his own
    event = verify(delivery, SECRET)
    assert (event.type, event.object, event.data.id) == ("batch.completed", "event", batch_id)
    assert event.id.startswith("evt_") and isinstance(event.created_at, int)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(delivery, ALICE_SECRET)
    events = timeline(hooked, batch_id, "kb")
    types = [e["type"] for e in events]
    assert types[-3:] == ["WebhookQueued", "WebhookAttempted", "WebhookDelivered"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["webhook_id"] == delivery["headers"]["webhook-id"]


def test_a_tenants_own_webhook_and_secret(hooked: Service, receiver: Receiver) -> None:
    batch_id = run_batch(hooked.client(api_key="ka"))
    [delivery] = receiver.wait(batch_id)
    assert delivery["path"] == "/alice"
    assert verify(delivery, ALICE_SECRET).data.id == batch_id


def test_500_then_200_redelivers_with_the_same_webhook_id(
    hooked: Service, receiver: Receiver
) -> None:
    receiver.script = [500]
    batch_id = run_batch(hooked.client(api_key="kb"))
    first, second = receiver.wait(batch_id)
    assert (first["status"], second["status"]) == (500, 200)
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert first["body"] == second["body"]
    assert verify(second, SECRET).data.id == batch_id
    attempts = [e for e in timeline(hooked, batch_id, "kb") if e["type"] == "WebhookAttempted"]
    assert [(a["data"]["attempt"], a["data"]["status_code"]) for a in attempts] == [
        (1, 500),
        (2, 200),
    ]


def test_failed_and_cancelled_batches(hooked: Service, receiver: Receiver) -> None:
    client = hooked.client(api_key="kb")
    failed = client.batches.create(
        input_file_id="file-nope", endpoint=CHAT, completion_window="24h"
    )
    assert verify(receiver.wait(failed.id)[0], SECRET).type == "batch.failed"
    source = upload(client, chat_lines(1))
    cancelled = client.batches.create(
        input_file_id=source.id, endpoint=CHAT, completion_window="24h"
    )
    client.batches.cancel(cancelled.id)
    done = wait_for(client, cancelled.id, {"cancelled", "completed"})
    expected = "batch.cancelled" if done.status == "cancelled" else "batch.completed"
    assert verify(receiver.wait(cancelled.id)[0], SECRET).type == expected


def test_kill_9_before_delivery_still_delivers_after_restart(
    hooked: Service, receiver: Receiver
) -> None:
    """The module's last test: it kills and restarts the module's server."""
    receiver.default = 503  # the receiver is down: the batch ends, the webhook waits
    try:
        batch_id = run_batch(hooked.client(api_key="kb"))
        refused = receiver.wait(batch_id, ok=False, path="/deployment")
        hooked.kill()  # kill -9 of the server and its Ray, between terminal event and delivery
        assert all(r["status"] == 503 for r in refused)
        receiver.default = 200
        hooked.start()  # the same data dir and settings
        got = receiver.wait(batch_id, path="/deployment")
        assert {r["headers"]["webhook-id"] for r in got} == {refused[0]["headers"]["webhook-id"]}
        assert verify(got[-1], SECRET).data.id == batch_id
        assert timeline(hooked, batch_id, "kb")[-1]["type"] == "WebhookDelivered"
    finally:
        receiver.default = 200
