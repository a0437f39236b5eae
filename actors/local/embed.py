"""all-MiniLM-L6-v2 through sentence-transformers on CPU (mean pooling, normalized).

The valid requests of a chunk are encoded together, about ``EMBED_BATCH_TEXTS`` texts
per forward pass.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.local.outcomes import Outcome, WorkItem, make_outcome
from actors.local.requests import (
    EMBED_BATCH_TEXTS,
    EMBEDDING_DIMENSIONS,
    RequestError,
    _b64_floats,
    _json_body,
    embedding_inputs,
    error_body,
)


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

    def run(self, items: list[WorkItem]) -> list[Outcome]:
        """Valid requests of the chunk are encoded together, about 32 texts per pass.

        Each pass covers whole requests; their outcomes share the pass's start and end.
        """
        engine = self
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
