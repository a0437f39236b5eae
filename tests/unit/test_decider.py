from __future__ import annotations

from typing import Any

import pytest

from batches.domain import decider as d
from batches.domain import events as ev
from batches.domain.errors import InvalidRequest, InvalidTransition, NotFound

from .helpers import ALL_STATUSES, ENDPOINT, T0, Run, create, in_status, outcome

REFUSED = InvalidTransition


def _commands(run: Run) -> dict[str, d.Command]:
    s = run.s
    return {
        "create": d.CreateBatch(
            "batch_x", "default", "file-x", ENDPOINT, "24h", None, None, None, T0
        ),
        "validate": d.RecordValidation(at=T0 + 9, model="m", total=3),
        "outcomes": d.RecordOutcomes([outcome(1)]),
        "finalize": d.StartFinalizing(at=T0 + 9),
        "complete": d.Complete(at=T0 + 9, output_file_id="file-o", error_file_id=None),
        "cancel": d.Cancel(at=T0 + 9),
        "finish_cancel": d.FinishCancel(at=T0 + 9, output_file_id=None, error_file_id=None),
        "expire": d.Expire(at=s.expires_at, output_file_id=None, error_file_id=None),
    }


# status -> command -> event types produced, or the exception raised.
# in_progress/cancelling have no outcomes; finalizing/completed have every line done.
MATRIX: dict[str, dict[str, Any]] = {
    "validating": {
        "create": REFUSED, "validate": [ev.BATCH_VALIDATED], "outcomes": REFUSED,
        "finalize": REFUSED, "complete": REFUSED, "cancel": [ev.BATCH_CANCEL_REQUESTED],
        "finish_cancel": REFUSED, "expire": [ev.BATCH_EXPIRED],
    },
    "in_progress": {
        "create": REFUSED, "validate": REFUSED, "outcomes": [ev.REQUEST_SUCCEEDED],
        "finalize": REFUSED, "complete": REFUSED, "cancel": [ev.BATCH_CANCEL_REQUESTED],
        "finish_cancel": REFUSED, "expire": [ev.BATCH_EXPIRED],
    },
    "cancelling": {
        "create": REFUSED, "validate": [], "outcomes": [ev.REQUEST_SUCCEEDED],
        "finalize": REFUSED, "complete": REFUSED, "cancel": [],
        "finish_cancel": [ev.BATCH_CANCELLED], "expire": REFUSED,
    },
    "finalizing": {
        "create": REFUSED, "validate": REFUSED, "outcomes": [],
        "finalize": REFUSED, "complete": [ev.BATCH_COMPLETED], "cancel": REFUSED,
        "finish_cancel": REFUSED, "expire": REFUSED,
    },
    "completed": {
        "create": REFUSED, "validate": REFUSED, "outcomes": [],
        "finalize": REFUSED, "complete": REFUSED, "cancel": REFUSED,
        "finish_cancel": REFUSED, "expire": REFUSED,
    },
    "failed": {
        "create": REFUSED, "validate": REFUSED, "outcomes": REFUSED,
        "finalize": REFUSED, "complete": REFUSED, "cancel": REFUSED,
        "finish_cancel": REFUSED, "expire": REFUSED,
    },
    "expired": {
        "create": REFUSED, "validate": REFUSED, "outcomes": REFUSED,
        "finalize": REFUSED, "complete": REFUSED, "cancel": REFUSED,
        "finish_cancel": REFUSED, "expire": REFUSED,
    },
    "cancelled": {
        "create": REFUSED, "validate": REFUSED, "outcomes": REFUSED,
        "finalize": REFUSED, "complete": REFUSED, "cancel": [],
        "finish_cancel": REFUSED, "expire": REFUSED,
    },
}  # fmt: skip


def test_matrix_covers_every_status_and_command() -> None:
    assert set(MATRIX) == set(ALL_STATUSES)
    for row in MATRIX.values():
        assert set(row) == set(_commands(in_status("validating")))


