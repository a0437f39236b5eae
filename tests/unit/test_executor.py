"""The executor contract: one Outcome builder, and the events its three shapes become."""

from __future__ import annotations

import re

from batches.domain import events as ev
from batches.domain.errors import error_envelope
from batches.domain.executor import (
    Outcome,
    failed_outcomes,
    make_outcome,
    rejected_outcomes,
)

ITEM = {"line": 3, "custom_id": "c-3", "body": {"model": "m"}}
OUTCOME_KEYS = {
    "line",
    "custom_id",
    "status_code",
    "body",
    "error",
    "attempts",
    "latency_ms",
    "request_id",
    "started_at",
    "finished_at",
}


def test_success_shape_and_event() -> None:
    body = {"usage": {"prompt_tokens": 2, "completion_tokens": 3}}
    out = make_outcome(ITEM, started_at=10.0, finished_at=10.25, status_code=200, body=body)
    assert set(out) == OUTCOME_KEYS
    assert (out["line"], out["custom_id"], out["attempts"]) == (3, "c-3", 1)
    assert out["latency_ms"] == 250.0
    assert re.fullmatch(r"batch_req_[0-9a-f]{24}", out["request_id"])
    kind, data = ev.outcome_event("/v1/chat/completions", out)
    assert kind == ev.REQUEST_SUCCEEDED
    assert data["usage"]["total_tokens"] == 5


def test_http_failure_keeps_status_and_envelope() -> None:
    body = error_envelope("nope", param="model", code="model_not_found")
    [out] = rejected_outcomes([ITEM], 404, body, at=5.0, attempts=0)
    assert (out["status_code"], out["body"], out["error"], out["attempts"]) == (404, body, None, 0)
    kind, data = ev.outcome_event("/v1/chat/completions", out)
    assert kind == ev.REQUEST_FAILED and data["status_code"] == 404


def test_transport_failure_has_no_status() -> None:
    outs: list[Outcome] = failed_outcomes([ITEM, {"line": 4, "custom_id": "c-4"}], "t", "m", at=1.0)
    assert [o["line"] for o in outs] == [3, 4]
    assert all(o["status_code"] is None and o["body"] is None for o in outs)
    assert outs[0]["error"] == {"code": "t", "message": "m"}
    assert outs[0]["request_id"] != outs[1]["request_id"]
    kind, data = ev.outcome_event("/v1/embeddings", outs[0])
    assert kind == ev.REQUEST_FAILED and data["error"] == {"code": "t", "message": "m"}


def test_given_request_id_and_latency_win() -> None:
    out = make_outcome(ITEM, started_at=0.0, finished_at=9.0, latency_ms=1.5, request_id="r")
    assert (out["request_id"], out["latency_ms"]) == ("r", 1.5)
