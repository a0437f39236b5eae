"""The batch actor's "what next" rule, as a pure function of state and time."""

from __future__ import annotations

import dataclasses

import pytest

from batches.domain.decider import BatchState
from batches.domain.progress import next_step

BASE = BatchState(
    id="b", tenant="t", endpoint="/v1/embeddings", input_file_id="f",
    completion_window="24h", created_at=0, expires_at=100,
)  # fmt: skip


def state(status: str, total: int = 2, done_lines: tuple[int, ...] = ()) -> BatchState:
    done = sum(1 << line for line in done_lines)
    return dataclasses.replace(BASE, status=status, total=total, done=done)


@pytest.mark.parametrize(
    ("s", "now", "done", "step"),
    [
        (state("validating"), 0, (), "validate"),
        (state("validating"), 0, ("validate",), None),  # could not move on: end the pass
        (state("validating"), 100, ("validate",), "expire"),
        (state("in_progress"), 0, (), "process"),
        (state("in_progress"), 0, ("process",), None),  # lines open, time left: re-admitted later
        (state("in_progress"), 100, ("process",), "expire"),
        (state("in_progress", done_lines=(1, 2)), 0, ("process",), "finalize"),
        (state("in_progress", done_lines=(1, 2)), 500, (), "finalize"),  # all done beats expiry
        (state("finalizing"), 0, (), "complete"),
        (state("cancelling"), 500, (), "finish_cancel"),
        (state("completed"), 0, (), None),
        (state("cancelled"), 0, (), None),
        (state("expired"), 0, (), None),
        (state("failed"), 0, (), None),
    ],
)
def test_next_step(s: BatchState, now: float, done: tuple[str, ...], step: str | None) -> None:
    assert next_step(s, now, done) == step
