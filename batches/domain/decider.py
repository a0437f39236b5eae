"""The batch status machine as a Decider: ``decide(state, command) -> events`` and
``evolve(state, event) -> state``, both pure (see docs/status-machine.md).

State is the fold of ``evolve`` over a batch's stream. Timestamps and ids come from
commands and events, never from the clock, so replay is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from batches.domain import events as ev
from batches.domain import messages as msg
from batches.domain import refusals
from batches.domain.errors import InvalidTransition
from batches.domain.wire import (
    COMPLETION_WINDOWS,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    InputTokensDetails,
    OutputTokensDetails,
    RequestCounts,
    Usage,
)

ACTIVE_STATUSES: frozenset[str] = frozenset(
    {"validating", "in_progress", "finalizing", "cancelling"}
)
TERMINAL_STATUSES: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})
SNAPSHOT_SCHEMA = 1


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class BatchState:
    """Everything the wire Batch needs plus the bookkeeping that drives decisions."""

    id: str
    tenant: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    status: str = "validating"
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None
    idempotency_key: str | None = None
    model: str | None = None
    errors: tuple[dict[str, Any], ...] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Bit i set = line i (1-based) has an outcome. An int, not a set: immutable, so
    # evolve stays pure, and one OR per event costs O(total/64) words.
    done: int = 0
    version: int = 0  # number of events folded: the stream version this state reflects


def initial_state() -> BatchState | None:
    """No batch yet: only ``CreateBatch`` is allowed."""
    return None


def is_done(state: BatchState, line: int) -> bool:
    return line > 0 and (state.done >> line) & 1 == 1


def done_count(state: BatchState) -> int:
    return state.done.bit_count()


def unfinished_count(state: BatchState) -> int:
    """Lines that have no outcome yet."""
    return max(state.total - done_count(state), 0)


# --- evolve ---------------------------------------------------------------------------


def _created(state: BatchState | None, d: Mapping[str, Any]) -> BatchState:
    if state is not None:
        raise ValueError(f"BatchCreated on an existing batch {state.id}")
    return BatchState(
        id=d["batch_id"],
        tenant=d["tenant"],
        endpoint=d["endpoint"],
        input_file_id=d["input_file_id"],
        completion_window=d["completion_window"],
        created_at=int(d["created_at"]),
        expires_at=int(d["expires_at"]),
        metadata=dict(d["metadata"]) if d.get("metadata") is not None else None,
        output_expires_after=(
            dict(d["output_expires_after"]) if d.get("output_expires_after") is not None else None
        ),
        idempotency_key=d.get("idempotency_key"),
    )


Changes: TypeAlias = dict[str, Any]


def _validated(s: BatchState, d: Mapping[str, Any]) -> Changes:
    return {
        "status": "in_progress",
        "model": d.get("model"),
        "total": int(d["total"]),
        "in_progress_at": d["at"],
    }


def _validation_failed(s: BatchState, d: Mapping[str, Any]) -> Changes:
    # Bounded here too, so a log written before the bound existed replays small.
    errors = tuple(msg.bound_errors(d["errors"]))
    return {"status": "failed", "errors": errors, "failed_at": d["at"]}


def _outcome(s: BatchState, d: Mapping[str, Any], *, success: bool) -> Changes:
    line = int(d["line"])
    if is_done(s, line):
        return {}  # a duplicate delivery never counts twice, even if it reached the log
    usage = d.get("usage") or {}
    return {
        "done": s.done | (1 << line),
        "completed": s.completed + (1 if success else 0),
        "failed": s.failed + (0 if success else 1),
        "input_tokens": s.input_tokens + int(usage.get("input_tokens", 0)),
        "output_tokens": s.output_tokens + int(usage.get("output_tokens", 0)),
        "total_tokens": s.total_tokens + int(usage.get("total_tokens", 0)),
        "cached_tokens": s.cached_tokens + int(usage.get("cached_tokens", 0)),
        "reasoning_tokens": s.reasoning_tokens + int(usage.get("reasoning_tokens", 0)),
    }


def _finalizing(s: BatchState, d: Mapping[str, Any]) -> Changes:
    return {"status": "finalizing", "finalizing_at": d["at"]}


def _completed(s: BatchState, d: Mapping[str, Any]) -> Changes:
    return {
        "status": "completed",
        "completed_at": d["at"],
        "output_file_id": d.get("output_file_id"),
        "error_file_id": d.get("error_file_id"),
    }


def _cancel_requested(s: BatchState, d: Mapping[str, Any]) -> Changes:
    return {"status": "cancelling", "cancelling_at": d["at"]}


def _ended_early(s: BatchState, d: Mapping[str, Any], *, status: str) -> Changes:
    # Lines that never ran are reported in the error file, so they count as failed.
    return {
        "status": status,
        f"{status}_at": d["at"],
        "output_file_id": d.get("output_file_id"),
        "error_file_id": d.get("error_file_id"),
        "failed": s.failed + int(d.get("unfinished", 0)),
    }


def _failed(s: BatchState, d: Mapping[str, Any]) -> Changes:
    # Lines without an outcome count as failed; their results stay in the log.
    return {
        "status": "failed",
        "failed_at": d["at"],
        "errors": tuple(d["errors"]),
        "failed": s.failed + int(d.get("unfinished", 0)),
    }


_Evolver: TypeAlias = Callable[[BatchState, Mapping[str, Any]], Changes]
_EVOLVERS: dict[str, _Evolver] = {
    ev.BATCH_VALIDATED: _validated,
    ev.BATCH_VALIDATION_FAILED: _validation_failed,
    ev.REQUEST_SUCCEEDED: lambda s, d: _outcome(s, d, success=True),
    ev.REQUEST_FAILED: lambda s, d: _outcome(s, d, success=False),
    ev.BATCH_FINALIZING: _finalizing,
    ev.BATCH_COMPLETED: _completed,
    ev.BATCH_CANCEL_REQUESTED: _cancel_requested,
    ev.BATCH_CANCELLED: lambda s, d: _ended_early(s, d, status="cancelled"),
    ev.BATCH_EXPIRED: lambda s, d: _ended_early(s, d, status="expired"),
    ev.BATCH_FAILED: _failed,
}


def _replace(state: BatchState, changes: Changes) -> BatchState:
    # dataclasses.replace re-runs the frozen __init__ (one object.__setattr__ per field):
    # about 30 us a call, which dominated replaying a 50k-line batch. Copying the
    # instance dict gives the same new immutable value in about 1 us.
    new = object.__new__(BatchState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def evolve(state: BatchState | None, event_type: str, data: Mapping[str, Any]) -> BatchState:
    """Apply one event. Unknown event types only bump the version (forward compatible)."""
    if event_type == ev.BATCH_CREATED:
        return _replace(_created(state, data), {"version": 1})
    if state is None:
        raise ValueError(f"{event_type} before BatchCreated")
    step = _EVOLVERS.get(event_type)
    changes = step(state, data) if step is not None else {}
    changes["version"] = state.version + 1
    return _replace(state, changes)


def fold(
    events: Iterable[tuple[str, Mapping[str, Any]]], state: BatchState | None = None
) -> BatchState:
    """The state after ``events``, starting from ``state`` (a snapshot) or from nothing."""
    current = state
    for event_type, data in events:
        current = evolve(current, event_type, data)
    if current is None:
        raise ValueError("no events to fold")
    return current


# --- snapshots ------------------------------------------------------------------------


def state_to_dict(state: BatchState) -> dict[str, Any]:
    """A JSON-ready snapshot; the done bitmask travels as a hex string."""
    out = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    out["done"] = format(state.done, "x")
    out["errors"] = [dict(e) for e in state.errors] if state.errors is not None else None
    out["schema"] = SNAPSHOT_SCHEMA
    return out


def state_from_dict(data: Mapping[str, Any]) -> BatchState:
    names = {f.name for f in dataclasses.fields(BatchState)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["done"] = int(str(data.get("done") or "0"), 16)
    if kwargs.get("errors") is not None:
        kwargs["errors"] = tuple(dict(e) for e in kwargs["errors"])
    return BatchState(**kwargs)


# --- the wire view --------------------------------------------------------------------


def to_wire(state: BatchState) -> Batch:
    errors = (
        BatchErrors(data=[BatchError(**e) for e in state.errors])
        if state.errors is not None
        else None
    )
    return Batch(
        id=state.id,
        endpoint=state.endpoint,
        input_file_id=state.input_file_id,
        completion_window=state.completion_window,
        status=cast(BatchStatus, state.status),
        created_at=state.created_at,
        model=state.model,
        errors=errors,
        output_file_id=state.output_file_id,
        error_file_id=state.error_file_id,
        in_progress_at=state.in_progress_at,
        expires_at=state.expires_at,
        finalizing_at=state.finalizing_at,
        completed_at=state.completed_at,
        failed_at=state.failed_at,
        expired_at=state.expired_at,
        cancelling_at=state.cancelling_at,
        cancelled_at=state.cancelled_at,
        request_counts=RequestCounts(
            total=state.total, completed=state.completed, failed=state.failed
        ),
        usage=Usage(
            input_tokens=state.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=state.cached_tokens),
            output_tokens=state.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=state.reasoning_tokens),
            total_tokens=state.total_tokens,
        ),
        metadata=state.metadata,
    )


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateBatch:
    batch_id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: dict[str, Any] | None
    idempotency_key: str | None
    at: int


@dataclass(frozen=True, slots=True)
class RecordValidation:
    at: int
    model: str | None = None
    total: int = 0
    errors: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class RecordOutcomes:
    outcomes: Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class StartFinalizing:
    at: int


@dataclass(frozen=True, slots=True)
class Complete:
    at: int
    output_file_id: str | None
    error_file_id: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    at: int


@dataclass(frozen=True, slots=True)
class FinishCancel:
    at: int
    output_file_id: str | None
    error_file_id: str | None


@dataclass(frozen=True, slots=True)
class Expire:
    at: int
    output_file_id: str | None
    error_file_id: str | None


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The batch's actor crashed too often: fail the batch with this reason."""

    at: int
    message: str


