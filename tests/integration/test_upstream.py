"""The HTTP upstream executor against a real fake upstream (a subprocess); no Ray."""

from __future__ import annotations

import asyncio
import http.server
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from actors.upstream import HttpUpstream, UpstreamConfig, UpstreamExecutor, UpstreamRouter
from batches.domain.events import outcome_event
from batches.domain.retry import RetryPolicy, backoff_delay
from batches.testing import FakeUpstream

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=0.5)
BATCH = "batch_test"
T = TypeVar("T")

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "say hello to the tests"}]}


def items(n: int, body: dict[str, Any] = CHAT, prefix: str = "req") -> list[dict[str, Any]]:
    return [{"line": i + 1, "custom_id": f"{prefix}-{i}", "body": body} for i in range(n)]


def with_upstream(
    url: str,
    fn: Callable[[HttpUpstream], Awaitable[T]],
    *,
    policy: RetryPolicy = FAST,
    timeout_s: float = 10.0,
    max_concurrency: int = 8,
    api_key: str | None = None,
) -> T:
    async def main() -> T:
        up = HttpUpstream(
            UpstreamConfig(
                "fake", url, api_key, timeout_s=timeout_s, max_concurrency=max_concurrency
            ),
            policy,
        )
        try:
            return await fn(up)
        finally:
            await up.aclose()

    return asyncio.run(main())


def run_chunk(url: str, endpoint: str, its: list[dict[str, Any]], **kw: Any) -> list[dict]:
    return with_upstream(url, lambda up: up.run_chunk(endpoint, its, BATCH), **kw)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def log_for(fake: FakeUpstream, custom_id: str) -> list[dict]:
    return [e for e in fake.requests() if e["key"] == f"{BATCH}:{custom_id}"]


# --- success -----------------------------------------------------------------------------

ENDPOINTS = [
    ("/v1/chat/completions", CHAT, "chat.completion", ("prompt_tokens", "completion_tokens")),
    (
        "/v1/completions",
        {"model": "fake-chat", "prompt": "once upon a time", "max_tokens": 3},
        "text_completion",
        ("prompt_tokens", "completion_tokens"),
    ),
    ("/v1/embeddings", {"model": "fake-embed", "input": ["a b", "c"]}, "list", ("prompt_tokens",)),
    (
        "/v1/responses",
        {"model": "fake-chat", "input": "hello there"},
        "response",
        ("input_tokens", "output_tokens"),
    ),
    ("/v1/moderations", {"input": "be nice"}, None, ()),
]


@pytest.mark.parametrize(("endpoint", "body", "obj", "usage_keys"), ENDPOINTS)
def test_success_per_endpoint(
    fake_upstream: FakeUpstream, endpoint: str, body: dict, obj: str | None, usage_keys: tuple
) -> None:
    [out] = run_chunk(fake_upstream.url, endpoint, items(1, body))
    assert out["status_code"] == 200, out
    assert out["error"] is None
    assert out["attempts"] == 1
    assert out["line"] == 1 and out["custom_id"] == "req-0"
    assert re.fullmatch(r"batch_req_[0-9a-f]{24}", out["request_id"])
    assert out["started_at"] <= out["finished_at"] and out["latency_ms"] >= 0
    if obj is not None:
        assert out["body"]["object"] == obj
    for k in usage_keys:
        assert out["body"]["usage"][k] > 0
    if endpoint == "/v1/embeddings":
        assert [len(d["embedding"]) for d in out["body"]["data"]] == [8, 8]
    if endpoint == "/v1/moderations":
        assert len(out["body"]["results"]) == 1
    [entry] = fake_upstream.requests()
    assert entry["path"] == endpoint and entry["key"] == f"{BATCH}:req-0" and entry["status"] == 200


def test_chunk_keeps_order_and_ids(fake_upstream: FakeUpstream) -> None:
    outs = run_chunk(fake_upstream.url, "/v1/chat/completions", items(20))
    assert [o["custom_id"] for o in outs] == [f"req-{i}" for i in range(20)]
    assert [o["line"] for o in outs] == list(range(1, 21))
    assert len({o["request_id"] for o in outs}) == 20
    keys = sorted(e["key"] for e in fake_upstream.requests())
    assert keys == sorted(f"{BATCH}:req-{i}" for i in range(20))


