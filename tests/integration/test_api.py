"""The REST façade in-process: the real FastAPI app over httpx.ASGITransport, its
BatchService an in-process core on a real file-backed log in a temp dir (no Ray).

Nothing runs batches here (no executors), so they stay queued: these tests are about
routes, parsing, auth, paging and the error envelope, not about running batches.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from batches.api import create_app
from batches.core import Coordination
from batches.core.inprocess import InProcessBatchService
from batches.domain import decider
from batches.domain import events as ev
from batches.domain.ids import DEFAULT_TENANT
from batches.filestore import LocalFileStore
from batches.settings import Settings
from eventlog import EventStore, NewEvent

LINE = {
    "custom_id": "a",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "m", "messages": []},
}
CONTENT = orjson.dumps(LINE) + b"\n"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(data: Path, **settings: Any) -> tuple[Any, EventStore]:
    config = Settings(data_dir=data, **settings)
    log = EventStore.open(config.log_dir, fsync=False)
    files = LocalFileStore(data)
    service = InProcessBatchService(Coordination(log, files, clock=lambda: 1_700_000_000.0))
    return create_app(config, service, files), log


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app, log = make_app(tmp_path / "data", max_json_body_bytes=4096)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client
    log.close()


async def upload(api: httpx.AsyncClient, content: bytes = CONTENT, **headers: str) -> Any:
    files = {"file": ("in.jsonl", io.BytesIO(content), "application/jsonl")}
    r = await api.post("/v1/files", files=files, data={"purpose": "batch"}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def assert_envelope(r: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


async def test_upload_create_get_list_cancel_events(api: httpx.AsyncClient) -> None:
    f = await upload(api)
    assert (f["object"], f["bytes"], f["purpose"]) == ("file", len(CONTENT), "batch")
    assert (await api.get(f"/v1/files/{f['id']}/content")).content == CONTENT
    body = {
        "input_file_id": f["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    created = (await api.post("/v1/batches", json=body)).json()
    assert (created["status"], created["queue_position"]) == ("validating", 1)
    got = (await api.get(f"/v1/batches/{created['id']}")).json()
    assert got["id"] == created["id"]
    listed = (await api.get("/v1/batches", params={"limit": 1})).json()
    assert [b["id"] for b in listed["data"]] == [created["id"]] and not listed["has_more"]
    cancelled = (await api.post(f"/v1/batches/{created['id']}/cancel")).json()
    assert cancelled["status"] == "cancelling"
    events = (await api.get(f"/v1/batches/{created['id']}/events")).json()
    assert [e["type"] for e in events["data"]] == ["BatchCreated", "BatchCancelRequested"]
    models = (await api.get("/v1/models")).json()
    assert models == {"object": "list", "data": []}
    assert (await api.get("/health")).json()["batches"] == 1


async def test_idempotency_key_header_and_body(api: httpx.AsyncClient) -> None:
    f = await upload(api)
    body = {"input_file_id": f["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    first = (await api.post("/v1/batches", json=body, headers={"Idempotency-Key": "k"})).json()
    again = (await api.post("/v1/batches", json={**body, "idempotency_key": "k"})).json()
    assert again["id"] == first["id"]
    r = await api.post("/v1/batches", json={**body, "metadata": {"a": "b"}, "idempotency_key": "k"})
    assert r.headers["x-should-retry"] == "false"
    assert_envelope(r, 409, "idempotency_key_reused")
    r = await api.post(
        "/v1/batches", json={**body, "idempotency_key": "k"}, headers={"Idempotency-Key": "j"}
    )
    assert_envelope(r, 400, "conflicting_idempotency_keys")


async def test_errors_are_enveloped(api: httpx.AsyncClient) -> None:
    assert_envelope(await api.get("/v1/batches/batch_nope"), 404, "not_found")
    assert_envelope(await api.get("/v1/files/file-nope/content"), 404, "not_found")
    assert_envelope(await api.delete("/v1/files/file-nope"), 404, "not_found")
    json_type = {"content-type": "application/json"}
    r = await api.post("/v1/batches", content=b"{not json", headers=json_type)
    assert_envelope(r, 400, "invalid_json")
    r = await api.post("/v1/batches", content=b"x" * 5000, headers=json_type)
    assert_envelope(r, 413, "request_too_large")
    r = await api.post(
        "/v1/batches", json={"endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    error = assert_envelope(r, 400, "missing_required_parameter")
    assert error["param"] == "input_file_id"
    body = {"input_file_id": "file-x", "endpoint": "/v1/embeddings", "completion_window": "24h"}
    created = await api.post("/v1/batches", json=body)  # as on OpenAI: made, to fail later
    assert (created.status_code, created.json()["status"]) == (200, "validating")
    assert_envelope(await api.get("/v1/batches", params={"limit": 0}), 400, "invalid_value")
    empty = {"file": ("in.jsonl", io.BytesIO(b""), "application/jsonl")}
    r = await api.post("/v1/files", files=empty, data={"purpose": "batch"})
    assert_envelope(r, 400, "empty_file")


async def test_keys_are_tenants(tmp_path: Path) -> None:
    app, log = make_app(tmp_path / "data", api_keys={"ka": "alice", "kb": "bob"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
        assert_envelope(await api.get("/v1/files"), 401, "missing_api_key")
        bad = {"authorization": "Bearer nope"}
        assert_envelope(await api.get("/v1/files", headers=bad), 401, "invalid_api_key")
        f = await upload(api, authorization="Bearer ka")
        r = await api.get(f"/v1/files/{f['id']}", headers={"authorization": "Bearer kb"})
        assert_envelope(r, 404, "not_found")
        mine = await api.get("/v1/files", headers={"authorization": "Bearer ka"})
        assert [x["id"] for x in mine.json()["data"]] == [f["id"]]
    log.close()


async def test_a_failed_embedded_model_is_reported_by_health_and_models(tmp_path: Path) -> None:
    """docs/embedded-engine.md: the façade says which embedded model cannot run, and why."""
    reason = "llama.cpp died with SIGILL in its start-up self-test: ..."

    async def model_status() -> dict[str, dict[str, Any]]:
        return {
            "smollm2-135m-instruct": {"status": "failed", "reason": reason, "restarts": 0},
            "all-minilm-l6-v2": {"status": "ready", "reason": None, "restarts": 0},
        }

    config = Settings(data_dir=tmp_path / "data")
    log = EventStore.open(config.log_dir, fsync=False)
    files = LocalFileStore(tmp_path / "data")
    service = InProcessBatchService(Coordination(log, files, clock=lambda: 1_700_000_000.0))
    service.models = {"smollm2-135m-instruct": "local", "all-minilm-l6-v2": "local"}
    app = create_app(config, service, files, model_status=model_status)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
        health = (await api.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["models"]["smollm2-135m-instruct"]["reason"] == reason
        models = {m["id"]: m for m in (await api.get("/v1/models")).json()["data"]}
        assert models["smollm2-135m-instruct"]["status"] == "failed"
        assert models["smollm2-135m-instruct"]["status_reason"] == reason
        assert models["all-minilm-l6-v2"]["status"] == "ready"
    log.close()


async def test_cancel_after_the_end_is_openais_409(tmp_path: Path) -> None:
    """shared/reference/openai-batch-api.md: cancelling a completed, failed or expired
    batch is a 409 "Cannot cancel a batch with status '<s>'." (not retried by the SDK);
    one already cancelling or cancelled comes back unchanged."""
    config = Settings(data_dir=tmp_path / "data")
    log = EventStore.open(config.log_dir, fsync=False)
    files = LocalFileStore(config.data_dir)
    now = [1_700_000_000.0]
    core = Coordination(log, files, clock=lambda: now[0])
    app = create_app(config, InProcessBatchService(core), files)

    def drive(batch_id: str, *commands: decider.Command) -> None:
        """Write what the batch's actor would (none runs in-process)."""
        for command in commands:
            state = core.batch_state(DEFAULT_TENANT, batch_id)
            events = decider.decide(state, command)
            log.append(
                ev.batch_stream(batch_id), [NewEvent(t, d) for t, d in events], state.version
            )

    at = int(now[0])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
        f = await upload(api)
        body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions"}
        made = []
        for _ in range(5):
            r = await api.post("/v1/batches", json={**body, "completion_window": "24h"})
            made.append(r.json()["id"])
        completed, failed, expired, cancelling, cancelled = made
        drive(
            completed,
            decider.RecordValidation(at=at, model="m", total=1),
            decider.RecordOutcomes([{"line": 1, "custom_id": "a", "status_code": 200, "body": {}}]),
            decider.StartFinalizing(at=at),
            decider.Complete(at=at, output_file_id=None, error_file_id=None),
        )
        core.give_up(failed, "its actor kept crashing")
        assert (await api.post(f"/v1/batches/{cancelling}/cancel")).json()["status"] == "cancelling"
        assert (await api.post(f"/v1/batches/{cancelled}/cancel")).status_code == 200
        drive(cancelled, decider.FinishCancel(at=at, output_file_id=None, error_file_id=None))
        now[0] += 86_400  # past the window: the waiting batch expires
        assert core.expire_queued(running=[completed, failed, cancelling, cancelled]) == [expired]

        for batch_id, status in (
            (completed, "completed"),
            (failed, "failed"),
            (expired, "expired"),
        ):
            assert (await api.get(f"/v1/batches/{batch_id}")).json()["status"] == status
            r = await api.post(f"/v1/batches/{batch_id}/cancel")
            error = assert_envelope(r, 409, "invalid_batch_status")
            assert error["message"] == f"Cannot cancel a batch with status '{status}'."
            assert r.headers["x-should-retry"] == "false"  # the SDK would retry a 409
        for batch_id, status in ((cancelling, "cancelling"), (cancelled, "cancelled")):
            before = (await api.get(f"/v1/batches/{batch_id}/events")).json()["data"]
            again = await api.post(f"/v1/batches/{batch_id}/cancel")
            assert (again.status_code, again.json()["status"]) == (200, status)
            after = (await api.get(f"/v1/batches/{batch_id}/events")).json()["data"]
            assert after == before  # unchanged: nothing recorded
    log.close()
