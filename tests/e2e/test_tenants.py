"""With API keys configured, every call needs one and a tenant sees only its own objects."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_API_KEYS": "key-a:alice,key-b:bob",
        **FAST_RETRIES,
    }
    with Service(tmp_path_factory.mktemp("auth") / "data", env) as svc:
        yield svc


def test_tenants_are_isolated(secured: Service) -> None:
    alice = secured.client(api_key="key-a", max_retries=0)
    bob = secured.client(api_key="key-b", max_retries=0)
    source = upload(alice, chat_lines(2))
    batch = alice.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"idempotency_key": "shared-key"},
    )
    done = wait_for(alice, batch.id, {"completed"})
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(source.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.cancel(batch.id)
    # bob cannot use alice's file: his batch fails as for a file that does not exist
    stolen = bob.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    refused = wait_for(bob, stolen.id, {"failed"})
    assert refused.errors is not None and refused.errors.data[0].message == (
        f"Cannot find file {source.id}, or this tenant does not have access to it."
    )
    assert refused.request_counts is not None and refused.request_counts.total == 0
    assert [b.id for b in bob.batches.list()] == [stolen.id]
    assert batch.id in [b.id for b in alice.batches.list()]
    assert source.id not in [f.id for f in bob.files.list()]
    # Keys are scoped per tenant: bob's "shared-key" is his own.
    bob_source = upload(bob, chat_lines(1))
    bob_batch = bob.batches.create(
        input_file_id=bob_source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_body={"idempotency_key": "shared-key"},
    )
    assert bob_batch.id != batch.id


def test_missing_or_wrong_key_is_401(secured: Service) -> None:
    with pytest.raises(openai.AuthenticationError):
        secured.client(api_key="wrong", max_retries=0).batches.list()