def test_max_tokens_and_usage_from_words(fake_upstream: FakeUpstream) -> None:
    body = {**CHAT, "max_tokens": 2}
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1, body))
    choice = out["body"]["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"].split()) == 2
    usage = out["body"]["usage"]
    assert usage["completion_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + 2


# --- retries -------------------------------------------------------------------------------


def test_429_with_retry_after_then_success(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(fail_first_n=2, fail_status=429, retry_after=0.02)
    outs = run_chunk(fake_upstream.url, "/v1/chat/completions", items(3))
    assert [(o["status_code"], o["attempts"]) for o in outs] == [(200, 3)] * 3
    log = log_for(fake_upstream, "req-1")
    assert [e["status"] for e in log] == [429, 429, 200]


def test_backoff_honours_retry_after() -> None:
    assert backoff_delay(FAST, 1, "0.04", 0.0) >= 0.04
    assert backoff_delay(FAST, 1, None, 0.0) == pytest.approx(0.01)
    assert backoff_delay(FAST, 10, None, 0.0) == FAST.max_delay
    assert backoff_delay(FAST, 1, "3600", 0.0) == FAST.max_delay  # capped


def test_500s_then_success(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(fail_first_n=3)
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1))
    assert out["status_code"] == 200 and out["attempts"] == 4
    assert [e["status"] for e in log_for(fake_upstream, "req-0")] == [500, 500, 500, 200]


def test_retries_used_up_keeps_http_failure(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(fail_first_n=10, fail_status=503)
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1))
    assert out["status_code"] == 503
    assert out["attempts"] == FAST.max_attempts
    assert out["error"] is None
    assert out["body"]["error"]["code"] == "fake_503"
    assert len(log_for(fake_upstream, "req-0")) == FAST.max_attempts


def test_non_retryable_400_recorded_at_once(fake_upstream: FakeUpstream) -> None:
    bad = {"model": "fake-chat"}  # no messages
    unknown = {**CHAT, "model": "no-such-model"}
    outs = run_chunk(
        fake_upstream.url,
        "/v1/chat/completions",
        [
            {"line": 1, "custom_id": "bad", "body": bad},
            {"line": 2, "custom_id": "unknown", "body": unknown},
        ],
    )
    assert [(o["status_code"], o["attempts"]) for o in outs] == [(400, 1), (404, 1)]
    assert outs[0]["body"]["error"]["param"] == "messages"
    assert outs[1]["body"]["error"]["code"] == "model_not_found"
    fake_upstream.reset()
    fake_upstream.configure(fail_first_n=3, fail_status=400)
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1))
    assert (out["status_code"], out["attempts"]) == (400, 1)
    assert len(fake_upstream.requests()) == 1


def test_timeouts_retried_then_upstream_timeout(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(timeout_rate=1.0)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02, jitter=0.5)
    [out] = run_chunk(
        fake_upstream.url, "/v1/chat/completions", items(1), policy=policy, timeout_s=0.2
    )
    assert out["status_code"] is None and out["body"] is None
    assert out["error"]["code"] == "upstream_timeout"
    message = out["error"]["message"]
    assert message.startswith(
        f"The upstream did not answer in time ({fake_upstream.url}/chat/completions): "
    ), message
    assert "TimeoutError" in message and message.endswith(" (after 2 attempts)"), message
    assert out["attempts"] == 2
    assert [e["fault"] for e in log_for(fake_upstream, "req-0")] == ["timeout", "timeout"]


def test_timeout_then_success(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(fail_first_n=1, fail_status="timeout")
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1), timeout_s=0.2)
    assert (out["status_code"], out["attempts"]) == (200, 2)


def test_dropped_connections_retried(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(fail_first_n=2, fail_status="drop")
    outs = run_chunk(fake_upstream.url, "/v1/chat/completions", items(4))
    assert [(o["status_code"], o["attempts"]) for o in outs] == [(200, 3)] * 4
    log = log_for(fake_upstream, "req-2")
    assert [(e["fault"], e["status"]) for e in log] == [("drop", None), ("drop", None), (None, 200)]


def test_dropped_connections_exhausted(fake_upstream: FakeUpstream) -> None:
    fake_upstream.configure(drop_rate=1.0)
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1))
    assert out["status_code"] is None
    assert out["error"]["code"] == "upstream_error"
    message = out["error"]["message"]
    assert message.startswith(
        f"The connection to the upstream failed ({fake_upstream.url}/chat/completions): "
    ), message
    assert message.endswith(f" (after {FAST.max_attempts} attempts)"), message
    assert out["attempts"] == FAST.max_attempts
    assert len(log_for(fake_upstream, "req-0")) == FAST.max_attempts