@pytest.mark.parametrize("status", ALL_STATUSES)
@pytest.mark.parametrize(
    "name",
    ["create", "validate", "outcomes", "finalize", "complete", "cancel", "finish_cancel", "expire"],
)
def test_transition_matrix(status: str, name: str) -> None:
    run = in_status(status)
    assert run.s.status == status
    before = run.s
    expected = MATRIX[status][name]
    command = _commands(run)[name]
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            d.decide(run.s, command)
        assert isinstance(info.value, InvalidTransition) and info.value.http_status == 409
    else:
        assert [t for t, _ in d.decide(run.s, command)] == expected
    assert run.s == before  # decide never changes state


def test_commands_on_missing_batch_are_not_found() -> None:
    run = create()
    for name, command in _commands(run).items():
        if name == "create":
            assert [t for t, _ in d.decide(None, command)] == [ev.BATCH_CREATED]
        else:
            with pytest.raises(NotFound):
                d.decide(None, command)


def test_create_sets_expiry_and_fields() -> None:
    run = create(metadata={"a": "1"}, idempotency_key="k1")
    ((event_type, data),) = run.events
    assert event_type == ev.BATCH_CREATED
    assert data["expires_at"] == T0 + 86_400
    s = run.s
    assert (s.status, s.created_at, s.expires_at, s.version) == ("validating", T0, T0 + 86_400, 1)
    assert (s.metadata, s.idempotency_key, s.tenant) == ({"a": "1"}, "k1", "default")
    assert d.initial_state() is None


def test_create_refuses_unknown_window() -> None:
    with pytest.raises(InvalidRequest):
        create(completion_window="48h")


def test_validation_sets_total_and_in_progress() -> None:
    run = in_status("in_progress", total=5)
    s = run.s
    assert (s.status, s.total, s.model, s.in_progress_at) == ("in_progress", 5, "m", T0 + 1)
    assert d.to_wire(s).model_dump()["request_counts"] == {"total": 5, "completed": 0, "failed": 0}


def test_validation_failure_sets_errors_and_failed() -> None:
    s = in_status("failed").s
    assert (s.status, s.failed_at) == ("failed", T0 + 1)
    wire = d.to_wire(s).model_dump(mode="json")
    assert wire["errors"] == {
        "object": "list",
        "data": [{"code": "invalid_url", "message": "bad", "param": "url", "line": 2}],
    }
    assert d.is_terminal(s.status)


def test_cancel_while_validating_ignores_validation_then_cancels() -> None:
    run = create()
    run.do(d.Cancel(at=T0 + 1))
    assert run.s.status == "cancelling"
    assert run.do(d.RecordValidation(at=T0 + 2, model="m", total=3)) == []
    assert run.do(d.RecordValidation(at=T0 + 2, errors=[{"code": "x", "message": "y"}])) == []
    run.do(d.FinishCancel(at=T0 + 3, output_file_id=None, error_file_id=None))
    s = run.s
    assert (s.status, s.cancelling_at, s.cancelled_at, s.total, s.failed) == (
        "cancelled", T0 + 1, T0 + 3, 0, 0,
    )  # fmt: skip


def test_cancel_of_terminal_batch_message() -> None:
    for status in ("completed", "failed", "expired", "finalizing"):
        with pytest.raises(InvalidTransition) as info:
            d.decide(in_status(status).s, d.Cancel(at=T0 + 99))
        assert info.value.message == f"Cannot cancel a batch with status '{status}'."
        assert info.value.http_status == 409


def test_cancel_when_already_cancelling_or_cancelled_is_unchanged() -> None:
    for status in ("cancelling", "cancelled"):
        run = in_status(status)
        before = run.s
        assert run.do(d.Cancel(at=T0 + 50)) == []
        assert run.s == before


