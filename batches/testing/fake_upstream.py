"""A fake OpenAI-compatible upstream: a real HTTP server for tests and benchmarks.

Run it as a process::

    python -m batches.testing.fake_upstream --host 127.0.0.1 --port 0 --port-file /tmp/port

or from a test, as a context manager that starts that process on a free loopback port::

    with FakeUpstream() as fake:
        fake.url                      # http://127.0.0.1:PORT/v1
        fake.configure(fail_first_n=2, retry_after=0.05)
        fake.requests()               # the request log
        fake.reset()                  # clear the log and the switches

Endpoints (under ``/v1``): ``GET /models``, ``POST /chat/completions``, ``/completions``,
``/embeddings``, ``/responses``, ``/moderations``. Replies are deterministic functions of
the request; token counts are word counts.

Control API (no auth): ``POST /_control`` sets switches (a partial update; returns them
all), ``GET /_control`` reads them, ``GET /_requests`` returns the request log (one entry
per ``/v1`` request received: ``{t, path, key, model, status, fault, inflight}``; ``status``
is null for dropped and timed-out requests), ``POST /_reset`` clears the log, the
per-request attempt counters and the switches.

Switches: ``latency_ms``, ``latency_jitter_ms``, ``fail_429_rate``, ``fail_500_rate``,
``drop_rate`` (close the connection without a response), ``timeout_rate`` (hold the
request ``timeout_sleep_s`` seconds, or until the client goes away), ``retry_after``
(seconds, sent as ``Retry-After`` on 429s), ``fail_first_n`` (the first N attempts of
every distinct request fail with ``fail_status``; a request is keyed by its
``X-Batchlog-Request`` header, else by the hash of its body), ``fail_status`` (default
500; also ``"drop"`` or ``"timeout"`` for deterministic transport faults), ``seed`` (reseeds the RNG used by the ``*_rate`` switches), ``models`` (the model
list), ``timeout_sleep_s``.

The app is a bare ASGI callable (no framework routing) with orjson bodies, served by a
single uvicorn process with the access log off: it is the baseline of the throughput
benchmark, so the handlers stay trivial.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODELS = ["fake-chat", "fake-embed"]
EMBED_DIM = 8

DEFAULT_SWITCHES: dict[str, Any] = {
    "latency_ms": 0.0,
    "latency_jitter_ms": 0.0,
    "fail_429_rate": 0.0,
    "fail_500_rate": 0.0,
    "drop_rate": 0.0,
    "timeout_rate": 0.0,
    "retry_after": None,
    "fail_first_n": 0,
    "fail_status": 500,
    "seed": 0,
    "timeout_sleep_s": 300.0,
    "models": None,  # None: the models given at startup
}

_JSON_HEADERS = [(b"content-type", b"application/json")]


def _words(text: str) -> list[str]:
    return text.split()


def _text_of(content: Any) -> str:
    """The text of a chat message's ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                t = part.get("text")
                if isinstance(t, str):
                    parts.append(t)
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _limit(body: dict, *names: str) -> int | None:
    for n in names:
        v = body.get(n)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _reply_words(prompt: str, max_tokens: int | None) -> tuple[list[str], bool]:
    """A deterministic reply: echo of the prompt's last words, cut at ``max_tokens``."""
    tail = _words(prompt)[-12:]
    words = ["Fake", "reply", "to:", *tail] if tail else ["Fake", "reply."]
    if max_tokens is not None and len(words) > max_tokens:
        return words[: max(max_tokens, 0)], True
    return words, False


def _vector(text: str, dim: int) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=64).digest()
    raw = [(digest[i % 64] / 127.5) - 1.0 for i in range(dim)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


class Api4xx(Exception):
    def __init__(self, status: int, body: dict) -> None:
        self.status = status
        self.body = body


def _bad(message: str, param: str | None = None) -> Api4xx:
    return Api4xx(400, _error(message, "invalid_request_error", None, param))


# --- endpoint handlers: body (dict) -> response body -------------------------------


def _chat(body: dict, rid: str, now: int) -> dict:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is a required non-empty array.", "messages")
    texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
    prompt_tokens = sum(len(_words(t)) for t in texts) + 2 * len(messages)
    last_user = next(
        (
            t
            for m, t in zip(reversed(messages), reversed(texts), strict=True)
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        texts[-1],
    )
    limit = _limit(body, "max_completion_tokens", "max_tokens")
    n = _limit(body, "n") or 1
    words, cut = _reply_words(last_user, limit)
    content = " ".join(words)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "length" if cut else "stop",
        }
        for i in range(max(n, 1))
    ]
    completion_tokens = len(words) * len(choices)
    return {
        "id": "chatcmpl-" + rid,
        "object": "chat.completion",
        "created": now,
        "model": body["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_fake",
    }


def _prompts(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):  # one prompt as token ids
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):  # several prompts as token ids
            return [" ".join(map(str, v)) for v in value]
    raise _bad(f"'{name}' must be a string or an array of strings.", name)


