"""One loaded model answering chunks of requests: the body of a ``ModelReplica`` actor.

The model is loaded once, in the constructor, after the engine's start-up self-test
(``selftest.py``). A failure is kept, not raised: ``health()`` reports it and every item
of every chunk then fails at once with ``model_load_failed`` and the reason, so a broken
engine is said once, clearly, and never restarted into the same failure.

The replica is an async actor: chat chunks hand their requests to the continuous-
batching decoder and wait, so every chunk in flight here is decoded together; a chunk
whose caller cancels it (``ray.cancel``) takes its sequences out of the batch.
Embedding chunks are encoded one chunk at a time on a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

from actors.local.outcomes import (
    Outcome,
    WorkItem,
    failed_outcomes,
    make_outcome,
    rejected_outcomes,
)
from actors.local.requests import (
    CHAT_ENDPOINT,
    CHAT_MODEL_ID,
    DEFAULT_N_CTX,
    EMBED_MODEL_ID,
    LOCAL_MODELS,
    MODEL_ENDPOINTS,
    RequestError,
    _json_body,
    default_embedding_model_dir,
    default_gguf_path,
    endpoint_error,
)
from batches.domain import line_errors, request_errors

# Sequences decoded together per chat replica, and the KV cells they share.
DEFAULT_PARALLEL = 8
DEFAULT_KV_TOKENS = 4096


class LocalModelServer:
    def __init__(
        self,
        model_id: str,
        threads: int = 1,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        parallel: int = DEFAULT_PARALLEL,
        kv_tokens: int = DEFAULT_KV_TOKENS,
        selftest: bool = True,
    ) -> None:
        self.model_id = model_id
        self.threads = max(1, int(threads))
        self.model_path: str | None = None
        self.load_error: str | None = None
        self.load_seconds = 0.0
        self.requests_served = 0
        self.chunks_served = 0
        self.last_batch_id: str | None = None
        self._chat: Any = None
        self._embed: Any = None
        self._embed_lock = asyncio.Lock()
        t0 = time.perf_counter()
        try:
            if model_id == CHAT_MODEL_ID:
                self._load_chat(model_path, n_ctx, parallel, kv_tokens, selftest)
            elif model_id == EMBED_MODEL_ID:
                from actors.local.embed import EmbedEngine

                path = Path(model_path) if model_path is not None else default_embedding_model_dir()
                self.model_path = str(path)
                self._embed = EmbedEngine(path, self.threads, model_id)
            else:
                raise ValueError(f"unknown local model {model_id!r}; known: {list(LOCAL_MODELS)}")
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
        self.load_seconds = time.perf_counter() - t0

    def _load_chat(
        self,
        model_path: str | os.PathLike[str] | None,
        n_ctx: int,
        parallel: int,
        kv_tokens: int,
        selftest: bool,
    ) -> None:
        from actors.local.selftest import engine_selftest

        path = Path(model_path) if model_path is not None else default_gguf_path()
        self.model_path = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        if selftest and (why := engine_selftest(path)) is not None:
            self.load_error = why
            return
        from actors.local.chat import ChatEngine

        self._chat = ChatEngine(
            path, self.threads, n_ctx, self.model_id, parallel=parallel, kv_tokens=kv_tokens
        )

    @ray.method(concurrency_group="probe")
    async def health(self) -> dict[str, Any]:
        engine = self._chat.stats() if self._chat is not None else {}
        if self._chat is not None and self._chat.broken is not None:
            self.load_error = f"the decoder broke: {self._chat.broken!r}"
        return {
            "model": self.model_id,
            "loaded": self.load_error is None,
            "error": self.load_error,
            "model_path": self.model_path,
            "threads": self.threads,
            "load_seconds": round(self.load_seconds, 3),
            "pid": os.getpid(),
            "cpu_s": round(time.process_time(), 3),  # this process, all threads
            "chunks_served": self.chunks_served,
            "requests_served": self.requests_served,
            "last_batch_id": self.last_batch_id,
            **engine,
        }

    async def run_chunk(
        self, endpoint: str, items: list[WorkItem], batch_id: str | None = None
    ) -> list[Outcome]:
        """One outcome per item, in the order of ``items``."""
        self.chunks_served += 1
        self.requests_served += len(items)
        self.last_batch_id = batch_id
        if self.load_error is not None:
            return failed_outcomes(
                items, line_errors.model_load_failed(self.model_id, self.load_error)
            )
        if endpoint not in MODEL_ENDPOINTS.get(self.model_id, ()):
            return rejected_outcomes(items, endpoint_error(self.model_id, endpoint))
        if self._embed is not None:
            async with self._embed_lock:
                return await asyncio.to_thread(self._embed.run, items)
        return await self._run_chat(endpoint, items)

    async def _run_chat(self, endpoint: str, items: list[WorkItem]) -> list[Outcome]:
        """Parse every request, then hand all their sequences to the decoder at once."""
        engine = self._chat
        started = time.time()
        parsed: list[tuple[Any, dict[str, Any] | None, RequestError | None]] = []
        for item in items:
            try:
                body = _json_body(item)
                seqs = (
                    engine.chat_sequences(body)
                    if endpoint == CHAT_ENDPOINT
                    else engine.completion_sequences(body)
                )
                parsed.append((seqs, body, None))
            except RequestError as e:
                parsed.append(([], None, e))
        try:
            results = await engine.generate_all([p[0] for p in parsed if p[2] is None])
            failure: str | None = None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the engine broke: every request of the chunk gets a 500
            results, failure = [], f"{type(e).__name__}: {e}"
        finished = time.time()
        outs: list[Outcome] = []
        it = iter(results)
        for item, (_, req_body, error) in zip(items, parsed, strict=True):
            done_at = finished
            if error is None and failure is None:
                res = next(it)
                if isinstance(res, RequestError):
                    error = res
                else:
                    done_at = max(g.finished_at for g in res)
            if failure is not None and error is None:
                broke = request_errors.model_failed_on_request(failure)
                out, status = broke.body(), broke.status_code
            elif error is not None:
                out, status = error.body(), error.status_code
            else:
                assert req_body is not None
                out = (
                    engine.chat_body(res)
                    if endpoint == CHAT_ENDPOINT
                    else engine.completion_body(req_body, res)
                )
                status = 200
            outs.append(
                make_outcome(
                    item if isinstance(item, Mapping) else {},
                    status_code=status,
                    body=out,
                    started_at=started,
                    finished_at=done_at,
                )
            )
        return outs


# One process per replica; `health` has its own event loop so it answers during a chunk.
ModelReplica = ray.remote(concurrency_groups={"probe": 1})(  # type: ignore[call-overload]
    LocalModelServer
)
