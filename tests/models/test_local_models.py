"""The embedded local models through their replica actors and the pool (real models)."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import struct
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import ray

from actors.local import (
    CHAT_ENDPOINT,
    CHAT_MODEL_ID,
    COMPLETIONS_ENDPOINT,
    EMBED_MODEL_ID,
    EMBEDDINGS_ENDPOINT,
    LocalModelPool,
    ModelReplica,
    default_embedding_model_dir,
    default_gguf_path,
)

pytestmark = [pytest.mark.models, pytest.mark.timeout(180)]

REQUEST_ID = re.compile(r"^batch_req_[0-9a-f]{24}$")
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def chat_item(i: int, content: str = "Say hello.", **params: Any) -> dict[str, Any]:
    body = {"model": CHAT_MODEL_ID, "messages": [{"role": "user", "content": content}]}
    body.update(params)
    return {"line": i + 1, "custom_id": f"req-{i}", "body": body}


def chunk(replica: Any, endpoint: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return ray.get(replica.run_chunk.remote(endpoint, items, "batch_test"), timeout=120)


def assert_outcome_frame(o: dict[str, Any], item: dict[str, Any]) -> None:
    assert o["line"] == item["line"]
    assert o["custom_id"] == item["custom_id"]
    assert REQUEST_ID.match(o["request_id"])
    assert o["attempts"] == 1
    assert o["latency_ms"] >= 0
    assert o["started_at"] <= o["finished_at"]


def assert_error_body(body: dict[str, Any]) -> None:
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- model files


def test_bundled_model_files_are_found() -> None:
    gguf = default_gguf_path()
    assert gguf.is_file() and gguf.suffix == ".gguf"
    assert gguf.stat().st_size > 50_000_000
    with gguf.open("rb") as f:
        assert f.read(4) == b"GGUF"
    st = default_embedding_model_dir()
    assert (st / "model.safetensors").is_file()
    assert (st / "modules.json").is_file()


# --------------------------------------------------------------------------- chat


def test_chat_completion_shape_and_usage(chat_replica: Any) -> None:
    items = [
        chat_item(0, max_tokens=8, temperature=0),
        chat_item(1, "Name a color.", max_completion_tokens=3, max_tokens=50, temperature=0),
    ]
    outs = chunk(chat_replica, CHAT_ENDPOINT, items)
    assert len(outs) == 2
    for o, it in zip(outs, items, strict=True):
        assert_outcome_frame(o, it)
        assert o["status_code"] == 200, o["error"]
        assert o["error"] is None
        b = o["body"]
        assert b["object"] == "chat.completion"
        assert b["id"].startswith("chatcmpl-")
        assert b["model"] == CHAT_MODEL_ID
        assert isinstance(b["created"], int)
        (choice,) = b["choices"]
        assert choice["index"] == 0
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        u = b["usage"]
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert outs[0]["body"]["usage"]["completion_tokens"] <= 8
    # max_completion_tokens wins over max_tokens
    assert outs[1]["body"]["usage"]["completion_tokens"] <= 3


def test_seed_and_temperature_zero_are_deterministic(chat_replica: Any) -> None:
    greedy = chat_item(0, "Write one sentence about the sea.", max_tokens=16, temperature=0, seed=7)
    sampled = chat_item(
        1, "Write one sentence about a cat.", max_tokens=16, temperature=0.9, seed=42
    )
    other = chat_item(2, "Count to five.", max_tokens=6, temperature=1.0)
    first = chunk(chat_replica, CHAT_ENDPOINT, [greedy, sampled])
    # something else in between, so the replica's state has moved on
    chunk(chat_replica, CHAT_ENDPOINT, [other])
    # the same company (decoded together again): docs/embedded-engine.md, "Determinism"
    second = chunk(chat_replica, CHAT_ENDPOINT, [greedy, sampled])

    def text(o: dict[str, Any]) -> str:
        assert o["status_code"] == 200, o["error"]
        return str(o["body"]["choices"][0]["message"]["content"])

    assert text(first[0]) == text(second[0])
    assert text(first[0])
    assert text(first[1]) == text(second[1])


def test_stop_sequence_is_honoured(chat_replica: Any) -> None:
    prompt = "List three fruits, separated by commas."
    (free,) = chunk(
        chat_replica, CHAT_ENDPOINT, [chat_item(0, prompt, max_tokens=24, temperature=0)]
    )
    text = free["body"]["choices"][0]["message"]["content"]
    words = text.split()
    assert len(words) >= 3, text
    stop = words[2]  # the text before the third word is what must come back
    (cut,) = chunk(
        chat_replica,
        CHAT_ENDPOINT,
        [chat_item(0, prompt, max_tokens=24, temperature=0, stop=[stop, "\u2603"])],
    )
    assert cut["status_code"] == 200
    choice = cut["body"]["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert stop not in choice["message"]["content"]
    assert choice["message"]["content"] == text[: text.index(stop)]
    assert cut["body"]["usage"]["completion_tokens"] < free["body"]["usage"]["completion_tokens"]


def test_completions(chat_replica: Any) -> None:
    items = [
        {
            "line": 1,
            "custom_id": "c0",
            "body": {
                "model": CHAT_MODEL_ID,
                "prompt": "The capital of France is",
                "max_tokens": 5,
                "temperature": 0,
            },
        },
        {
            "line": 2,
            "custom_id": "c1",
            "body": {
                "model": CHAT_MODEL_ID,
                "prompt": ["One, two,", "Red, green,"],
                "max_tokens": 4,
            },
        },
        {"line": 3, "custom_id": "c2", "body": {"model": CHAT_MODEL_ID, "prompt": "Hello"}},
    ]
    outs = chunk(chat_replica, COMPLETIONS_ENDPOINT, items)
    for o, it in zip(outs, items, strict=True):
        assert_outcome_frame(o, it)
        assert o["status_code"] == 200, o["error"]
        b = o["body"]
        assert b["object"] == "text_completion"
        assert b["id"].startswith("cmpl-")
        assert b["model"] == CHAT_MODEL_ID
        u = b["usage"]
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        for i, c in enumerate(b["choices"]):
            assert c["index"] == i
            assert isinstance(c["text"], str)
            assert c["finish_reason"] in ("stop", "length")
    assert outs[0]["body"]["usage"]["completion_tokens"] <= 5
    assert len(outs[1]["body"]["choices"]) == 2
    assert outs[2]["body"]["usage"]["completion_tokens"] <= 16  # the legacy default


def test_bad_bodies_get_400_outcomes(chat_replica: Any) -> None:
    bad: list[Any] = [
        {"line": 1, "custom_id": "no-messages", "body": {"model": CHAT_MODEL_ID}},
        {"line": 2, "custom_id": "messages-not-list", "body": {"messages": "hi"}},
        {"line": 3, "custom_id": "empty-messages", "body": {"messages": []}},
        {
            "line": 4,
            "custom_id": "bad-role",
            "body": {"messages": [{"role": "robot", "content": "x"}]},
        },
        {
            "line": 5,
            "custom_id": "bad-temp",
            "body": {**chat_item(0)["body"], "temperature": "hot"},
        },
        {"line": 6, "custom_id": "zero-max", "body": {**chat_item(0)["body"], "max_tokens": 0}},
        {"line": 7, "custom_id": "bad-stop", "body": {**chat_item(0)["body"], "stop": [1, 2]}},
        {"line": 8, "custom_id": "stream", "body": {**chat_item(0)["body"], "stream": True}},
        {"line": 9, "custom_id": "body-not-object", "body": ["messages"]},
        {
            "line": 10,
            "custom_id": "image",
            "body": {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
        },
    ]
    good = chat_item(
        10, max_tokens=2, temperature=0, logit_bias={"1": 5}, n=1, user="u"
    )  # ignored params
    outs = chunk(chat_replica, CHAT_ENDPOINT, [*bad, good])
    assert len(outs) == len(bad) + 1
    for o, it in zip(outs[:-1], bad, strict=True):
        assert_outcome_frame(o, it)
        assert o["status_code"] == 400, o
        assert o["error"] is None
        assert_error_body(o["body"])
    assert outs[0]["body"]["error"]["param"] == "messages"
    assert outs[4]["body"]["error"]["param"] == "temperature"
    # worded in batches/domain/request_errors.py (every case: tests/unit/test_request_errors.py)
    assert outs[0]["body"]["error"]["message"] == "Missing required parameter: 'messages'."
    assert outs[7]["body"]["error"] == {
        "message": "Chat Completions: Streaming is not supported in the Batch API.",
        "type": "invalid_request_error",
        "param": "stream",
        "code": "streaming_unsupported",
    }
    assert outs[8]["body"]["error"]["message"] == (
        "Invalid type for 'body': expected an object, but got an array instead."
    )
    assert outs[-1]["status_code"] == 200, outs[-1]


def test_context_overflow_is_a_400(chat_replica: Any) -> None:
    long = "word " * 3000
    (o,) = chunk(chat_replica, CHAT_ENDPOINT, [chat_item(0, long, max_tokens=2)])
    assert o["status_code"] == 400
    error = o["body"]["error"]
    assert error["code"] == "context_length_exceeded"
    tokens = re.fullmatch(
        r"This model's maximum context length is \d+ tokens\. However, your prompt resulted "
        r"in (\d+) tokens\. Please reduce the length of the prompt\.",
        error["message"],
    )
    assert tokens and int(tokens[1]) > 3000, error


def test_token_ids_beyond_the_vocabulary_are_a_400(chat_replica: Any) -> None:
    item = {"line": 1, "custom_id": "t", "body": {"prompt": [1, 10**9], "max_tokens": 1}}
    (o,) = chunk(chat_replica, COMPLETIONS_ENDPOINT, [item])
    assert o["status_code"] == 400
    assert re.fullmatch(
        r"Invalid 'prompt': token ids must be below \d+, the model's vocabulary size\.",
        o["body"]["error"]["message"],
    ), o


# --------------------------------------------------------------------------- embeddings


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings(embed_replica: Any) -> None:
    items = [
        {
            "line": 1,
            "custom_id": "e0",
            "body": {"model": EMBED_MODEL_ID, "input": "A cat sat on the mat."},
        },
        {
            "line": 2,
            "custom_id": "e1",
            "body": {
                "model": EMBED_MODEL_ID,
                "input": [
                    "A kitten rested on the rug.",
                    "Stock markets fell sharply today.",
                    "A cat sat on the mat.",
                ],
            },
        },
        {
            "line": 3,
            "custom_id": "e2",
            "body": {
                "model": EMBED_MODEL_ID,
                "input": "A cat sat on the mat.",
                "encoding_format": "base64",
            },
        },
        {"line": 4, "custom_id": "bad", "body": {"model": EMBED_MODEL_ID, "input": [1, 2, 3]}},
        {"line": 5, "custom_id": "missing", "body": {"model": EMBED_MODEL_ID}},
    ]
    outs = chunk(embed_replica, EMBEDDINGS_ENDPOINT, items)
    for o, it in zip(outs, items, strict=True):
        assert_outcome_frame(o, it)
    for o in outs[:3]:
        assert o["status_code"] == 200, o["error"]
        b = o["body"]
        assert b["object"] == "list"
        assert b["model"] == EMBED_MODEL_ID
        assert b["usage"]["prompt_tokens"] > 0
        assert b["usage"]["total_tokens"] == b["usage"]["prompt_tokens"]
        for i, d in enumerate(b["data"]):
            assert d["object"] == "embedding" and d["index"] == i
    single = outs[0]["body"]["data"][0]["embedding"]
    assert len(single) == 384 and all(isinstance(x, float) for x in single)
    assert math.isclose(math.sqrt(_cos(single, single)), 1.0, rel_tol=1e-3)
    kitten, stocks, same = (d["embedding"] for d in outs[1]["body"]["data"])
    assert len(outs[1]["body"]["data"]) == 3
    assert _cos(single, kitten) > _cos(single, stocks) + 0.2
    assert _cos(single, same) > 0.999
    assert outs[1]["body"]["usage"]["prompt_tokens"] > outs[0]["body"]["usage"]["prompt_tokens"]
    raw = base64.b64decode(outs[2]["body"]["data"][0]["embedding"])
    decoded = struct.unpack("<384f", raw)
    assert max(abs(x - y) for x, y in zip(decoded, single, strict=True)) < 1e-5
    for o in outs[3:]:
        assert o["status_code"] == 400
        assert o["body"]["error"]["param"] == "input"


# --------------------------------------------------------------------------- load failures


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_model_that_fails_to_load_fails_every_item_at_once(
    ray_namespace: str, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "model.gguf"
    if kind == "corrupt":
        path.write_bytes(b"this is not a gguf file\n" * 1000)
    replica = ModelReplica.options(num_cpus=0).remote(CHAT_MODEL_ID, 1, model_path=str(path))
    try:
        items = [chat_item(i, max_tokens=4) for i in range(3)]
        outs = ray.get(replica.run_chunk.remote(CHAT_ENDPOINT, items, "b"), timeout=60)
        assert [o["custom_id"] for o in outs] == ["req-0", "req-1", "req-2"]
        for o in outs:
            assert o["status_code"] is None
            assert o["body"] is None
            assert o["error"]["code"] == "model_load_failed"
            assert o["error"]["message"].startswith(
                f"The model {CHAT_MODEL_ID} could not be loaded: "
            ), o
        again = ray.get(replica.run_chunk.remote(CHAT_ENDPOINT, items[:1], "b"), timeout=30)
        assert again[0]["error"]["code"] == "model_load_failed"
        health = ray.get(replica.health.remote(), timeout=30)
        assert health["loaded"] is False and health["error"]
    finally:
        ray.kill(replica)


def test_pool_with_a_broken_model_does_not_hang(ray_namespace: str, tmp_path: Path) -> None:
    broken = LocalModelPool(
        ray_namespace,
        models=[EMBED_MODEL_ID],
        model_paths={EMBED_MODEL_ID: tmp_path / "nowhere"},
        name_prefix=f"test-broken-{uuid.uuid4().hex[:6]}",
        detached=False,
    )
    try:
        items = [{"line": 1, "custom_id": "x", "body": {"input": "hello"}}]
        outs = run(
            asyncio.wait_for(broken.run_chunk(EMBEDDINGS_ENDPOINT, EMBED_MODEL_ID, items, "b"), 60)
        )
        assert outs[0]["status_code"] is None
        # the replica could not load: the supervisor fails the model at once (a restart
        # would only repeat it), and says why
        assert outs[0]["error"]["code"] == "model_failed"
        assert outs[0]["error"]["message"].startswith(f"The model {EMBED_MODEL_ID} failed: ")
        assert "FileNotFoundError" in outs[0]["error"]["message"]
        health = run(broken.health())
        assert health[EMBED_MODEL_ID][0]["loaded"] is False
        status = run(broken.status())[EMBED_MODEL_ID]
        assert status["status"] == "failed" and status["restarts"] == 0
    finally:
        broken.shutdown()


# --------------------------------------------------------------------------- the pool


def test_pool_routing_and_refusals(pool: LocalModelPool) -> None:
    assert pool.models() == [CHAT_MODEL_ID, EMBED_MODEL_ID]
    assert run(pool.list_models()) == pool.models()
    item = {"line": 1, "custom_id": "a", "body": {"input": "hi"}}
    (wrong,) = run(pool.run_chunk(EMBEDDINGS_ENDPOINT, CHAT_MODEL_ID, [item], "b"))
    assert wrong["status_code"] == 400
    assert wrong["body"]["error"]["message"] == (
        f"The model '{CHAT_MODEL_ID}' does not serve {EMBEDDINGS_ENDPOINT}."
    )
    (unknown,) = run(pool.run_chunk(CHAT_ENDPOINT, "gpt-4o", [chat_item(0)], "b"))
    assert unknown["status_code"] == 404
    assert unknown["body"]["error"] == {
        "message": "The model 'gpt-4o' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert run(pool.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, [], "b")) == []
    (emb,) = run(pool.run_chunk(EMBEDDINGS_ENDPOINT, EMBED_MODEL_ID, [item], "b"))
    assert emb["status_code"] == 200
    assert len(emb["body"]["data"][0]["embedding"]) == 384


def test_pool_spreads_chunks_over_two_replicas(pool: LocalModelPool) -> None:
    def served() -> list[int]:
        return [h["chunks_served"] for h in run(pool.health([CHAT_MODEL_ID]))[CHAT_MODEL_ID]]

    before = served()

    async def four_chunks() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(
            *(
                pool.run_chunk(
                    CHAT_ENDPOINT,
                    CHAT_MODEL_ID,
                    [chat_item(2 * c, max_tokens=4), chat_item(2 * c + 1, max_tokens=4)],
                    f"batch_{c}",
                )
                for c in range(4)
            )
        )

    results = run(four_chunks())
    assert all(o["status_code"] == 200 for chunk_ in results for o in chunk_)
    after = served()
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2]
    pids = {h["pid"] for h in run(pool.health([CHAT_MODEL_ID]))[CHAT_MODEL_ID]}
    assert len(pids) == 2


def test_pools_share_named_replicas(pool: LocalModelPool, ray_namespace: str) -> None:
    other = LocalModelPool(
        ray_namespace, chat_replicas=2, name_prefix=pool.name_prefix, detached=False
    )
    mine = run(pool.health())
    theirs = run(other.health())
    for model in pool.models():
        assert [h["pid"] for h in theirs[model]] == [h["pid"] for h in mine[model]]


def test_pool_survives_a_replica_dying(ray_namespace: str) -> None:
    prefix = f"test-solo-{uuid.uuid4().hex[:6]}"
    solo = LocalModelPool(
        ray_namespace, models=[CHAT_MODEL_ID], chat_replicas=1, name_prefix=prefix, detached=False
    )
    # greedy: runs the full 120 tokens (a few seconds)
    long_chunk = [chat_item(0, "Tell a long story.", max_tokens=120, temperature=0)]

    def pid() -> int:
        (h,) = run(solo.health())[CHAT_MODEL_ID]
        assert h["loaded"]
        return int(h["pid"])

    async def kill_mid_chunk(pool: LocalModelPool) -> list[dict[str, Any]]:
        task = asyncio.create_task(pool.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, long_chunk, "b"))
        await asyncio.sleep(0.5)  # the chunk runs for a few seconds
        (replica,) = await solo.handles(CHAT_MODEL_ID)
        ray.kill(replica)
        return await asyncio.wait_for(task, 120)

    try:
        pid0 = pid()
        # killed mid-chunk: the supervisor starts it again, the chunk is sent again
        (o,) = run(kill_mid_chunk(solo))
        assert o["status_code"] == 200, o["error"]
        assert o["attempts"] == 2
        pid1 = pid()
        assert pid1 != pid0
        status = run(solo.status())[CHAT_MODEL_ID]
        assert status["status"] == "ready" and status["restarts"] == 1

        # a pool that sends a chunk once only: the same death fails every item
        once = LocalModelPool(
            ray_namespace,
            models=[CHAT_MODEL_ID],
            chat_replicas=1,
            name_prefix=prefix,
            detached=False,
            chunk_attempts=1,
        )
        (o,) = run(kill_mid_chunk(once))
        assert o["status_code"] is None
        assert o["error"]["code"] == "replica_failed"
        assert o["error"]["message"].startswith(
            f"The model {CHAT_MODEL_ID} could not run this request in 1 attempt: the last "
            "died: replica 0: "
        ), o
        assert o["attempts"] == 1
        (o,) = run(solo.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, [chat_item(2, max_tokens=2)], "c"))
        assert o["status_code"] == 200, o["error"]
        assert pid() not in (pid0, pid1)
    finally:
        solo.shutdown()


def test_sampling_parameters_are_parsed_like_openai() -> None:
    from actors.local.requests import RequestError, sampling_params

    p = sampling_params({"max_tokens": 50, "max_completion_tokens": 5, "stop": "x"}, None)
    assert p["max_tokens"] == 5 and p["stop"] == ["x"]
    assert p["temperature"] == 1.0 and p["top_p"] == 1.0 and p["seed"] is None
    assert sampling_params({}, 16)["max_tokens"] == 16
    # llama.cpp reads 0xFFFFFFFF as "random": every seed maps to a fixed uint32 below it
    assert sampling_params({"seed": -1}, None)["seed"] == 0xFFFFFFFE
    assert sampling_params({"seed": 2**40 + 3}, None)["seed"] < 0xFFFFFFFF
    for bad in (
        {"max_tokens": True},
        {"temperature": 3},
        {"top_p": "1"},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"seed": 1.5},
    ):
        with pytest.raises(RequestError):
            sampling_params(bad, None)
