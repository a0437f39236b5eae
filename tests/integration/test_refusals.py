"""Every refusal in batches/domain/refusals.py, answered through its real path.

Each case drives the real FastAPI app (httpx.ASGITransport) over an in-process core on a
real file-backed log in a temp dir, into the situation that makes the refusal, and
checks the whole envelope against the wording written here (OpenAI's where it is
recorded). The case also checks that the refusal it names is the one that was built,
and the last test checks that every refusal a client can meet has a case; the few a
client cannot meet are exercised in tests/unit/test_refusals.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.exceptions import HTTPException

from batches.api import create_app
from batches.core import Coordination
from batches.core.coordination import CoreConfig
from batches.core.inprocess import InProcessBatchService
from batches.domain import refusals
from batches.domain.errors import DomainError
from batches.domain.ids import DEFAULT_TENANT
from batches.filestore import LocalFileStore
from batches.settings import Settings
from eventlog import EventStore

pytestmark = pytest.mark.anyio
LINE = {
    "custom_id": "a",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "m", "messages": []},
}
CONTENT = orjson.dumps(LINE) + b"\n"
JSON = {"content-type": "application/json"}
NOW = 1_700_000_000.0

# Not reachable from a client (the decider's invariants, a lost write race, the web
# framework's other statuses): exercised in tests/unit/test_refusals.py.
BELOW_THE_FACADE = {
    "invalid_create_value",
    "batch_exists",
    "no_such_batch",
    "outcome_line_out_of_range",
    "requests_without_outcome",
    "not_yet_expired",
    "concurrent_update",  # tests/unit/test_core.py
}
# Met only over a real socket (open connections): tests/integration/test_connection_limit.py.
OVER_REAL_HTTP = {"too_many_connections"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class BrokenHealth(InProcessBatchService):
    """A service with a bug: the façade must answer 500 in OpenAI's words, not a trace."""

    async def health(self) -> dict[str, Any]:
        raise RuntimeError("a bug")


@dataclass
class Rig:
    app: FastAPI
    api: httpx.AsyncClient
    core: Coordination
    files: LocalFileStore
    ids: dict[str, str] = field(default_factory=dict)  # what a message names

    async def upload(self, content: bytes = CONTENT, **data: str) -> httpx.Response:
        files = {"file": ("in.jsonl", io.BytesIO(content), "application/jsonl")}
        return await self.api.post("/v1/files", files=files, data={"purpose": "batch", **data})

    async def create(self, file_id: str, **extra: Any) -> httpx.Response:
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        return await self.api.post(
            "/v1/batches", json={**body, "completion_window": "24h", **extra}
        )

    async def batch(self) -> dict[str, Any]:
        f = (await self.upload()).json()
        r = await self.create(f["id"])
        assert r.status_code == 200, r.text
        return typing.cast(dict[str, Any], r.json())


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, settings: dict[str, Any], broken: bool) -> AsyncIterator[Rig]:
    config = Settings(data_dir=tmp_path / "data", **settings)
    log = EventStore.open(config.log_dir, fsync=False)
    files = LocalFileStore(config.data_dir)
    core = Coordination(log, files, clock=lambda: NOW, config=CoreConfig.from_settings(config))
    service = (BrokenHealth if broken else InProcessBatchService)(core)
    app = create_app(config, service, files)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield Rig(app, client, core, files)
    log.close()


Action = Callable[[Rig], Awaitable[httpx.Response]]


@dataclass
class Case:
    refusal: str  # the function of batches.domain.refusals that words it
    action: Action
    status: int
    code: str | None
    param: str | None
    message: str
    settings: dict[str, Any] = field(default_factory=dict)


async def _slow_body() -> AsyncIterator[bytes]:
    yield b'{"input_file_id": '
    await asyncio.sleep(60)  # cancelled when the gate gives up on the body
    yield b'"x"}'


async def _chunked(size: int) -> AsyncIterator[bytes]:
    yield b"x" * size  # no content-length: the route counts the bytes itself