Command: TypeAlias = (
    CreateBatch
    | RecordValidation
    | RecordOutcomes
    | StartFinalizing
    | Complete
    | Cancel
    | FinishCancel
    | Expire
    | GiveUp
)


# --- decide ---------------------------------------------------------------------------


def _refuse(verb: str, state: BatchState) -> InvalidTransition:
    return refusals.cannot_transition(verb, state.status)


def _create(state: BatchState | None, c: CreateBatch) -> list[ev.Event]:
    if state is not None:
        raise refusals.batch_exists(state.id)
    window = COMPLETION_WINDOWS.get(c.completion_window)
    if window is None:
        raise refusals.invalid_create_value(
            "completion_window", c.completion_window, list(COMPLETION_WINDOWS)
        )
    data: ev.BatchCreatedData = {
        "batch_id": c.batch_id,
        "tenant": c.tenant,
        "input_file_id": c.input_file_id,
        "endpoint": c.endpoint,
        "completion_window": c.completion_window,
        "metadata": dict(c.metadata) if c.metadata is not None else None,
        "output_expires_after": (
            dict(c.output_expires_after) if c.output_expires_after is not None else None
        ),
        "idempotency_key": c.idempotency_key,
        "created_at": c.at,
        "expires_at": c.at + window,
    }
    return [(ev.BATCH_CREATED, dict(data))]


