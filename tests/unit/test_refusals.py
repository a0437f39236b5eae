"""The refusals no client can provoke through the façade (the decider's invariants),
each through the decider itself; every other refusal is answered over HTTP in
tests/integration/test_refusals.py, and the stale-writer 409 in tests/unit/test_core.py."""

from __future__ import annotations

import dataclasses

import pytest

from batches.domain import decider as d
from batches.domain.errors import DomainError
from tests.unit.helpers import T0, create, in_status, outcome


def refusal(state: d.BatchState | None, command: d.Command) -> tuple[int, str | None, str]:
    with pytest.raises(DomainError) as info:
        d.decide(state, command)
    return info.value.http_status, info.value.code, info.value.message


def test_an_unknown_completion_window_past_the_wire_model() -> None:
    """The façade's pydantic model refuses it first; the decider holds the rule too."""
    command = dataclasses.replace(_create_args(), completion_window="1h")
    assert refusal(None, command) == (
        400,
        "invalid_value",
        "Invalid completion_window: 1h. Supported values: '24h'.",
    )


def test_a_second_create_of_one_batch() -> None:
    run = create()
    assert refusal(run.s, _create_args()) == (
        409,
        "batch_exists",
        f"Batch {run.s.id} already exists.",
    )


def test_a_command_for_a_batch_with_no_events() -> None:
    assert refusal(None, d.Cancel(at=T0)) == (404, "not_found", "No such batch.")


def test_an_outcome_for_a_line_the_batch_lacks() -> None:
    run = in_status("in_progress", total=2)
    assert refusal(run.s, d.RecordOutcomes([outcome(5)])) == (
        400,
        "invalid_request",
        f"Outcome line 5 is outside 1..2 of batch {run.s.id}.",
    )


def test_finalizing_with_lines_left() -> None:
    run = in_status("in_progress", total=2)
    assert refusal(run.s, d.StartFinalizing(at=T0 + 9)) == (
        409,
        "invalid_batch_status",
        f"Cannot finalize batch {run.s.id}: 2 requests have no outcome.",
    )


def test_expiring_before_the_window_ends() -> None:
    run = in_status("in_progress")
    early = d.Expire(at=run.s.expires_at - 1, output_file_id=None, error_file_id=None)
    assert refusal(run.s, early) == (
        409,
        "invalid_batch_status",
        f"Cannot expire batch {run.s.id} before its expires_at ({run.s.expires_at}).",
    )


def _create_args() -> d.CreateBatch:
    return d.CreateBatch(
        batch_id="batch_" + "a" * 24,
        tenant="default",
        input_file_id="file-" + "b" * 24,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
        output_expires_after=None,
        idempotency_key=None,
        at=T0,
    )