async def _teapot(r: Rig) -> httpx.Response:
    """A framework refusal other than 404/405 (none of batchlog's routes raise one)."""

    async def teapot() -> None:
        raise HTTPException(418, "I'm a teapot")

    r.app.add_api_route("/v1/teapot", teapot)
    return await r.api.get("/v1/teapot")


async def _two_files(r: Rig) -> httpx.Response:
    files = [
        ("file", ("a.jsonl", io.BytesIO(CONTENT), "application/jsonl")),
        ("file", ("b.jsonl", io.BytesIO(CONTENT), "application/jsonl")),
    ]
    return await r.api.post("/v1/files", files=files, data={"purpose": "batch"})


async def _no_file_part(r: Rig) -> httpx.Response:
    return await r.api.post("/v1/files", files={"purpose": (None, b"batch")})


async def _no_purpose(r: Rig) -> httpx.Response:
    files = {"file": ("in.jsonl", io.BytesIO(CONTENT), "application/jsonl")}
    return await r.api.post("/v1/files", files=files)


async def _too_many_fields(r: Rig) -> httpx.Response:
    data = {f"field{i}": "x" for i in range(20)}
    return await r.upload(**data)


async def _content_gone(r: Rig) -> httpx.Response:
    f = (await r.upload()).json()
    r.ids["file_id"] = f["id"]
    r.files.delete(f["id"])  # the bytes lost behind the catalog's back
    return await r.api.get(f"/v1/files/{f['id']}/content")


async def _wrong_purpose_input(r: Rig) -> httpx.Response:
    out = r.core.register_file(DEFAULT_TENANT, None, "o.jsonl", "batch_output", 9, "0" * 64, 1)
    return await r.create(out["id"])


async def _cancel_failed(r: Rig) -> httpx.Response:
    b = await r.batch()
    r.core.give_up(b["id"], "its actor kept crashing")
    return await r.api.post(f"/v1/batches/{b['id']}/cancel")


async def _delete_input(r: Rig) -> httpx.Response:
    b = await r.batch()
    r.ids.update(file_id=b["input_file_id"], batch_id=b["id"])
    return await r.api.delete(f"/v1/files/{b['input_file_id']}")


async def _log_faulted(r: Rig) -> httpx.Response:
    f = (await r.upload()).json()
    # As after a failed append (ENOSPC) with no log to reopen yet: writes are refused.
    r.core.fault = "No space left on device"
    return await r.create(f["id"])


async def _second_create(r: Rig) -> httpx.Response:
    await r.batch()
    f = (await r.upload()).json()
    return await r.create(f["id"])


async def _key_reused(r: Rig) -> httpx.Response:
    f = (await r.upload()).json()
    assert (await r.create(f["id"], idempotency_key="k")).status_code == 200
    return await r.create(f["id"], idempotency_key="k", metadata={"a": "b"})