def _record_validation(s: BatchState, c: RecordValidation) -> list[ev.Event]:
    if s.status == "cancelling":
        return []  # cancel won the race; the validation result no longer matters
    if s.status != "validating":
        raise _refuse("record validation for", s)
    if c.errors:
        errors = msg.bound_errors(c.errors)
        return [(ev.BATCH_VALIDATION_FAILED, {"errors": errors, "at": c.at})]
    return [(ev.BATCH_VALIDATED, {"model": c.model, "total": c.total, "at": c.at})]


def _record_outcomes(s: BatchState, c: RecordOutcomes) -> list[ev.Event]:
    # Results are kept while running or cancelling (in-flight work finishing after a
    # cancel). Anywhere else only redeliveries of recorded lines are tolerated, as a no-op.
    if s.status not in ("in_progress", "cancelling"):
        if all(_is_recorded(s, o.get("line")) for o in c.outcomes):
            return []
        raise _refuse("record outcomes for", s)
    out: list[ev.Event] = []
    seen = s.done  # also dedupes repeats within this one command
    for outcome in c.outcomes:
        line = outcome.get("line")
        if isinstance(line, bool) or not isinstance(line, int) or not 1 <= line <= s.total:
            raise refusals.outcome_line_out_of_range(line, s.total, s.id)
        if (seen >> line) & 1:
            continue  # at-least-once delivery: this line already has its outcome
        seen |= 1 << line
        out.append(ev.outcome_event(s.endpoint, outcome))
    return out


