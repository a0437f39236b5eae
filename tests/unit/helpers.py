"""Builders shared by the unit tests: batches in every status, outcomes."""

from __future__ import annotations

from typing import Any

from batches.domain import decider as d

T0 = 1_700_000_000
ENDPOINT = "/v1/chat/completions"


def outcome(
    line: int, *, ok: bool = True, tokens: tuple[int, int] = (3, 2), custom_id: str | None = None
) -> dict[str, Any]:
    prompt, completion = tokens
    body = {
        "id": f"chatcmpl-{line}",
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 1},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    return {
        "line": line,
        "custom_id": custom_id or f"req-{line}",
        "request_id": f"batch_req_{line:024x}",
        "status_code": 200 if ok else 500,
        "body": body if ok else {"error": {"message": "boom"}},
        "error": None,
        "attempts": 1,
        "latency_ms": 12.5,
        "started_at": T0 + 1.0,
        "finished_at": T0 + 1.5,
    }


class Run:
    """Drives a batch through decide + evolve, like the actor does (minus I/O)."""

    def __init__(self) -> None:
        self.state: d.BatchState | None = d.initial_state()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def do(self, command: d.Command) -> list[tuple[str, dict[str, Any]]]:
        new = d.decide(self.state, command)
        for event_type, data in new:
            self.state = d.evolve(self.state, event_type, data)
        self.events.extend(new)
        return new

    @property
    def s(self) -> d.BatchState:
        assert self.state is not None
        return self.state


def create(run: Run | None = None, **overrides: Any) -> Run:
    run = run or Run()
    args: dict[str, Any] = {
        "batch_id": "batch_" + "a" * 24,
        "tenant": "default",
        "input_file_id": "file-" + "b" * 24,
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "metadata": {"k": "v"},
        "output_expires_after": None,
        "idempotency_key": None,
        "at": T0,
    }
    args.update(overrides)
    run.do(d.CreateBatch(**args))
    return run


def in_status(status: str, total: int = 3) -> Run:
    """A batch in ``status``; 'in_progress' and 'cancelling' have no outcomes yet."""
    run = create()
    if status == "validating":
        return run
    if status == "failed":
        run.do(
            d.RecordValidation(
                at=T0 + 1,
                errors=[{"code": "invalid_url", "message": "bad", "param": "url", "line": 2}],
            )
        )
        return run
    run.do(d.RecordValidation(at=T0 + 1, model="m", total=total))
    if status == "in_progress":
        return run
    if status in ("cancelling", "cancelled"):
        run.do(d.Cancel(at=T0 + 2))
        if status == "cancelled":
            run.do(d.FinishCancel(at=T0 + 3, output_file_id=None, error_file_id="file-err"))
        return run
    if status == "expired":
        run.do(d.Expire(at=run.s.expires_at, output_file_id=None, error_file_id="file-err"))
        return run
    run.do(d.RecordOutcomes([outcome(i) for i in range(1, total + 1)]))
    run.do(d.StartFinalizing(at=T0 + 4))
    if status == "completed":
        run.do(d.Complete(at=T0 + 5, output_file_id="file-out", error_file_id=None))
    return run


ALL_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)
