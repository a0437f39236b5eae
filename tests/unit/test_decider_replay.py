"""Replay is deterministic: full fold == snapshot at any cut + tail == the live state."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from batches.domain import decider as d
from batches.domain.errors import DomainError

from .helpers import T0, Run, create, outcome

_outcome = st.builds(
    lambda line, ok, p, c: outcome(line, ok=ok, tokens=(p, c)),
    st.integers(1, 6),
    st.booleans(),
    st.integers(0, 50),
    st.integers(0, 50),
)
_step = st.one_of(
    st.tuples(st.just("validate"), st.integers(1, 6)),
    st.tuples(st.just("reject"), st.none()),
    st.tuples(st.just("outcomes"), st.lists(_outcome, max_size=4)),
    st.tuples(st.just("finalize"), st.none()),
    st.tuples(st.just("complete"), st.booleans()),
    st.tuples(st.just("cancel"), st.none()),
    st.tuples(st.just("finish_cancel"), st.none()),
    st.tuples(st.just("expire"), st.booleans()),
)


def _command(kind: str, arg: Any, at: int, run: Run) -> d.Command:
    if kind == "validate":
        return d.RecordValidation(at=at, model="m", total=arg)
    if kind == "reject":
        return d.RecordValidation(
            at=at, errors=[{"code": "invalid_url", "message": "x", "line": 1}]
        )
    if kind == "outcomes":
        return d.RecordOutcomes(arg)
    if kind == "finalize":
        return d.StartFinalizing(at=at)
    if kind == "complete":
        return d.Complete(at=at, output_file_id="file-o" if arg else None, error_file_id="file-e")
    if kind == "cancel":
        return d.Cancel(at=at)
    if kind == "finish_cancel":
        return d.FinishCancel(at=at, output_file_id=None, error_file_id="file-e")
    late = run.s.expires_at if arg else at
    return d.Expire(at=late, output_file_id=None, error_file_id="file-e")


def _legal_run(steps: list[tuple[str, Any]]) -> Run:
    run = create()
    for i, (kind, arg) in enumerate(steps, start=1):
        # A refused command produces no events: the sequence stays legal.
        with contextlib.suppress(DomainError):
            run.do(_command(kind, arg, T0 + i, run))
    return run


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=25), data=st.data())
def test_snapshot_plus_tail_equals_full_replay(steps: list[tuple[str, Any]], data: Any) -> None:
    run = _legal_run(steps)
    full = d.fold(run.events)
    assert full == run.s  # live == replay
    cut = data.draw(st.integers(1, len(run.events)), label="cut")
    snapshot = orjson.loads(orjson.dumps(d.state_to_dict(d.fold(run.events[:cut]))))
    assert d.fold(run.events[cut:], d.state_from_dict(snapshot)) == full


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=25))
def test_counts_always_add_up(steps: list[tuple[str, Any]]) -> None:
    s = _legal_run(steps).s
    assert s.version == len(_legal_run(steps).events)
    if s.status in ("validating", "in_progress", "cancelling", "finalizing", "failed"):
        assert s.completed + s.failed == d.done_count(s) <= s.total
    if s.status in ("completed", "cancelled", "expired"):
        assert s.completed + s.failed == s.total  # every line ended in exactly one outcome
    wire = d.to_wire(s).model_dump(mode="json")
    assert wire["status"] == s.status