def test_connection_refused_is_unreachable() -> None:
    url = closed_port_url()
    [out] = run_chunk(url, "/v1/chat/completions", items(1))
    assert out["status_code"] is None and out["body"] is None
    assert out["error"]["code"] == "upstream_unreachable"
    message = out["error"]["message"]
    assert message.startswith(
        f"The upstream could not be reached ({url}/chat/completions): ClientConnectorError"
    ), message
    assert message.endswith(f" (after {FAST.max_attempts} attempts)"), message
    assert out["attempts"] == FAST.max_attempts


def test_list_models(fake_upstream: FakeUpstream) -> None:
    assert with_upstream(fake_upstream.url, lambda up: up.list_models()) == [
        "fake-chat",
        "fake-embed",
    ]
    assert with_upstream(closed_port_url(), lambda up: up.list_models()) == []


# --- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [3, 20])  # 20: spread over several pooled clients
def test_concurrency_bound_respected(fake_upstream: FakeUpstream, bound: int) -> None:
    fake_upstream.configure(latency_ms=40)

    async def go(up: HttpUpstream) -> tuple[list[dict], int]:
        # two chunks at once (as from two batch actors) share the bound
        a, b = await asyncio.gather(
            up.run_chunk("/v1/chat/completions", items(2 * bound, prefix="a"), BATCH),
            up.run_chunk("/v1/chat/completions", items(2 * bound, prefix="b"), BATCH),
        )
        return a + b, up.max_inflight

    outs, max_inflight = with_upstream(fake_upstream.url, go, max_concurrency=bound)
    assert [o["status_code"] for o in outs] == [200] * 4 * bound
    seen = max(e["inflight"] for e in fake_upstream.requests())
    assert 2 <= seen <= bound
    assert max_inflight <= bound


# --- routing ---------------------------------------------------------------------------------


