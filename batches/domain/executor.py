"""The executor contract: what a batch actor hands an executor, and what comes back.

Every executor (the HTTP upstream, the embedded local models) takes a chunk of
``WorkItem``s and returns one ``Outcome`` per item, in the items' order, built here so
that every executor agrees on the shape. The shape is persisted: the batch decider turns
each Outcome into a ``RequestSucceeded``/``RequestFailed`` event (``events.outcome_event``).

- a success: a 2xx ``status_code`` and a JSON-object ``body``, ``error`` None;
- an HTTP failure: the upstream's ``status_code`` and ``body`` (OpenAI's error envelope);
- a transport failure (timeout, refused, retries used up, the executor broke):
  ``status_code`` None, ``body`` None and ``error`` ``{"code", "message"}``.

Pure: the caller passes the clock's readings; only the request id is drawn here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NotRequired, Protocol, TypedDict

from batches.domain.errors import error_envelope
from batches.domain.ids import new_request_id

__all__ = [
    "Executor",
    "LineError",
    "Outcome",
    "WorkItem",
    "error_envelope",
    "failed_outcomes",
    "make_outcome",
    "rejected_outcomes",
]


class WorkItem(TypedDict):
    line: int  # 1-based line of the input file
    custom_id: str
    body: dict[str, Any]


class LineError(TypedDict):
    code: str
    message: str


class Outcome(TypedDict):
    line: int
    custom_id: str
    status_code: int | None
    body: dict[str, Any] | None
    error: LineError | None
    attempts: int
    latency_ms: float
    request_id: str
    started_at: float  # unix seconds
    finished_at: float
    # An executor that counts tokens itself may say so; else usage is read from the body.
    usage: NotRequired[dict[str, int]]


class Executor(Protocol):
    """What a batch actor needs of whoever serves a model (docs/architecture.md)."""

    async def run_chunk(
        self, endpoint: str, model: str | None, items: list[WorkItem], batch_id: str
    ) -> list[Outcome]: ...

    async def list_models(self) -> list[str]: ...


def make_outcome(
    item: Mapping[str, Any],
    *,
    started_at: float,
    finished_at: float,
    status_code: int | None = None,
    body: dict[str, Any] | None = None,
    error: LineError | None = None,
    attempts: int = 1,
    latency_ms: float | None = None,
    request_id: str | None = None,
) -> Outcome:
    """The one Outcome builder. ``latency_ms`` defaults to ``finished_at - started_at``."""
    if latency_ms is None:
        latency_ms = round((finished_at - started_at) * 1000.0, 3)
    return {
        "line": item.get("line"),  # type: ignore[typeddict-item]
        "custom_id": str(item.get("custom_id", "")),
        "status_code": status_code,
        "body": body,
        "error": error,
        "attempts": attempts,
        "latency_ms": latency_ms,
        "request_id": request_id or new_request_id(),
        "started_at": started_at,
        "finished_at": finished_at,
    }


def failed_outcomes(
    items: Iterable[Any], code: str, message: str, *, at: float, attempts: int = 1
) -> list[Outcome]:
    """One transport-style failure (``status_code`` None) per item."""
    return [
        make_outcome(
            it if isinstance(it, Mapping) else {},
            error={"code": code, "message": message},
            started_at=at,
            finished_at=at,
            attempts=attempts,
        )
        for it in items
    ]


def rejected_outcomes(
    items: Iterable[Any],
    status_code: int,
    body: dict[str, Any],
    *,
    at: float,
    attempts: int = 1,
) -> list[Outcome]:
    """One HTTP-style failure (a status and an error envelope body) per item."""
    return [
        make_outcome(
            it if isinstance(it, Mapping) else {},
            status_code=status_code,
            body=body,
            started_at=at,
            finished_at=at,
            attempts=attempts,
        )
        for it in items
    ]