def test_outcomes_count_usage_and_dedupe() -> None:
    run = in_status("in_progress", total=4)
    events = run.do(
        d.RecordOutcomes([outcome(1), outcome(2, ok=False), outcome(1), outcome(3, tokens=(10, 5))])
    )
    assert [t for t, _ in events] == [ev.REQUEST_SUCCEEDED, ev.REQUEST_FAILED, ev.REQUEST_SUCCEEDED]
    # A redelivered chunk changes nothing.
    assert run.do(d.RecordOutcomes([outcome(1), outcome(3)])) == []
    s = run.s
    assert (s.completed, s.failed, d.done_count(s), d.unfinished_count(s)) == (2, 1, 3, 1)
    assert d.is_done(s, 1) and d.is_done(s, 2) and d.is_done(s, 3) and not d.is_done(s, 4)
    usage = d.to_wire(s).usage
    assert usage is not None
    # line 2 failed: its body has no usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (13, 7, 20)
    assert usage.input_tokens_details.cached_tokens == 2


def test_outcome_data_shape() -> None:
    ((event_type, data),) = d.decide(in_status("in_progress").s, d.RecordOutcomes([outcome(2)]))
    assert event_type == ev.REQUEST_SUCCEEDED
    assert set(data) == {
        "line", "custom_id", "request_id", "status_code", "body", "error", "attempts",
        "latency_ms", "started_at", "finished_at", "usage",
    }  # fmt: skip
    assert data["usage"] == {
        "input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
        "cached_tokens": 1, "reasoning_tokens": 0,
    }  # fmt: skip


def test_transport_failure_is_a_failure() -> None:
    o = outcome(1) | {
        "status_code": None,
        "body": None,
        "error": {"code": "timeout", "message": "t"},
    }
    ((event_type, data),) = d.decide(in_status("in_progress").s, d.RecordOutcomes([o]))
    assert event_type == ev.REQUEST_FAILED
    assert data["error"] == {"code": "timeout", "message": "t"}


def test_2xx_without_body_is_a_failure() -> None:
    o = outcome(1) | {"body": None}
    ((event_type, _),) = d.decide(in_status("in_progress").s, d.RecordOutcomes([o]))
    assert event_type == ev.REQUEST_FAILED


@pytest.mark.parametrize("line", [0, 4, -1, "1", None, True])
def test_outcome_line_out_of_range_is_invalid(line: Any) -> None:
    with pytest.raises(InvalidRequest):
        d.decide(in_status("in_progress").s, d.RecordOutcomes([outcome(1) | {"line": line}]))


def test_evolve_ignores_a_duplicate_that_reached_the_log() -> None:
    run = in_status("in_progress")
    (event,) = run.do(d.RecordOutcomes([outcome(1)]))
    again = d.evolve(run.s, *event)
    assert (again.completed, again.failed, again.input_tokens) == (1, 0, 3)
    assert again.version == run.s.version + 1


def test_finalize_only_when_every_line_done_then_complete() -> None:
    run = in_status("in_progress", total=2)
    run.do(d.RecordOutcomes([outcome(1)]))
    with pytest.raises(InvalidTransition):
        d.decide(run.s, d.StartFinalizing(at=T0 + 3))
    run.do(d.RecordOutcomes([outcome(2, ok=False)]))
    run.do(d.StartFinalizing(at=T0 + 3))
    assert (run.s.status, run.s.finalizing_at) == ("finalizing", T0 + 3)
    run.do(d.Complete(at=T0 + 4, output_file_id="file-o", error_file_id="file-e"))
    s = run.s
    assert (s.status, s.completed_at, s.output_file_id, s.error_file_id) == (
        "completed", T0 + 4, "file-o", "file-e",
    )  # fmt: skip
    assert (s.completed, s.failed, s.total) == (1, 1, 2)


def test_all_failed_batch_completes_without_output_file() -> None:
    run = in_status("in_progress", total=2)
    run.do(d.RecordOutcomes([outcome(1, ok=False), outcome(2, ok=False)]))
    run.do(d.StartFinalizing(at=T0 + 3))
    run.do(d.Complete(at=T0 + 4, output_file_id=None, error_file_id="file-e"))
    wire = d.to_wire(run.s)
    assert (wire.status, wire.output_file_id, wire.error_file_id) == ("completed", None, "file-e")
    assert wire.request_counts is not None and wire.request_counts.failed == 2


