"""Synthetic histories written through the decider, exactly as a batch actor writes them.

No Ray, no HTTP: ``Writer`` decides each command on the folded state and appends the
events to an ``EventStore`` with the expected version, as ``actors/batch_actor.py`` does.
"""

from __future__ import annotations

from typing import Any

from batches.domain import decider as d
from batches.domain import events as ev
from eventlog import EventStore, NewEvent

T0 = 1_700_000_000


def outcome(
    line: int,
    *,
    ok: bool = True,
    model: str = "m-chat",
    tokens: tuple[int, int] = (3, 2),
    attempts: int = 1,
    latency_ms: float = 10.0,
    status: int | None = None,
    error: dict[str, str] | None = None,
    at: float = T0 + 1.0,
) -> dict[str, Any]:
    """An executor outcome: a success, an HTTP failure (``status``) or a transport failure."""
    prompt, completion = tokens
    if error is not None:  # a transport failure: no HTTP response
        status_code: int | None = None
        body: dict[str, Any] | None = None
    elif ok:
        status_code = 200
        body = {
            "id": f"chatcmpl-{line}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    else:
        status_code = status or 500
        body = {"error": {"message": "boom", "type": "server_error", "code": f"e{status_code}"}}
    return {
        "line": line,
        "custom_id": f"req-{line}",
        "request_id": f"batch_req_{line:024x}",
        "status_code": status_code,
        "body": body,
        "error": error,
        "attempts": attempts,
        "latency_ms": latency_ms,
        "started_at": at,
        "finished_at": at + latency_ms / 1000.0,
    }


class Writer:
    """Writes one batch's stream through ``decider.decide``."""

    def __init__(self, store: EventStore, batch_id: str, *, tenant: str = "default") -> None:
        self.store = store
        self.batch_id = batch_id
        self.tenant = tenant
        self.state: d.BatchState | None = None
        self.stream = ev.batch_stream(batch_id)

    def do(self, command: d.Command) -> list[ev.Event]:
        events = d.decide(self.state, command)
        if events:
            version = self.state.version if self.state is not None else 0
            self.store.append(self.stream, [NewEvent(t, e) for t, e in events], version)
            self.state = d.fold(events, self.state)
        return events

    def create(self, at: int = T0, endpoint: str = "/v1/chat/completions") -> Writer:
        self.do(
            d.CreateBatch(
                batch_id=self.batch_id,
                tenant=self.tenant,
                input_file_id="file-in",
                endpoint=endpoint,
                completion_window="24h",
                metadata={"k": "v"},
                output_expires_after=None,
                idempotency_key=None,
                at=at,
            )
        )
        return self

    def validate(self, total: int, model: str = "m-chat", at: int = T0 + 1) -> Writer:
        self.do(d.RecordValidation(at=at, model=model, total=total))
        return self

    def invalid(self, at: int = T0 + 1) -> Writer:
        error = {"code": "invalid_json_line", "message": "bad", "param": None, "line": 2}
        self.do(d.RecordValidation(at=at, errors=(error,)))
        return self

    def outcomes(self, outcomes: list[dict[str, Any]]) -> Writer:
        self.do(d.RecordOutcomes(tuple(outcomes)))
        return self

    def finish(self, at: int = T0 + 5) -> Writer:
        self.do(d.StartFinalizing(at=at))
        self.do(d.Complete(at=at + 1, output_file_id="file-out", error_file_id=None))
        return self

    def cancel(self, at: int = T0 + 3) -> Writer:
        self.do(d.Cancel(at=at))
        self.do(d.FinishCancel(at=at + 1, output_file_id=None, error_file_id="file-err"))
        return self

    def expire(self) -> Writer:
        assert self.state is not None
        self.do(d.Expire(at=self.state.expires_at, output_file_id=None, error_file_id="f-e"))
        return self


def upload(store: EventStore, file_id: str, *, tenant: str = "default", at: int = T0) -> None:
    data = {
        "file_id": file_id,
        "tenant": tenant,
        "filename": f"{file_id}.jsonl",
        "purpose": "batch",
        "bytes": 123,
        "created_at": at,
        "expires_at": None,
        "path": f"files/{file_id}",
        "sha256": "0" * 64,
        "lines": 3,
    }
    store.append(ev.FILES_STREAM, [NewEvent(ev.FILE_UPLOADED, data)], store.version("files"))


def delete(store: EventStore, file_id: str, at: int = T0 + 9) -> None:
    store.append(
        ev.FILES_STREAM,
        [NewEvent(ev.FILE_DELETED, {"file_id": file_id, "at": at})],
        store.version("files"),
    )