def test_router_resolution_and_model_map(fake_upstream: FakeUpstream) -> None:
    with FakeUpstream(models=["other-model"], api_key="sk-other") as other:

        async def main() -> None:
            a = HttpUpstream(UpstreamConfig("a", fake_upstream.url, None), FAST)
            b = HttpUpstream(UpstreamConfig("b", other.url, "sk-other"), FAST)
            dead = HttpUpstream(UpstreamConfig("dead", closed_port_url(), None), FAST)
            router = UpstreamRouter([a, b, dead], model_map={"alias-model": "b"})
            try:
                assert router.resolve("alias-model") is b  # the map needs no discovery
                # discovery on demand: run_chunk refreshes for a model it cannot place
                outs = await router.run_chunk("/v1/chat/completions", "fake-chat", items(1), BATCH)
                assert outs[0]["status_code"] == 200
                routes = await router.list_models()
                assert routes == {
                    "fake-chat": "a",
                    "fake-embed": "a",
                    "other-model": "b",
                    "alias-model": "b",
                }
                assert router.resolve("other-model") is b
                assert router.resolve("fake-embed") is a
                assert router.resolve("nobody") is None
                body = {**CHAT, "model": "other-model"}
                [out] = await router.run_chunk(
                    "/v1/chat/completions", "other-model", items(1, body), BATCH
                )
                assert out["status_code"] == 200 and out["body"]["model"] == "other-model"
                [out] = await router.run_chunk("/v1/chat/completions", "nobody", items(1), BATCH)
                assert out["status_code"] == 404 and out["attempts"] == 0
                assert out["body"] == {
                    "error": {
                        "message": "The model 'nobody' is not served by any configured upstream.",
                        "type": "invalid_request_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            finally:
                await router.aclose()

            with_default = UpstreamRouter(
                [HttpUpstream(UpstreamConfig("a", fake_upstream.url, None), FAST)], default="a"
            )
            try:
                assert with_default.resolve("nobody") is not None
                [out] = await with_default.run_chunk(
                    "/v1/chat/completions", "nobody", items(1, {**CHAT, "model": "nobody"}), BATCH
                )
                assert out["status_code"] == 404 and out["attempts"] == 1  # the upstream's 404
            finally:
                await with_default.aclose()

        asyncio.run(main())
        assert [e["key"] for e in other.requests() if e["path"] != "/v1/models"] == [
            f"{BATCH}:req-0"
        ]


def test_bearer_key_sent_and_checked() -> None:
    with FakeUpstream(api_key="sk-secret") as fake:
        [ok] = run_chunk(fake.url, "/v1/chat/completions", items(1), api_key="sk-secret")
        [denied] = run_chunk(fake.url, "/v1/chat/completions", items(1), api_key="wrong")
    assert ok["status_code"] == 200
    assert (denied["status_code"], denied["attempts"]) == (401, 1)
    assert denied["body"]["error"]["code"] == "invalid_api_key"


def test_executor_without_ray(fake_upstream: FakeUpstream) -> None:
    async def main() -> None:
        ex = UpstreamExecutor(
            [{"name": "fake", "base_url": fake_upstream.url, "max_concurrency": 4}],
            model_map=None,
            retry={"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.02, "jitter": 0.5},
        )
        try:
            assert await ex.list_models() == ["fake-chat", "fake-embed"]
            fake_upstream.configure(fail_first_n=1)
            outs = await ex.run_chunk("/v1/chat/completions", "fake-chat", items(5), BATCH)
            assert [(o["status_code"], o["attempts"]) for o in outs] == [(200, 2)] * 5
            [stats] = await ex.stats()
            assert stats["attempts_total"] == 10 and stats["max_inflight"] <= 4
        finally:
            await ex.aclose()

    asyncio.run(main())


def test_an_oversize_upstream_answer_fails_its_request_once(fake_upstream: FakeUpstream) -> None:
    """The body is streamed and capped: a runaway answer is not read whole, not retried."""

    async def main() -> list[dict[str, Any]]:
        up = HttpUpstream(UpstreamConfig("fake", fake_upstream.url, max_response_bytes=64), FAST)
        try:
            return await up.run_chunk("/v1/chat/completions", items(1), BATCH)
        finally:
            await up.aclose()

    (outcome,) = asyncio.run(main())
    assert outcome["error"] == {
        "code": "upstream_response_too_large",
        "message": "The upstream's response is larger than the limit of 64 bytes; it was not read.",
    }
    assert outcome["attempts"] == 1 and outcome["status_code"] is None


def test_stream_chunk_gives_outcomes_as_they_come_back(fake_upstream: FakeUpstream) -> None:
    """A request that is answered at once is not held back by a slow one of its chunk."""
    fake_upstream.configure(latency_ms=300)
    chunk = items(3)
    del chunk[1]["body"]  # cannot be sent: its outcome is ready before any answer

    async def go(up: HttpUpstream) -> list[list[str]]:
        stream = up.stream_chunk("/v1/chat/completions", chunk, BATCH)  # type: ignore[arg-type]
        return [[o["custom_id"] for o in group] async for group in stream]

    groups = with_upstream(fake_upstream.url, go)
    assert groups[0] == ["req-1"]
    assert sorted(x for g in groups[1:] for x in g) == ["req-0", "req-2"]


def test_a_body_that_cannot_be_encoded_fails_without_a_request(
    fake_upstream: FakeUpstream,
) -> None:
    """JSON allows integers beyond 64 bits; orjson cannot send them: the line fails."""
    fake_upstream.reset()
    [out] = run_chunk(fake_upstream.url, "/v1/chat/completions", items(1, {**CHAT, "seed": 2**70}))
    assert out["error"] == {
        "code": "upstream_error",
        "message": "The request body cannot be encoded as JSON: TypeError: "
        "Integer exceeds 64-bit range",
    }
    assert (out["status_code"], out["attempts"]) == (None, 0)
    assert log_for(fake_upstream, "req-0") == []


class _NotJson(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = b"<html>a proxy's page</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_2xx_answer_that_is_not_a_json_object_is_an_error() -> None:
    """A real HTTP server answering 200 with HTML (a misconfigured proxy, say)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        [out] = run_chunk(url, "/v1/chat/completions", items(1))
    finally:
        server.shutdown()
        server.server_close()
    assert out["status_code"] == 200
    assert out["error"] == {
        "code": "upstream_error",
        "message": "The upstream answered with a body that is not a JSON object.",
    }
    assert out["body"] == {"error": {"message": "<html>a proxy's page</html>"}}
    assert outcome_event("/v1/chat/completions", out)[0] == "RequestFailed"  # the error file