async def _keys_differ(r: Rig) -> httpx.Response:
    f = (await r.upload()).json()
    body = {"input_file_id": f["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    return await r.api.post(
        "/v1/batches", json={**body, "idempotency_key": "k"}, headers={"Idempotency-Key": "j"}
    )


def _with_key_header(value: str) -> Action:
    async def action(r: Rig) -> httpx.Response:
        body = {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h"}
        return await r.api.post("/v1/batches", json=body, headers={"Idempotency-Key": value})

    return action


def _post_batches(**kwargs: Any) -> Action:
    async def action(r: Rig) -> httpx.Response:
        return await r.api.post("/v1/batches", **kwargs)

    return action


def _get(path: str, **kwargs: Any) -> Action:
    async def action(r: Rig) -> httpx.Response:
        return await r.api.get(path, **kwargs)

    return action


def _upload(content: bytes = CONTENT, **data: str) -> Action:
    async def action(r: Rig) -> httpx.Response:
        return await r.upload(content, **data)

    return action


def _post_files(**kwargs: Any) -> Action:
    async def action(r: Rig) -> httpx.Response:
        return await r.api.post("/v1/files", **kwargs)

    return action


CREATE = {"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h"}
MULTIPART = "multipart/form-data"
KEYS = {"api_keys": {"ka": "alice"}}
PURPOSES = "'assistants', 'batch', 'batch_output', 'evals', 'fine-tune', 'user_data', and 'vision'"

CASES: dict[str, Case] = {
    "no key": Case(
        "missing_api_key",
        _get("/v1/files"),
        401,
        "missing_api_key",
        None,
        "You didn't provide an API key.",
        KEYS,
    ),
    "wrong key": Case(
        "invalid_api_key",
        _get("/v1/files", headers={"authorization": "Bearer nope"}),
        401,
        "invalid_api_key",
        None,
        "Incorrect API key provided.",
        KEYS,
    ),
    "foreign host": Case(
        "host_not_allowed",
        _get("/v1/files", headers={"host": "evil.example"}),
        400,
        "invalid_host",
        None,
        "Host header not allowed.",
    ),
    "no slot": Case(
        "overloaded",
        _get("/v1/files"),
        503,
        "overloaded",
        None,
        "The server is overloaded; retry later.",
        {"max_inflight_requests": 0},
    ),
    "upload not multipart": Case(
        "upload_not_multipart",
        _post_files(json={"purpose": "batch"}),
        415,
        "unsupported_media_type",
        None,
        "Uploads must be multipart/form-data.",
    ),
    "create not json": Case(
        "body_not_json",
        _post_batches(content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
        None,
        "Request bodies must be application/json.",
    ),
    "declared body too large": Case(
        "request_too_large",
        _post_batches(content=b"x" * 5000, headers=JSON),
        413,
        "request_too_large",
        None,
        "Request body is larger than 4096 bytes.",
        {"max_json_body_bytes": 4096},
    ),
    "streamed body too large": Case(
        "request_too_large",
        _post_batches(content=_chunked(5000), headers=JSON),
        413,
        "request_too_large",
        None,
        "Request body is larger than 4096 bytes.",
        {"max_json_body_bytes": 4096},
    ),
    "disk nearly full": Case(
        "insufficient_storage",
        _post_batches(json=CREATE),
        507,
        "insufficient_storage",
        None,
        f"The server has less than {2**62} bytes of free disk space; uploads and new "
        "batches are refused until space is freed.",
        {"min_free_bytes": 2**62},
    ),
    "slow body": Case(
        "body_too_slow",
        _post_batches(content=_slow_body(), headers=JSON),
        408,
        "request_timeout",
        None,
        "The request body arrived too slowly.",
        {"body_timeout_s": 0.05},
    ),
    "no such route": Case(
        "invalid_url", _get("/v1/nope"), 404, None, None, "Invalid URL (GET /v1/nope)"
    ),
    "wrong method": Case(
        "invalid_method",
        _get("/v1/batches/batch_x/cancel"),
        405,
        None,
        None,
        "Invalid method for URL (GET /v1/batches/batch_x/cancel)",
    ),
    "framework refusal": Case(
        "http_error",
        _teapot,
        418,
        None,
        None,
        "The request could not be served (HTTP 418).",
    ),
    "a bug": Case(
        "server_error",
        _get("/health"),
        500,
        "server_error",
        None,
        "The server had an error while processing your request.",
        {"broken": True},
    ),
    "unparseable json": Case(
        "unparseable_json_body",
        _post_batches(content=b"{not json", headers=JSON),
        400,
        "invalid_json",
        None,
        "We could not parse the JSON body of your request.",
    ),
    "json not an object": Case(
        "body_not_an_object",
        _post_batches(json=[1]),
        400,
        "invalid_request",
        None,
        "The request body must be a JSON object.",
    ),
    "declared upload too large": Case(
        "file_too_large",
        _upload(b"x" * 70_000),
        400,
        "file_too_large",
        "file",
        "File is larger than the 10 byte limit.",
        {"max_file_bytes": 10},
    ),
    "streamed upload too large": Case(
        "file_too_large",
        _upload(b"x" * 100),
        400,
        "file_too_large",
        "file",
        "File is larger than the 10 byte limit.",
        {"max_file_bytes": 10},
    ),
    "no boundary": Case(
        "multipart_no_boundary",
        _post_files(content=b"x", headers={"content-type": MULTIPART}),
        400,
        "invalid_request",
        None,
        "The multipart body has no boundary.",
    ),
    "malformed multipart": Case(
        "multipart_malformed",
        _post_files(
            content=b"--b\r\nno colon in this header\r\n\r\nx\r\n--b--\r\n",
            headers={"content-type": MULTIPART + "; boundary=b"},
        ),
        400,
        "invalid_request",
        None,
        "The multipart body is malformed.",
    ),
    "too many fields": Case(
        "too_many_form_fields",
        _too_many_fields,
        400,
        "invalid_request",
        None,
        "The form has more than 16 fields.",
    ),
    "two files": Case(
        "one_file_field",
        _two_files,
        400,
        "invalid_request",
        "file",
        "Send exactly one file, as the field 'file'.",
    ),
    "huge field": Case(
        "form_field_too_large",
        _upload(purpose="b" * 70_000),
        400,
        "invalid_request",
        "purpose",
        "Form field 'purpose' is larger than 65536 bytes.",
    ),
    "no purpose": Case(
        "missing_upload_field",
        _no_purpose,
        400,
        "missing_required_parameter",
        "purpose",
        "Missing required parameter: 'purpose'.",
    ),
    "no file": Case(
        "missing_upload_field",
        _no_file_part,
        400,
        "missing_required_parameter",
        "file",
        "Missing required parameter: 'file'.",
    ),
    "unknown purpose": Case(
        "invalid_purpose",
        _upload(purpose="nonsense"),
        400,
        "invalid_value",
        "purpose",
        f"Invalid purpose: nonsense. Supported values: {PURPOSES}.",
    ),
    "purpose not batch": Case(
        "upload_purpose_not_batch",
        _upload(purpose="assistants"),
        400,
        "invalid_value",
        "purpose",
        "Only purpose 'batch' can be uploaded to this server.",
    ),
    "empty upload": Case(
        "empty_upload",
        _upload(b""),
        400,
        "empty_file",
        "file",
        "The uploaded file is empty.",
    ),
    "bad anchor": Case(
        "invalid_expires_after_anchor",
        _upload(**{"expires_after[anchor]": "last_used", "expires_after[seconds]": "3600"}),
        400,
        "invalid_value",
        "expires_after[anchor]",
        "Invalid expires_after[anchor]: last_used. Supported values: 'created_at'.",
    ),
    "seconds too few": Case(
        "invalid_expires_after_seconds",
        _upload(**{"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}),
        400,
        "invalid_value",
        "expires_after[seconds]",
        "Invalid 'expires_after[seconds]': expected an integer between 3600 and 2592000, "
        "but got 60 instead.",
    ),
    "seconds not a number": Case(
        "invalid_expires_after_seconds",
        _upload(**{"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"}),
        400,
        "invalid_value",
        "expires_after[seconds]",
        "Invalid 'expires_after[seconds]': expected an integer between 3600 and 2592000, "
        "but got soon instead.",
    ),
    "content gone": Case(
        "file_content_gone",
        _content_gone,
        404,
        "file_missing",
        "file_id",
        "The content of file {file_id} is gone.",
    ),
    "no such file": Case(
        "file_not_found",
        _get("/v1/files/file-nope"),
        404,
        "not_found",
        "file_id",
        "No such File object: file-nope",
    ),
    "no such batch": Case(
        "batch_not_found",
        _get("/v1/batches/batch_nope"),
        404,
        "not_found",
        "batch_id",
        "No batch found with id 'batch_nope'.",
    ),
    "input of another purpose": Case(
        "input_file_wrong_purpose",
        _wrong_purpose_input,
        400,
        "invalid_input_file_id",
        "input_file_id",
        "The input file must be uploaded with purpose 'batch'.",
    ),
    "cancel a failed batch": Case(
        "cannot_transition",
        _cancel_failed,
        409,
        "invalid_batch_status",
        None,
        "Cannot cancel a batch with status 'failed'.",
    ),
    "delete a running input": Case(
        "file_in_use",
        _delete_input,
        409,
        "file_in_use",
        "file_id",
        "File {file_id} is the input of batch {batch_id}, which has not finished; delete it "
        "after the batch ends (or cancel the batch first).",
    ),
    "log refuses writes": Case(
        "storage_unavailable",
        _log_faulted,
        503,
        "storage_unavailable",
        None,
        "The server could not write to its storage (No space left on device); nothing was "
        "changed. Retry later.",
    ),
    "stored bytes": Case(
        "stored_bytes_limit",
        _upload(),
        429,
        "rate_limit_exceeded",
        "file",
        f"Your uploaded files would take {len(CONTENT)} bytes, over the 10 byte limit per "
        "tenant; delete some files first.",
        {"tenant_max_stored_bytes": 10},
    ),
    "queued batches": Case(
        "queued_batches_limit",
        _second_create,
        429,
        "rate_limit_exceeded",
        None,
        "You have 1 batches waiting to run, the limit per tenant; retry when some have started.",
        {"tenant_max_queued_batches": 1},
    ),
    "create rate": Case(
        "create_rate_limit",
        _second_create,
        429,
        "rate_limit_exceeded",
        None,
        "Too many batch creates: the limit is 1 per minute per tenant.",
        {"tenant_creates_per_minute": 1.0},
    ),
    "key reused": Case(
        "idempotency_key_reused",
        _key_reused,
        409,
        "idempotency_key_reused",
        "idempotency_key",
        "This idempotency key was already used with different parameters.",
    ),
    "two keys": Case(
        "conflicting_idempotency_keys",
        _keys_differ,
        400,
        "conflicting_idempotency_keys",
        "idempotency_key",
        "The request names different idempotency keys (idempotency_key, idem_tok, "
        "Idempotency-Key header); send one key.",
    ),
    "key header not a string": Case(
        "invalid_idempotency_header",
        _with_key_header("a,b"),
        400,
        "invalid_request",
        "Idempotency-Key",
        "Invalid Idempotency-Key header.",
    ),
    "key header bad escape": Case(
        "invalid_idempotency_header",
        _with_key_header('"a\\nb"'),
        400,
        "invalid_request",
        "Idempotency-Key",
        "Invalid escape in Idempotency-Key header.",
    ),
    "key header bad character": Case(
        "invalid_idempotency_header",
        _with_key_header('"a"b"'),
        400,
        "invalid_request",
        "Idempotency-Key",
        "Invalid character in Idempotency-Key header.",
    ),
    "key too long": Case(
        "idempotency_key_length",
        _with_key_header("k" * 256),
        400,
        "invalid_request",
        "Idempotency-Key",
        "Idempotency-Key must be 1 to 255 characters.",
    ),
    "bad Last-Event-ID": Case(
        "invalid_last_event_id",
        _get("/v1/batches/batch_x/events?stream=true", headers={"last-event-id": "x"}),
        400,
        "invalid_value",
        "Last-Event-ID",
        "Invalid 'Last-Event-ID': expected a non-negative integer (an event's id).",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_refusal(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    built: list[str] = []
    original = getattr(refusals, case.refusal)

    def recording(*args: Any, **kwargs: Any) -> DomainError:
        built.append(case.refusal)
        err: DomainError = original(*args, **kwargs)
        return err

    monkeypatch.setattr(refusals, case.refusal, recording)
    settings = dict(case.settings)
    broken = bool(settings.pop("broken", False))
    async with _rig(tmp_path, settings, broken) as rig:
        r = await case.action(rig)
    assert r.status_code == case.status, r.text
    assert r.json()["error"] == {
        "message": case.message.format(**rig.ids),
        "type": _type(case.status),
        "param": case.param,
        "code": case.code,
    }
    assert built == [case.refusal]


def _type(status: int) -> str:
    return {401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )


def test_every_refusal_a_client_can_meet_has_a_case() -> None:
    made = {
        name
        for name, f in vars(refusals).items()
        if callable(f) and getattr(f, "__module__", "") == refusals.__name__ and _returns_error(f)
    }
    covered = {case.refusal for case in CASES.values()}
    assert made - BELOW_THE_FACADE - OVER_REAL_HTTP == covered
    assert made >= BELOW_THE_FACADE | OVER_REAL_HTTP


def _returns_error(f: Any) -> bool:
    hint = typing.get_type_hints(f).get("return")
    return isinstance(hint, type) and issubclass(hint, DomainError)
