"""SmolLM2 through llama.cpp: chat and legacy completions, decoded in batches.

``ChatEngine`` turns an OpenAI body into prompt tokens (the model's own chat template
for chat), hands them to the continuous-batching decoder (``decoding.py``) and turns the
generations back into OpenAI response bodies. Every request of a chunk, and of every
chunk in flight at this replica, is decoded together.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from actors.local.decoding import BatchDecoder, DecoderLoop, Generation, Sampling
from actors.local.requests import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    COMPLETIONS_ENDPOINT,
    RequestError,
    _usage,
    chat_messages,
    completion_prompts,
    sampling_params,
)


def requantized(src: Path, cache_dir: Path, ftype: str = "q8_0") -> Path:
    """``src`` re-encoded as ``ftype``, made once and kept in ``cache_dir``.

    Why: SmolLM2 ships as Q4_1, and ggml's CPU kernels for Q4_1 gain little from
    decoding many sequences at once, while Q8_0's batched kernels do (measured in
    docs/benchmarks.md); Q8_0 also holds every Q4_1 weight almost exactly (an 8-bit grid
    over the same 32-value blocks), so this changes the speed, not the model.
    """
    import llama_cpp

    st = src.stat()
    dst = cache_dir / f"{src.stem}-{st.st_size}-{int(st.st_mtime)}.{ftype}.gguf"
    if dst.is_file():
        return dst
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}")
    params.allow_requantize = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"re-encoding {src.name} as {ftype} failed ({rc})")
    os.replace(tmp, dst)  # replicas converting at once each write their own tmp file
    return dst


class ChatEngine:
    def __init__(
        self,
        model_path: Path,
        threads: int,
        n_ctx: int,
        model_id: str,
        *,
        parallel: int,
        kv_tokens: int,
        weights: str | None = "q8_0",
        cache_dir: Path | None = None,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {model_path}")
        from llama_cpp import Llama, llama_chat_format

        if weights:
            cache_dir = cache_dir or Path.home() / ".cache" / "batchlog" / "models"
            model_path = requantized(model_path, cache_dir, weights)

        self.model_id = model_id
        # This Llama's own context is only used for tokenizing: keep it small.
        self.llm = Llama(
            model_path=str(model_path),
            n_ctx=256,
            n_batch=256,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{model_path.name} carries no chat template")
        vocab = self.llm._model
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
            stop_token_ids=[self.llm.token_eos()],
        )
        self.decoder = BatchDecoder(
            self.llm, parallel=parallel, kv_tokens=kv_tokens, n_ctx=n_ctx, threads=threads
        )
        self.broken: BaseException | None = None
        self.loop = DecoderLoop(self.decoder, self._broke)

    def _broke(self, e: BaseException) -> None:
        self.broken = e

    # -- requests -> sequences

    def _sampling(self, params: dict[str, Any], extra_stop: list[str]) -> Sampling:
        return Sampling(
            max_tokens=params["max_tokens"],
            temperature=params["temperature"],
            top_p=params["top_p"],
            presence_penalty=params["presence_penalty"],
            frequency_penalty=params["frequency_penalty"],
            seed=params["seed"],
            stop=tuple(dict.fromkeys([*params["stop"], *extra_stop])),
        )

    def chat_sequences(self, body: Mapping[str, Any]) -> list[tuple[list[int], Sampling]]:
        messages = chat_messages(body)
        params = sampling_params(body, default_max_tokens=None)
        formatted = self.formatter(messages=messages)  # type: ignore[arg-type]
        prompt = self.llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stop = formatted.stop
        extra = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        return [(prompt, self._sampling(params, extra))]

    def completion_sequences(self, body: Mapping[str, Any]) -> list[tuple[list[int], Sampling]]:
        prompts = completion_prompts(body)
        params = sampling_params(
            body, default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS, endpoint=COMPLETIONS_ENDPOINT
        )
        out = []
        for p in prompts:
            tokens = (
                list(p)
                if isinstance(p, list)
                else self.llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)
            )
            out.append((tokens, self._sampling(params, [])))
        return out

    # -- run

    async def generate_all(
        self, groups: list[list[tuple[list[int], Sampling]]]
    ) -> list[list[Generation] | RequestError]:
        """Decode every group's sequences (one group per request, together with
        everything else in flight here); a group fails alone with its RequestError."""
        if self.broken is not None:
            raise RuntimeError(f"the decoder broke: {type(self.broken).__name__}: {self.broken}")
        flat = [seq for group in groups for seq in group]
        futures = self.loop.submit_many(flat)
        waits = [asyncio.wrap_future(f) for f in futures if isinstance(f, Future)]
        try:
            await asyncio.gather(*waits)
        except BaseException:
            for f in futures:  # cancelled chunk, or the engine broke: stop the rest
                if isinstance(f, Future):
                    self.loop.cancel(f)
            raise
        out: list[list[Generation] | RequestError] = []
        pos = 0
        for group in groups:
            mine = futures[pos : pos + len(group)]
            pos += len(group)
            error = next((f for f in mine if isinstance(f, RequestError)), None)
            out.append(error if error is not None else [f.result() for f in mine])  # type: ignore[union-attr]
        return out

    def chat_body(self, gens: list[Generation]) -> dict[str, Any]:
        (g,) = gens
        return {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": g.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                }
            ],
            "usage": _usage(g.prompt_tokens, g.completion_tokens),
            "system_fingerprint": None,
        }

    def completion_body(self, body: Mapping[str, Any], gens: list[Generation]) -> dict[str, Any]:
        echo = body.get("echo") is True
        prompts = completion_prompts(body)
        choices = []
        for i, (p, g) in enumerate(zip(prompts, gens, strict=True)):
            prefix = ""
            if echo:
                prefix = (
                    p if isinstance(p, str) else self.llm.detokenize(p).decode("utf-8", "replace")
                )
            choices.append(
                {
                    "index": i,
                    "text": prefix + g.text,
                    "logprobs": None,
                    "finish_reason": g.finish_reason,
                }
            )
        return {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": choices,
            "usage": _usage(
                sum(g.prompt_tokens for g in gens), sum(g.completion_tokens for g in gens)
            ),
            "system_fingerprint": None,
        }

    def stats(self) -> dict[str, Any]:
        d = self.decoder
        return {
            "parallel": d.parallel,
            "kv_tokens": d.kv_tokens,
            "decode_steps": d.steps,
            "max_running": d.max_running,
            "running": len(d._running),
        }

    def close(self) -> None:
        self.loop.close()
        self.decoder.close()


__all__ = ["ChatEngine", "RequestError"]
