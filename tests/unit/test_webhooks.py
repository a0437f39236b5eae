"""Webhooks, pure parts: the outbox fold, the retry decision, and signatures that the
real openai SDK verifies."""

from __future__ import annotations

import time
from typing import Any

import openai
import orjson
import pytest

from batches.domain import webhooks as wh
from batches.webhooks import new_secret, parse_tenant_webhooks, route_for, signed_headers


def fold(events: list[tuple[str, str, dict[str, Any]]]) -> wh.Outbox:
    box = wh.Outbox()
    for position, (stream, type_, data) in enumerate(events, start=1):
        box.apply(stream, type_, data, position, recorded_at=100.0 + position)
    return box


CREATED = ("batch-b1", "BatchCreated", {"tenant": "alice"})
DONE = ("batch-b1", "BatchCompleted", {"at": 150})
ENABLED = ("webhooks", wh.WEBHOOKS_ENABLED, {"after_position": 0})


def test_a_batch_that_ends_is_queued_once_with_stable_ids() -> None:
    box = fold([ENABLED, CREATED, ("batch-b1", "BatchValidated", {}), DONE])
    [queued] = box.to_queue()
    assert queued == {
        "webhook_id": wh.webhook_ids("b1", "batch.completed")[1],
        "event_id": wh.webhook_ids("b1", "batch.completed")[0],
        "type": "batch.completed",
        "batch_id": "b1",
        "tenant": "alice",
        "created_at": 150,
    }
    assert queued["webhook_id"].startswith("wh_") and queued["event_id"].startswith("evt_")
    assert wh.webhook_ids("b1", "batch.completed") == wh.webhook_ids("b1", "batch.completed")
    assert orjson.loads(wh.webhook_body(queued)) == {
        "id": queued["event_id"],
        "object": "event",
        "created_at": 150,
        "type": "batch.completed",
        "data": {"id": "b1"},
    }


@pytest.mark.parametrize(
    ("terminal", "kind"),
    [
        ("BatchCompleted", "batch.completed"),
        ("BatchValidationFailed", "batch.failed"),
        ("BatchFailed", "batch.failed"),
        ("BatchCancelled", "batch.cancelled"),
        ("BatchExpired", "batch.expired"),
    ],
)
def test_each_terminal_event_has_its_webhook_type(terminal: str, kind: str) -> None:
    box = fold([ENABLED, CREATED, ("batch-b1", terminal, {"at": 1})])
    assert [q["type"] for q in box.to_queue()] == [kind]


def test_batches_that_ended_before_webhooks_were_enabled_get_none() -> None:
    box = fold([CREATED, DONE, ("webhooks", wh.WEBHOOKS_ENABLED, {"after_position": 2})])
    assert box.to_queue() == []
    assert box.ended == {}  # and they are not kept in memory either
    assert fold([CREATED, DONE]).to_queue() == []  # not enabled yet: nothing


def test_queued_attempted_delivered_lifecycle() -> None:
    queued = fold([ENABLED, CREATED, DONE]).to_queue()[0]
    events = [ENABLED, CREATED, DONE, ("webhooks-b1", wh.WEBHOOK_QUEUED, queued)]
    box = fold(events)
    assert box.to_queue() == []
    [delivery] = box.due(now=1e12)
    assert (delivery.attempts, delivery.version) == (0, 1)
    policy = wh.DeliveryPolicy(base_delay_s=1.0, max_delay_s=10.0, period_s=100.0)
    failed = wh.attempt_events(
        delivery, url="http://x", status_code=500, error=None, at=1000.0, policy=policy, rand=0.0
    )
    assert [t for t, _ in failed] == [wh.WEBHOOK_ATTEMPTED]
    assert failed[0][1]["next_at"] == 1001.0 and failed[0][1]["attempt"] == 1
    box = fold(events + [("webhooks-b1", t, d) for t, d in failed])
    [delivery] = box.pending.values()
    assert (delivery.attempts, delivery.version, delivery.next_at) == (1, 2, 1001.0)
    assert box.due(now=1000.5) == []
    ok = wh.attempt_events(
        delivery, url="http://x", status_code=204, error=None, at=1001.0, policy=policy, rand=0.0
    )
    assert [t for t, _ in ok] == [wh.WEBHOOK_ATTEMPTED, wh.WEBHOOK_DELIVERED]
    box = fold(events + [("webhooks-b1", t, d) for t, d in failed + ok])
    assert box.pending == {} and box.to_queue() == []


def test_backoff_grows_then_gives_up_after_the_period() -> None:
    policy = wh.DeliveryPolicy(base_delay_s=1.0, max_delay_s=8.0, period_s=20.0)
    delivery = wh.Delivery({"webhook_id": "wh_1"}, version=1)
    delays, start = [], 1000.0
    at = start
    while True:
        [*events] = wh.attempt_events(
            delivery, url="u", status_code=None, error="refused", at=at, policy=policy, rand=0.0
        )
        if events[-1][0] == wh.WEBHOOK_ABANDONED:
            break
        next_at = events[0][1]["next_at"]
        delays.append(next_at - at)
        delivery.attempts += 1
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = at
        at = next_at
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and max(delays) == 8.0
    assert 20.0 - 8.0 <= at - start <= 20.0  # the last try is within the period


def test_signature_verified_by_the_openai_sdk() -> None:
    secret = new_secret()
    body = wh.webhook_body(
        {"event_id": "evt_1", "created_at": 5, "type": "batch.completed", "batch_id": "batch_1"}
    )
    headers = signed_headers(secret, "wh_1", int(time.time()), body)
    client = openai.OpenAI(api_key="unused")
    event = client.webhooks.unwrap(body, headers, secret=secret)
    assert (event.type, event.data.id, event.id) == ("batch.completed", "batch_1", "evt_1")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body + b" ", headers, secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=new_secret())
    # a plain (non-whsec_) secret is the key's bytes, as the SDK takes it
    plain = signed_headers("plain-secret", "wh_1", int(time.time()), body)
    client.webhooks.verify_signature(body, plain, secret="plain-secret")


def test_routes() -> None:
    routes = parse_tenant_webhooks("alice=http://a/hook|whsec_YWJj, bob=http://b|s2")
    assert routes == {
        "alice": {"url": "http://a/hook", "secret": "whsec_YWJj"},
        "bob": {"url": "http://b", "secret": "s2"},
    }
    assert route_for("alice", "http://d", "sd", routes).url == "http://a/hook"  # type: ignore[union-attr]
    assert route_for("carol", "http://d", "sd", routes).url == "http://d"  # type: ignore[union-attr]
    assert route_for("carol", None, None, routes) is None
    for bad in ("alice=http://a", "=http://a|s", "alice=|s", "alice=http://a|whsec_!!"):
        with pytest.raises(ValueError):
            parse_tenant_webhooks(bad)