def _completion(body: dict, rid: str, now: int) -> dict:
    prompts = _prompts(body.get("prompt"), "prompt")
    limit = _limit(body, "max_tokens")
    if limit is None:
        limit = 16  # the OpenAI default for /v1/completions
    choices = []
    prompt_tokens = completion_tokens = 0
    for i, p in enumerate(prompts):
        words, cut = _reply_words(p, limit)
        prompt_tokens += len(_words(p))
        completion_tokens += len(words)
        choices.append(
            {
                "index": i,
                "text": " " + " ".join(words),
                "logprobs": None,
                "finish_reason": "length" if cut else "stop",
            }
        )
    return {
        "id": "cmpl-" + rid,
        "object": "text_completion",
        "created": now,
        "model": body["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _embeddings(body: dict, rid: str, now: int) -> dict:
    inputs = _prompts(body.get("input"), "input")
    dim = _limit(body, "dimensions") or EMBED_DIM
    if not 1 <= dim <= 4096:
        raise _bad("'dimensions' must be between 1 and 4096.", "dimensions")
    tokens = sum(len(_words(t)) for t in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _vector(t, dim)}
            for i, t in enumerate(inputs)
        ],
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _responses(body: dict, rid: str, now: int) -> dict:
    value = body.get("input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value:
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else str(m) for m in value]
    else:
        raise _bad("'input' must be a string or an array of input items.", "input")
    if isinstance(body.get("instructions"), str):
        texts.insert(0, body["instructions"])
    input_tokens = sum(len(_words(t)) for t in texts)
    words, cut = _reply_words(texts[-1], _limit(body, "max_output_tokens"))
    text = " ".join(words)
    return {
        "id": "resp_" + rid,
        "object": "response",
        "created_at": now,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None,
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": "msg_" + rid,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "output_text": text,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(words),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + len(words),
        },
    }


_MOD_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def _moderations(body: dict, rid: str, now: int) -> dict:
    inputs = _prompts(body.get("input"), "input")
    results = []
    for t in inputs:
        flagged = "fake-flag" in t
        results.append(
            {
                "flagged": flagged,
                "categories": dict.fromkeys(_MOD_CATEGORIES, flagged),
                "category_scores": {c: (0.99 if flagged else 0.001) for c in _MOD_CATEGORIES},
            }
        )
    return {"id": "modr-" + rid, "model": body["model"], "results": results}


# path -> (handler, whether "model" is required)
_POST_ROUTES: dict[str, tuple[Callable[[dict, str, int], dict], bool]] = {
    "/v1/chat/completions": (_chat, True),
    "/v1/completions": (_completion, True),
    "/v1/embeddings": (_embeddings, True),
    "/v1/responses": (_responses, True),
    "/v1/moderations": (_moderations, False),
}


