"""Bulk work yields the CPU to API answers (actors/priority.py): in a running deployment,
every thread of the upstream executor and of the batch actors is at least
BATCHLOG_BULK_NICE (5) steps nicer than `serve`; the coordinator is not."""

from __future__ import annotations

import os

import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def thread_nice(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_batch_actors_and_executors_are_nicer_than_serve(
    service: Service, upstream: FakeUpstream
) -> None:
    client = service.client()
    batch = client.batches.create(
        input_file_id=upload(client, chat_lines(5, prefix="nice")).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    wait_for(client, batch.id, {"completed"})
    assert service.proc is not None
    base = os.getpriority(os.PRIO_PROCESS, service.proc.pid)
    bulk = service.pids("ray::UpstreamExecutor") + service.pids("BatchActor")
    assert len(bulk) >= 2, bulk  # the executor and the (kept) batch actor
    # (Ray starts a few threads of its own nicer still: 5 more makes them 19.)
    for pid in bulk:
        assert min(thread_nice(pid)) == min(19, base + 5), (pid, thread_nice(pid))
    for pid in service.pids("ray::Coordinator"):
        assert min(thread_nice(pid)) == base
