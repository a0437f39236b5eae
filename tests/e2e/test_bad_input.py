"""Every malformed input gets its documented error and makes no partial batch."""

from __future__ import annotations

import io

import httpx
import openai
import orjson
import pytest

from batches.testing import Service
from tests.e2e.conftest import LIMIT_BYTES, LIMIT_REQUESTS, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


def line(custom_id: str = "a", **changes: object) -> bytes:
    obj: dict[str, object] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
    }
    obj.update(changes)
    return orjson.dumps(obj) + b"\n"


CASES = {
    "bad_json": (line("a") + b'{"custom_id": "b", \n', {2: "invalid_json_line"}),
    "not_utf8": (line("a") + b"\xff\xfe\xfd\n", {2: "invalid_json_line"}),
    "missing_messages": (
        line("a") + line("b", body={"model": "fake-chat", "max_tokens": 10}),
        {2: "invalid_request"},
    ),
    "missing_body": (
        line("a")
        + orjson.dumps({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions"})
        + b"\n",
        {2: "missing_required_parameter"},
    ),
    "wrong_url": (line("a", url="/v1/embeddings"), {1: "invalid_url"}),
    "streaming": (
        line("a", body={"model": "fake-chat", "messages": [], "stream": True}),
        {1: "streaming_unsupported"},
    ),
    "duplicate_id": (line("a") + line("a"), {2: "duplicate_custom_id"}),
    "mixed_models": (
        line("a") + line("b", body={"model": "fake-embed", "messages": [{"role": "user"}]}),
        {2: "mismatched_model"},
    ),
    "too_many": (chat_lines(LIMIT_REQUESTS + 1), {None: "too_many_requests"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_fails_validation(service: Service, case: str) -> None:
    content, expected = CASES[case]
    client = service.client()
    source = upload(client, content)
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed", "completed"})
    assert failed.status == "failed", failed
    assert failed.output_file_id is None and failed.error_file_id is None
    assert failed.request_counts.total == 0
    found = {e.line: e.code for e in failed.errors.data}
    for line_no, code in expected.items():
        if line_no is None:
            assert code in found.values(), found
        else:
            assert found.get(line_no) == code, found


def test_oversize_upload_is_refused_and_stores_nothing(service: Service) -> None:
    client = service.client(max_retries=0)
    before = {f.id for f in client.files.list()}
    big = line("a") * (LIMIT_BYTES // len(line("a")) + 10)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="batch")
    assert err.value.code == "file_too_large"
    assert {f.id for f in client.files.list()} == before
    assert not list((service.data_dir / "files").glob("*.tmp"))


def test_oversize_json_body_is_413(service: Service) -> None:
    body = b'{"metadata": {"x": "' + b"y" * (2 * 2**20) + b'"}}'
    raw = httpx.post(
        f"{service.url}/batches", content=body, headers={"content-type": "application/json"}
    )
    assert raw.status_code == 413
    assert raw.json()["error"]["code"] == "request_too_large"


def test_bad_purpose_and_unknown_file(service: Service) -> None:
    raw = httpx.post(
        f"{service.url}/files", files={"file": ("a.jsonl", line())}, data={"purpose": "nonsense"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "purpose"
    gone = httpx.get(f"{service.url}/files/file-nope/content")
    assert gone.status_code == 404 and set(gone.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_deleted_file(service: Service) -> None:
    client = service.client(max_retries=0)
    source = upload(client, line("a"))
    deleted = client.files.delete(source.id)
    assert deleted.deleted and deleted.id == source.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(source.id)
    # As on OpenAI, the create succeeds and the batch fails validation.
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_for(client, batch.id, {"failed"})
    assert failed.errors is not None
    assert [(e.code, e.param, e.line) for e in failed.errors.data] == [
        ("invalid_request", "file_id", None)
    ]


def test_files_list_filters_and_pages(service: Service) -> None:
    client = service.client()
    ids = [upload(client, line(f"p{i}")).id for i in range(3)]
    newest_first = httpx.get(f"{service.url}/files", params={"limit": 2, "purpose": "batch"}).json()
    assert [f["id"] for f in newest_first["data"]] == ids[::-1][:2]
    assert newest_first["has_more"]
    page = httpx.get(
        f"{service.url}/files", params={"limit": 2, "order": "asc", "after": ids[0]}
    ).json()
    assert [f["id"] for f in page["data"]] == ids[1:3]
    assert all(f["purpose"] == "batch" for f in page["data"])
    outputs = client.files.list(purpose="batch_output")
    assert all(f.purpose == "batch_output" for f in outputs)