class FakeUpstreamApp:
    """The ASGI app. All state lives on the instance (one uvicorn worker)."""

    def __init__(self, models: list[str] | None = None, api_key: str | None = None) -> None:
        self.startup_models = list(models) if models is not None else list(DEFAULT_MODELS)
        self.api_key = api_key
        self._auth = f"Bearer {api_key}".encode() if api_key else None
        self.log: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.inflight = 0
        self.switches: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.log = []
        self.attempts = {}
        self.switches = dict(DEFAULT_SWITCHES)
        self.rng = random.Random(self.switches["seed"])
        self._refresh()

    def _refresh(self) -> None:
        s = self.switches
        models = s["models"] if s["models"] is not None else self.startup_models
        self.models = set(models)
        self.model_list = list(models)
        # one uniform draw per request: cumulative thresholds for the random faults
        self.thresholds = []
        acc = 0.0
        for fault, rate in (
            ("drop", s["drop_rate"]),
            ("timeout", s["timeout_rate"]),
            ("429", s["fail_429_rate"]),
            ("500", s["fail_500_rate"]),
        ):
            if rate:
                acc += float(rate)
                self.thresholds.append((acc, fault))
        self.any_fault = bool(self.thresholds) or bool(s["fail_first_n"])
        self.latency = float(s["latency_ms"]) / 1000.0
        self.jitter = float(s["latency_jitter_ms"]) / 1000.0

    def configure(self, switches: dict[str, Any]) -> dict[str, Any]:
        unknown = set(switches) - set(DEFAULT_SWITCHES)
        if unknown:
            raise _bad(f"unknown switches: {sorted(unknown)}")
        self.switches.update(switches)
        if "seed" in switches:
            self.rng = random.Random(self.switches["seed"])
        self._refresh()
        return dict(self.switches)

    # --- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif msg["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        path: str = scope["path"]
        method: str = scope["method"]
        raw = b""
        more = True
        while more:
            msg = await receive()
            raw += msg.get("body", b"")
            more = msg.get("more_body", False)
        if path.startswith("/_"):
            await self._control(method, path, raw, send)
            return
        self.inflight += 1
        try:
            await self._serve(scope, method, path, raw, receive, send)
        finally:
            self.inflight -= 1

    async def _control(self, method: str, path: str, raw: bytes, send: Send) -> None:
        status: int = 200
        body: Any = None
        try:
            if path == "/_control" and method == "POST":
                data = orjson.loads(raw or b"{}")
                if not isinstance(data, dict):
                    raise _bad("expected a JSON object")
                body = self.configure(data)
            elif path == "/_control" and method == "GET":
                body = dict(self.switches)
            elif path == "/_requests" and method == "GET":
                body = self.log
            elif path == "/_reset" and method == "POST":
                self.reset()
                body = {"ok": True}
            elif path == "/_health":
                body = {"ok": True}
            else:
                status, body = 404, _error(f"no route {method} {path}", "invalid_request_error")
        except orjson.JSONDecodeError:
            status, body = 400, _error("invalid JSON", "invalid_request_error")
        except Api4xx as e:
            status, body = e.status, e.body
        await _respond(send, status, body)

    async def _serve(
        self, scope: Scope, method: str, path: str, raw: bytes, receive: Receive, send: Send
    ) -> None:
        key: str | None = None
        auth: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-batchlog-request":
                key = value.decode("latin-1")
            elif name == b"authorization":
                auth = value
        entry: dict[str, Any] = {
            "t": time.time(),
            "path": path,
            "key": key,
            "model": None,
            "status": None,
            "fault": None,
            "inflight": self.inflight,
        }
        self.log.append(entry)

        body: dict | None = None
        if method == "POST" and raw:
            try:
                parsed = orjson.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
            except orjson.JSONDecodeError:
                body = None
            if body is not None and isinstance(body.get("model"), str):
                entry["model"] = body["model"]

        # --- faults (before any validation: they model the transport and the server) ---
        extra_headers: list[tuple[bytes, bytes]] = []
        if self.any_fault:
            s = self.switches
            fault: str | None = None
            if s["fail_first_n"]:
                k = key if key is not None else hashlib.blake2b(raw, digest_size=16).hexdigest()
                n = self.attempts.get(k, 0) + 1
                self.attempts[k] = n
                if n <= int(s["fail_first_n"]):
                    fault = "first_n"
            if fault is None and self.thresholds:
                r = self.rng.random()
                for acc, name in self.thresholds:
                    if r < acc:
                        fault = name
                        break
            if fault == "first_n" and s["fail_status"] in ("drop", "timeout"):
                fault = s["fail_status"]
            if fault == "drop":
                entry["fault"] = "drop"
                await _drop(receive)
                return
            if fault == "timeout":
                entry["fault"] = "timeout"
                if not await _hold(receive, float(s["timeout_sleep_s"])):
                    entry["status"] = 504
                    await _respond(
                        send, 504, _error("injected timeout", "server_error", "fake_504")
                    )
                return
            if fault is not None:
                status = int(s["fail_status"]) if fault == "first_n" else int(fault)
                entry["fault"] = fault
                entry["status"] = status
                if status == 429 and s["retry_after"] is not None:
                    extra_headers.append((b"retry-after", str(s["retry_after"]).encode()))
                await self._sleep()
                kind = "rate_limit_error" if status == 429 else "server_error"
                if 400 <= status < 500 and status != 429:
                    kind = "invalid_request_error"
                await _respond(
                    send,
                    status,
                    _error(f"injected failure ({fault})", kind, f"fake_{status}"),
                    extra_headers,
                )
                return

        status, out = self._handle(method, path, raw, body, auth)
        entry["status"] = status
        await self._sleep()
        await _respond(send, status, out)

    async def _sleep(self) -> None:
        if self.latency or self.jitter:
            delay = self.latency + (self.rng.random() * self.jitter if self.jitter else 0.0)
            await asyncio.sleep(delay)

    def _handle(
        self, method: str, path: str, raw: bytes, body: dict | None, auth: bytes | None
    ) -> tuple[int, dict]:
        if self._auth is not None and auth != self._auth:
            return 401, _error(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        if method == "GET" and path == "/v1/models":
            return 200, {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in self.model_list
                ],
            }
        route = _POST_ROUTES.get(path)
        if route is None:
            return 404, _error(f"Invalid URL ({method} {path})", "invalid_request_error")
        if method != "POST":
            return 405, _error(f"Method {method} not allowed", "invalid_request_error")
        if body is None:
            return 400, _error("The request body is not a JSON object.", "invalid_request_error")
        handler, model_required = route
        model = body.get("model")
        if model is None and not model_required:
            body["model"] = model = "fake-moderation"
        elif not isinstance(model, str):
            return 400, _error(
                "'model' is a required string.", "invalid_request_error", None, "model"
            )
        elif model not in self.models:
            return 404, _error(
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        rid = hashlib.blake2b(raw, digest_size=12).hexdigest()
        try:
            return 200, handler(body, rid, int(time.time()))
        except Api4xx as e:
            return e.status, e.body


async def _respond(
    send: Send, status: int, body: Any, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = orjson.dumps(body)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _drop(receive: Receive) -> None:
    """Close the client's connection without a response.

    uvicorn hands the app the bound ``receive`` of its request cycle, which holds the
    connection's transport; closing that is the closest thing to a server that crashed
    or a proxy that reset the connection.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:  # not uvicorn: fail loudly rather than answer
        raise RuntimeError("drop: no transport to close")
    transport.close()
    # wait for uvicorn to see the disconnect, so it does not try to answer for us
    await _hold(receive, 5.0)


async def _hold(receive: Receive, seconds: float) -> bool:
    """Wait ``seconds`` or until the client disconnects; True if it disconnected."""

    async def until_disconnect() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return

    try:
        await asyncio.wait_for(until_disconnect(), timeout=seconds)
    except TimeoutError:
        return False
    return True


# --- running it ------------------------------------------------------------------


async def _serve_forever(app: FakeUpstreamApp, host: str, port: int, port_file: str | None) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on sockets whose proto is
    # IPPROTO_TCP, and without it Nagle + delayed ACKs cost ~40 ms a response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        backlog=4096,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # raises the startup error
            return
        await asyncio.sleep(0.01)
    if port_file:
        tmp = f"{port_file}.tmp{os.getpid()}"
        Path(tmp).write_text(str(bound))
        os.replace(tmp, port_file)
    print(f"fake upstream listening on http://{host}:{bound}/v1", file=sys.stderr, flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m batches.testing.fake_upstream", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", default=None, help="write the bound port here once listening")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    p.add_argument(
        "--workers", type=int, default=1, choices=[1], help="always 1 (state is in memory)"
    )
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    app = FakeUpstreamApp(models=models, api_key=args.api_key)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(app, args.host, args.port, args.port_file))


_ROOT = Path(__file__).resolve().parents[2]  # the directory holding `batches`


class FakeUpstream:
    """Start ``python -m batches.testing.fake_upstream`` as a subprocess on a free loopback port.

    ``with FakeUpstream(api_key=None, models=None, **switches) as fake: ...`` — ``fake.url``
    is ``http://127.0.0.1:PORT/v1``; ``configure``/``requests``/``reset`` talk to its
    control API; ``stop()`` (also on exit) terminates it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        models: list[str] | None = None,
        startup_timeout_s: float = 30.0,
        **switches: Any,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.models = models
        self.startup_timeout_s = startup_timeout_s
        self._initial_switches = switches
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._client: Any = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no ``/v1``)."""
        if self.port is None:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://HOST:PORT/v1``."""
        return self.base_url + "/v1"

    def start(self) -> FakeUpstream:
        import httpx

        if self._proc is not None:
            return self
        self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-upstream-")
        port_file = Path(self._tmpdir.name) / "port"
        log_path = Path(self._tmpdir.name) / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "batches.testing.fake_upstream",
            "--host",
            self.host,
            "--port",
            "0",
        ]
        cmd += ["--port-file", str(port_file)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.models is not None:
            cmd += ["--models", ",".join(self.models)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake upstream did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self._client = httpx.Client(base_url=self.base_url, timeout=10.0, trust_env=False)
        if self._initial_switches:
            self.configure(**self._initial_switches)
        return self

    def configure(self, **switches: Any) -> dict[str, Any]:
        """Set switches (a partial update); returns all of them."""
        r = self._http().post("/_control", content=orjson.dumps(switches))
        r.raise_for_status()
        return dict(r.json())

    def switches(self) -> dict[str, Any]:
        r = self._http().get("/_control")
        r.raise_for_status()
        return dict(r.json())

    def requests(self) -> list[dict[str, Any]]:
        """The request log: ``[{t, path, key, model, status, fault, inflight}, ...]``."""
        r = self._http().get("/_requests")
        r.raise_for_status()
        return list(r.json())

    def reset(self) -> None:
        """Clear the request log, the attempt counters and the switches."""
        self._http().post("/_reset").raise_for_status()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _http(self) -> Any:
        if self._client is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._client

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