def test_cancel_keeps_in_flight_results_and_fails_the_rest() -> None:
    run = in_status("in_progress", total=5)
    run.do(d.RecordOutcomes([outcome(1)]))
    run.do(d.Cancel(at=T0 + 3))
    run.do(d.RecordOutcomes([outcome(2), outcome(3, ok=False)]))  # in flight at cancel time
    ((_, data),) = run.do(
        d.FinishCancel(at=T0 + 4, output_file_id="file-o", error_file_id="file-e")
    )
    assert data["unfinished"] == 2
    s = run.s
    assert (s.status, s.cancelling_at, s.cancelled_at) == ("cancelled", T0 + 3, T0 + 4)
    assert (s.completed, s.failed, s.total) == (2, 3, 5)
    with pytest.raises(InvalidTransition):
        d.decide(s, d.RecordOutcomes([outcome(4)]))


def test_expiry_only_after_expires_at() -> None:
    run = in_status("in_progress", total=3)
    run.do(d.RecordOutcomes([outcome(1)]))
    expires_at = run.s.expires_at
    with pytest.raises(InvalidTransition):
        d.decide(run.s, d.Expire(at=expires_at - 1, output_file_id=None, error_file_id=None))
    ((_, data),) = run.do(d.Expire(at=expires_at, output_file_id="file-o", error_file_id="file-e"))
    assert data["unfinished"] == 2
    s = run.s
    assert (s.status, s.expired_at, s.completed, s.failed) == ("expired", expires_at, 1, 2)


def test_expiry_while_validating() -> None:
    run = create()
    run.do(d.Expire(at=T0 + 86_400, output_file_id=None, error_file_id=None))
    assert (run.s.status, run.s.failed, run.s.total) == ("expired", 0, 0)


def test_every_status_timestamp_lands_on_the_wire() -> None:
    checks = {
        "in_progress": "in_progress_at", "finalizing": "finalizing_at",
        "completed": "completed_at", "failed": "failed_at", "cancelling": "cancelling_at",
        "cancelled": "cancelled_at", "expired": "expired_at",
    }  # fmt: skip
    for status, field_name in checks.items():
        wire = d.to_wire(in_status(status).s).model_dump(mode="json")
        assert wire["status"] == status
        assert isinstance(wire[field_name], int), (status, field_name)


def test_version_counts_events_and_unknown_events_are_skipped() -> None:
    run = in_status("in_progress")
    assert run.s.version == 2
    later = d.evolve(run.s, "SomethingNew", {"x": 1})
    assert later.version == 3 and d.state_to_dict(later) | {"version": 2} == d.state_to_dict(run.s)


def test_evolve_refuses_a_corrupt_stream() -> None:
    with pytest.raises(ValueError):
        d.evolve(None, ev.BATCH_VALIDATED, {"model": "m", "total": 1, "at": T0})
    run = create()
    with pytest.raises(ValueError):
        d.evolve(run.s, *run.events[0])
    with pytest.raises(ValueError):
        d.fold([])


def test_snapshot_round_trip_through_json() -> None:
    import orjson

    run = in_status("in_progress", total=200)
    run.do(d.RecordOutcomes([outcome(i) for i in (1, 64, 65, 200)]))
    snap = orjson.loads(orjson.dumps(d.state_to_dict(run.s)))
    assert snap["done"] == format(run.s.done, "x")
    assert d.state_from_dict(snap) == run.s
    failed = in_status("failed").s
    assert d.state_from_dict(orjson.loads(orjson.dumps(d.state_to_dict(failed)))) == failed


def test_active_and_terminal_statuses() -> None:
    assert {"validating", "in_progress", "finalizing", "cancelling"} == d.ACTIVE_STATUSES
    for status in ALL_STATUSES:
        assert d.is_terminal(status) == (status not in d.ACTIVE_STATUSES)


def test_fold_equals_live_state() -> None:
    run = in_status("completed", total=3)
    assert d.fold(run.events) == run.s
