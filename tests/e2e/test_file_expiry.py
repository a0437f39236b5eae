"""File expiry through the real service and the openai SDK: an upload without
expires_after gets the default lifetime (shortened here to seconds), expires once its
batch is done, and is then gone: 404, bytes deleted, a FileExpired event; the batch's
output file (no output_expires_after) stays."""

from __future__ import annotations

import time

import openai
import pytest

from batches.testing import FakeUpstream, Service
from eventlog import EventStore
from tests.e2e.conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

pytestmark = pytest.mark.e2e

TTL_S = 3


def test_an_upload_expires_after_its_batch_and_is_gone(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("fexp") / "data"
    env = {"BATCHLOG_UPSTREAM": upstream.url, "BATCHLOG_BATCH_FILE_TTL_S": str(TTL_S)}
    with Service(data, {**env, **FAST_RETRIES}) as svc:
        client = svc.client()
        source = upload(client, chat_lines(5, prefix="x"))
        assert source.expires_at == source.created_at + TTL_S  # OpenAI's default, shortened
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait_for(client, batch.id, {"completed"})
        assert len(read_lines(client, done.output_file_id)) == 5
        content = data / "files" / source.id
        deadline = time.monotonic() + 60
        while True:  # the coordinator looks once a second
            try:
                client.files.retrieve(source.id)
            except openai.NotFoundError:
                break
            assert time.monotonic() < deadline, "the input file never expired"
            time.sleep(0.3)
        with pytest.raises(openai.NotFoundError):
            client.files.content(source.id)
        assert source.id not in [f.id for f in client.files.list()]
        assert not content.exists()
        out = client.files.retrieve(done.output_file_id)  # no output_expires_after: stays
        assert out.expires_at is None
        assert len(read_lines(client, done.output_file_id)) == 5
    with EventStore.open(data / "log") as store:
        expired = [e.data for e in store.read("files") if e.type == "FileExpired"]
    assert [e["file_id"] for e in expired] == [source.id]
    assert expired[0]["at"] >= expired[0]["expires_at"] == source.expires_at
