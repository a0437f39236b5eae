"""The chat engine decodes in batches, and fails loudly, once.

Real llama.cpp on the bundled SmolLM2, real Ray actors, real processes that die.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.local import CHAT_ENDPOINT, CHAT_MODEL_ID, LocalModelPool, LocalModelServer
from tests.models.test_local_models import chat_item, chunk, run

pytestmark = [pytest.mark.models, pytest.mark.timeout(300)]


def _text(o: dict[str, Any]) -> str:
    assert o["status_code"] == 200, (o["error"], o["body"])
    return str(o["body"]["choices"][0]["message"]["content"])


def test_requests_of_a_chunk_are_decoded_together(chat_replica: Any) -> None:
    before = ray.get(chat_replica.health.remote())
    prompts = ["Count to ten.", "Name some animals.", "Describe the sky.", "List four fruits."]
    items = [
        chat_item(i, prompts[i % 4], max_tokens=4 + 3 * i, temperature=0 if i % 2 else 0.8, seed=i)
        for i in range(8)
    ]
    items.append(chat_item(8, "Say the word apple, then keep talking.", max_tokens=40, stop=["."]))
    outs = chunk(chat_replica, CHAT_ENDPOINT, items)
    after = ray.get(chat_replica.health.remote())
    assert after["max_running"] >= 8  # more than one sequence in a decode step
    # fewer decode steps than tokens: many sequences advanced per step
    tokens = sum(o["body"]["usage"]["completion_tokens"] for o in outs)
    assert after["decode_steps"] - before["decode_steps"] < tokens
    for i, (o, it) in enumerate(zip(outs, items, strict=True)):
        assert o["custom_id"] == it["custom_id"]
        _text(o)
        usage = o["body"]["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        finish = o["body"]["choices"][0]["finish_reason"]
        if i < 8:  # each honours its own max_tokens
            assert usage["completion_tokens"] <= it["body"]["max_tokens"]
            if finish == "length":
                assert usage["completion_tokens"] == it["body"]["max_tokens"]
    stopped = outs[8]["body"]["choices"][0]
    assert "." not in stopped["message"]["content"]


def test_a_cancelled_chunk_leaves_the_batch(pool: LocalModelPool) -> None:
    (name,) = pool.replica_names(CHAT_MODEL_ID)[:1]
    replica = ray.get_actor(name)
    long_chunk = [
        chat_item(i, "Tell a long story.", max_tokens=400, temperature=0.7) for i in range(4)
    ]

    async def cancel_mid_decode() -> dict[str, Any]:
        ref = replica.run_chunk.remote(CHAT_ENDPOINT, long_chunk, "b")
        for _ in range(100):  # until its sequences are decoding
            if (await replica.health.remote())["running"] == len(long_chunk):
                break
            await asyncio.sleep(0.05)
        ray.cancel(ref)
        with pytest.raises((ray.exceptions.TaskCancelledError, asyncio.CancelledError)):
            await ref
        for _ in range(100):
            h: dict[str, Any] = await replica.health.remote()
            if h["running"] == 0:
                return h
            await asyncio.sleep(0.05)
        raise AssertionError(f"the cancelled sequences are still decoding: {h}")

    h = run(cancel_mid_decode())
    steps = h["decode_steps"]
    # nothing left to decode: the step count stays put, and the replica still serves
    (o,) = chunk(replica, CHAT_ENDPOINT, [chat_item(0, max_tokens=3, temperature=0)])
    _text(o)
    assert ray.get(replica.health.remote())["decode_steps"] - steps <= 4


def test_greedy_output_reproduces_in_the_same_company(chat_replica: Any) -> None:
    """What docs/embedded-engine.md promises: on an idle replica, a greedy request decoded
    alone gives the same text again, and so does a whole chunk decoded again. (Identical
    requests decoded *together* may differ from each other: they sit in other KV cells.)"""
    item = chat_item(0, "What is the capital of France?", max_tokens=12, temperature=0)
    (alone,) = chunk(chat_replica, CHAT_ENDPOINT, [item])
    (again,) = chunk(chat_replica, CHAT_ENDPOINT, [item])
    assert _text(alone) == _text(again)
    company = [
        chat_item(i, p, max_tokens=12, temperature=0 if i % 2 else 0.8, seed=i)
        for i, p in enumerate(["What is 2+2?", "Name a color.", "Say hi.", "Count to 3."])
    ]
    first = [_text(o) for o in chunk(chat_replica, CHAT_ENDPOINT, company)]
    chunk(chat_replica, CHAT_ENDPOINT, [chat_item(9, "Something else.", max_tokens=5)])
    second = [_text(o) for o in chunk(chat_replica, CHAT_ENDPOINT, company)]
    assert first == second


# --------------------------------------------------------------------------- fail loudly, once


class _DiesAtStart(LocalModelServer):
    """A replica whose process kills itself while starting, counting its starts."""

    starts = ""  # set by the test; the class travels to the workers by value

    def __init__(self, model_id: str, threads: int = 1, **kwargs: Any) -> None:
        with open(self.starts, "a") as f:
            f.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_replica_that_dies_at_start_up_fails_its_model_after_bounded_restarts(
    ray_namespace: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    # Ray workers cannot import this test module by name: ship the class by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    _DiesAtStart.starts = str(starts)
    dying = ray.remote(concurrency_groups={"probe": 1})(_DiesAtStart)
    pool = LocalModelPool(
        ray_namespace,
        models=[CHAT_MODEL_ID],
        chat_replicas=1,
        name_prefix=f"test-dying-{uuid.uuid4().hex[:6]}",
        detached=False,
        max_restarts=2,
        restart_backoff_s=0.1,
        replica_cls=dying,
    )
    try:
        status = run(pool.wait_ready(timeout_s=120))[CHAT_MODEL_ID]
        assert status["status"] == "failed"
        assert status["deaths"] == 3 and status["restarts"] == 2
        assert "died 3 times" in status["reason"] and "not restarted again" in status["reason"]
        items = [chat_item(i, max_tokens=2) for i in range(3)]
        outs = run(asyncio.wait_for(pool.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, items, "b"), 60))
        for o in outs:
            assert o["status_code"] is None
            assert o["error"]["code"] == "model_failed"
            assert "died 3 times" in o["error"]["message"]
        # bounded: 1 start + 2 restarts, and nothing more however long we wait or ask
        run(asyncio.sleep(2))
        run(pool.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, items[:1], "c"))
        assert len(starts.read_text().split()) == 3
    finally:
        pool.shutdown()
