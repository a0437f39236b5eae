"""One Ray and one load of each embedded model for all the `models` tests.

Package scope: for `pytest tests/models` that is the whole session, and in a full run
Ray is shut down once these tests are done, before other packages start their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

pytest.importorskip("llama_cpp", reason="the 'local' extra is not installed")
pytest.importorskip("onnxruntime", reason="the 'local' extra is not installed")

import ray

from actors.local import CHAT_MODEL_ID, EMBED_MODEL_ID, LocalModelPool

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="package")
def ray_namespace() -> Iterator[str]:
    """A Ray of our own (never `address="auto"`, never `ray stop`)."""
    if ray.is_initialized():  # another part of the suite started one: share it
        yield ray.get_runtime_context().namespace
        return
    namespace = f"batchlog-models-test-{uuid.uuid4().hex[:8]}"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
    )
    try:
        yield namespace
    finally:
        ray.shutdown()


@pytest.fixture(scope="package")
def pool(ray_namespace: str) -> LocalModelPool:
    """Two chat replicas and one embedding replica, loaded once for the session."""
    p = LocalModelPool(
        ray_namespace,
        chat_replicas=2,
        chat_threads=1,
        embed_replicas=1,
        embed_threads=1,
        name_prefix=f"test-model-{uuid.uuid4().hex[:6]}",
        detached=False,
    )
    health = run(p.warm_up())
    for model, replicas in health.items():
        for h in replicas:
            assert h["loaded"], (model, h)
    return p


@pytest.fixture(scope="package")
def chat_replica(pool: LocalModelPool) -> Any:
    return ray.get_actor(pool.replica_names(CHAT_MODEL_ID)[0])


@pytest.fixture(scope="package")
def embed_replica(pool: LocalModelPool) -> Any:
    return ray.get_actor(pool.replica_names(EMBED_MODEL_ID)[0])
