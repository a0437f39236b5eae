"""`batchlog serve` with no upstream: the embedded models serve batches (issue: embedded default)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batches.demo import CHAT_MODEL, EMBED_MODEL
from batches.testing import Service
from tests.e2e.conftest import read_lines, upload, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.models]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with Service(tmp_path_factory.mktemp("embedded") / "data") as svc:
        yield svc


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def test_models_are_listed(embedded: Service) -> None:
    ids = {m.id for m in embedded.client().models.list()}
    assert {CHAT_MODEL, EMBED_MODEL} <= ids


def test_chat_and_embedding_batches_on_the_embedded_models(embedded: Service) -> None:
    client = embedded.client()
    chat = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 6,
                "temperature": 0,
                "seed": 1,
            },
        }
        for i in range(3)
    ]
    embed = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": f"text {i}"},
        }
        for i in range(3)
    ]
    chat_batch = client.batches.create(
        input_file_id=upload(client, jsonl(chat)).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    embed_batch = client.batches.create(
        input_file_id=upload(client, jsonl(embed)).id,
        endpoint="/v1/embeddings",
        completion_window="24h",
    )
    chat_done = wait_for(client, chat_batch.id, {"completed", "failed"}, timeout=300)
    embed_done = wait_for(client, embed_batch.id, {"completed", "failed"}, timeout=300)
    assert chat_done.request_counts.completed == 3, chat_done
    assert embed_done.request_counts.completed == 3, embed_done
    replies = [line["response"]["body"] for line in read_lines(client, chat_done.output_file_id)]
    assert all(
        r["object"] == "chat.completion" and r["usage"]["completion_tokens"] > 0 for r in replies
    )
    # Same seed, temperature 0, same prompt: not promised to be the same text here (a
    # request decoded alone and one decoded beside others take other kernel paths:
    # docs/embedded-engine.md, "Determinism"; tests/models/test_engine.py tests what is).
    assert all(r["choices"][0]["message"]["content"] for r in replies)
    vectors = [
        line["response"]["body"]["data"][0]["embedding"]
        for line in read_lines(client, embed_done.output_file_id)
    ]
    assert all(len(v) == 384 for v in vectors)
    assert chat_done.usage.total_tokens > 0 and embed_done.usage.input_tokens > 0


def test_unknown_model_fails_validation(embedded: Service) -> None:
    client = embedded.client()
    rows = [
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-9", "messages": []},
        }
    ]
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(rows)).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed"
    assert [e.code for e in failed.errors.data] == ["model_not_found"]


def test_a_broken_engine_makes_the_demo_say_why_and_fail(tmp_path: Path) -> None:
    """docs/embedded-engine.md: a chat engine that cannot load is said once, in one
    sentence, and `batchlog demo` exits non-zero instead of printing failed lines."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file\n" * 1000)
    env = {**os.environ, "BATCHLOG_CHAT_MODEL_PATH": str(bad), "COLUMNS": "400"}
    proc = subprocess.run(
        [sys.executable, "-m", "batchlog.cli", "demo", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    assert f"The embedded model {CHAT_MODEL} cannot run here" in out
    assert "self-test failed" in out  # the reason, from the engine's start-up check
    assert "Created" not in out  # no batch was attempted
