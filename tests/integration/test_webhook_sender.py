"""The webhook sender without Ray (batches/webhook_sender.py): a real file-backed log in a
temp dir, a real HTTP receiver on loopback, and a second sender started on the same
data dir as a restart. It restores its outbox from the checkpoint and folds only the log
after it, redelivers nothing the log says was acknowledged, and misses nothing that was
not (a delivery the receiver refused, and a batch that ended after the checkpoint)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batches.domain import decider
from batches.domain import events as ev
from batches.domain import messages as msg
from batches.domain import webhooks as wh
from batches.outbox_checkpoint import NAME, OutboxCheckpoint
from batches.settings import Settings
from batches.webhook_sender import Sender
from batches.webhooks import new_secret
from eventlog import EventLog, EventStore, NewEvent

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """Records (webhook-id, batch id, status) per POST; answers ``refuse``'s batches 500."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, int]] = []
        self.refuse: set[str] = set()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
                batch_id = body["data"]["id"]
                with outer.lock:
                    status = 500 if batch_id in outer.refuse else 200
                    outer.got.append((self.headers["webhook-id"], batch_id, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of(self, batch_id: str) -> list[tuple[str, int]]:
        with self.lock:
            return [(w, s) for w, b, s in self.got if b == batch_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def end_batch(store: EventLog, batch_id: str) -> None:
    """A batch created and failed at validation, as the log records one."""
    create = decider.CreateBatch(
        batch_id, "default", "file-x", "/v1/chat/completions", "24h", None, None, None, T0
    )
    events = decider.decide(None, create)
    failed = decider.RecordValidation(at=T0 + 1, errors=(msg.input_file_not_found("file-x"),))
    events += decider.decide(decider.fold(events), failed)
    store.append(ev.batch_stream(batch_id), [NewEvent(t, d) for t, d in events], 0)


def delivered(store: EventLog, batch_id: str) -> bool:
    return any(e.type == wh.WEBHOOK_DELIVERED for e in store.read(wh.webhook_stream(batch_id)))


def attempts(store: EventLog, batch_id: str) -> int:
    return sum(e.type == wh.WEBHOOK_ATTEMPTED for e in store.read(wh.webhook_stream(batch_id)))


async def rounds_until(sender: Sender, done: Callable[[], bool]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(500):  # a bound on rounds, not on time
            await sender.round(client)
            await sender.settle()
            if done():
                return
            await asyncio.sleep(0.02)  # the retry backoff is 0.01-0.05 s
    raise AssertionError("the sender did not get there")


def settings(tmp_path: Path, url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        webhook_url=url,
        webhook_retry_base_s=0.01,
        webhook_retry_max_delay_s=0.05,
        fsync=False,
    )


async def test_a_restarted_sender_resumes_from_its_checkpoint(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = settings(tmp_path, receiver.url)
    secret = new_secret()
    store = EventStore.open(config.log_dir, fsync=False)
    first = Sender(config, secret, {}, checkpoint_every_s=0.0)
    assert first.restored_at == 0  # nothing saved yet: folded from the start
    await rounds_until(first, lambda: first.outbox.enabled_after is not None)
    end_batch(store, "batch_acked")
    end_batch(store, "batch_refused")
    receiver.refuse.add("batch_refused")
    await rounds_until(
        first,
        lambda: delivered(store, "batch_acked") and attempts(store, "batch_refused") >= 1,
    )
    await rounds_until(first, lambda: first.checkpoint.saved == first.outbox.position)
    saved = first.checkpoint.saved
    first.close()  # the sender is gone (a crash loses only what the log lacks)

    end_batch(store, "batch_after")  # ends after the checkpoint
    receiver.refuse.clear()
    second = Sender(config, secret, {}, checkpoint_every_s=0.0)
    # Restored, not folded: the start reads only the log after the checkpoint.
    assert second.restored_at == saved == second.outbox.position > 0
    assert "batch_refused" in second.outbox.pending and "batch_acked" not in second.outbox.pending
    await rounds_until(
        second, lambda: delivered(store, "batch_refused") and delivered(store, "batch_after")
    )

    acked, refused, after = (
        receiver.of(b) for b in ("batch_acked", "batch_refused", "batch_after")
    )
    assert [s for _, s in acked] == [200]  # acknowledged before the restart: never again
    assert [s for _, s in refused][-1] == 200 and {s for _, s in refused[:-1]} == {500}
    assert len({w for w, _ in refused}) == 1  # the same webhook-id on every attempt
    assert [s for _, s in after] == [200]
    # The restored outbox plus the tail is what a fold of the whole log gives.
    replayed = wh.Outbox()
    for e in store.read_all():
        replayed.apply(e.stream_id, e.type, e.data, e.position, e.recorded_at)
    assert (replayed.position, replayed.enabled_after, replayed.pending) == (
        second.outbox.position,
        second.outbox.enabled_after,
        second.outbox.pending,
    )
    second.close()
    store.close()


async def test_a_checkpoint_ahead_of_the_log_or_damaged_is_ignored(tmp_path: Path) -> None:
    cp = OutboxCheckpoint(tmp_path, fsync=False)
    box = wh.Outbox(position=7, enabled_after=1)
    box.pending["b"] = wh.Delivery({"batch_id": "b", "webhook_id": "wh_1"}, version=2)
    assert await cp.save(box, force=True)
    assert cp.load(head=6) is None  # the log lost its tail: fold it instead
    restored = cp.load(head=7)
    assert restored is not None and restored.to_dict() == box.to_dict()
    path = tmp_path / "checkpoints" / f"{NAME}.snap"
    path.write_bytes(path.read_bytes()[:-3])
    assert cp.load(head=7) is None
