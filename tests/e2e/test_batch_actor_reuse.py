"""Batch actors are kept between batches (actors/runners.py): batches that run one
after another run in the same Ray worker process, not in a new one each."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

from batches.testing import FakeUpstream, Service

pytestmark = pytest.mark.e2e


def run_one(svc: Service, client: object, prefix: str) -> set[int]:
    """Run a 5-line batch to completion; the batch actor processes alive then."""
    source = upload(client, chat_lines(5, prefix=prefix))
    batch = client.batches.create(  # type: ignore[attr-defined]
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    lines = read_lines(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in lines) == [f"{prefix}-{i}" for i in range(5)]
    return set(svc.pids("BatchActor"))


def test_batches_one_after_another_reuse_the_actor_process(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    env = {"BATCHLOG_UPSTREAM": upstream.url, **FAST_RETRIES}
    with Service(tmp_path / "data", env) as svc:
        client = svc.client()
        first = run_one(svc, client, "a")
        run_one(svc, client, "b")
        third = run_one(svc, client, "c")
        # One actor per batch (killed when its batch ends) would leave no process of
        # the first batch alive by the end of the third.
        assert first & third, (first, third)