def _is_recorded(s: BatchState, line: Any) -> bool:
    return isinstance(line, int) and not isinstance(line, bool) and is_done(s, line)


def _start_finalizing(s: BatchState, c: StartFinalizing) -> list[ev.Event]:
    if s.status != "in_progress":
        raise _refuse("finalize", s)
    left = unfinished_count(s)
    if left:
        raise refusals.requests_without_outcome(s.id, left)
    return [(ev.BATCH_FINALIZING, {"at": c.at})]


def _complete(s: BatchState, c: Complete) -> list[ev.Event]:
    if s.status != "finalizing":
        raise _refuse("complete", s)
    data = {"at": c.at, "output_file_id": c.output_file_id, "error_file_id": c.error_file_id}
    return [(ev.BATCH_COMPLETED, data)]


def _cancel(s: BatchState, c: Cancel) -> list[ev.Event]:
    if s.status in ("cancelling", "cancelled"):
        return []  # cancelling twice returns the batch unchanged
    if s.status not in ("validating", "in_progress"):
        raise _refuse("cancel", s)
    return [(ev.BATCH_CANCEL_REQUESTED, {"at": c.at})]


def _finish_cancel(s: BatchState, c: FinishCancel) -> list[ev.Event]:
    if s.status != "cancelling":
        raise _refuse("finish cancelling", s)
    data = {
        "at": c.at,
        "output_file_id": c.output_file_id,
        "error_file_id": c.error_file_id,
        "unfinished": unfinished_count(s),
    }
    return [(ev.BATCH_CANCELLED, data)]


def _expire(s: BatchState, c: Expire) -> list[ev.Event]:
    if s.status not in ("validating", "in_progress"):
        raise _refuse("expire", s)
    if c.at < s.expires_at:
        raise refusals.not_yet_expired(s.id, s.expires_at)
    data = {
        "at": c.at,
        "output_file_id": c.output_file_id,
        "error_file_id": c.error_file_id,
        "unfinished": unfinished_count(s),
    }
    return [(ev.BATCH_EXPIRED, data)]


def _give_up(s: BatchState, c: GiveUp) -> list[ev.Event]:
    if is_terminal(s.status):
        return []  # it ended after all
    error = msg.error("batch_crashed", c.message)
    return [(ev.BATCH_FAILED, {"at": c.at, "errors": [error], "unfinished": unfinished_count(s)})]


def decide(state: BatchState | None, command: Command) -> list[ev.Event]:
    """The events ``command`` produces from ``state``; raises a DomainError to refuse it."""
    if isinstance(command, CreateBatch):
        return _create(state, command)
    if state is None:
        raise refusals.no_such_batch()
    if isinstance(command, RecordValidation):
        return _record_validation(state, command)
    if isinstance(command, RecordOutcomes):
        return _record_outcomes(state, command)
    if isinstance(command, StartFinalizing):
        return _start_finalizing(state, command)
    if isinstance(command, Complete):
        return _complete(state, command)
    if isinstance(command, Cancel):
        return _cancel(state, command)
    if isinstance(command, FinishCancel):
        return _finish_cancel(state, command)
    if isinstance(command, Expire):
        return _expire(state, command)
    if isinstance(command, GiveUp):
        return _give_up(state, command)
    raise TypeError(f"unknown command {command!r}")
