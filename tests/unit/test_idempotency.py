from __future__ import annotations

from typing import Any

import pytest

from batches.domain.errors import ConflictingIdempotencyKeys, InvalidRequest
from batches.domain.idempotency import (
    DEFAULT_RETENTION_S,
    IdempotencyIndex,
    idempotency_digest,
    parse_idempotency_header,
    resolve_idempotency_key,
)

BASE: dict[str, Any] = {
    "input_file_id": "file-1",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
    "metadata": {"a": "1", "b": "2"},
    "output_expires_after": {"anchor": "created_at", "seconds": 3600},
}


def digest(**over: Any) -> str:
    return idempotency_digest(**(BASE | over))


def test_digest_is_sha256_hex_and_stable() -> None:
    assert len(digest()) == 64 and int(digest(), 16) >= 0
    assert digest() == digest()


def test_digest_ignores_key_order() -> None:
    assert digest(metadata={"b": "2", "a": "1"}) == digest()
    assert digest(output_expires_after={"seconds": 3600, "anchor": "created_at"}) == digest()


def test_digest_none_and_empty_metadata_are_the_same() -> None:
    assert digest(metadata=None) == digest(metadata={})
    assert digest(metadata=None) != digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_file_id", "file-2"),
        ("endpoint", "/v1/embeddings"),
        ("completion_window", "48h"),
        ("metadata", {"a": "1", "b": "3"}),
        ("output_expires_after", {"anchor": "created_at", "seconds": 7200}),
        ("output_expires_after", None),
    ],
)
def test_digest_differs_on_each_field(field: str, value: Any) -> None:
    assert digest(**{field: value}) != digest()


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("abc", "abc"),
        ("  abc  ", "abc"),
        ("123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000"),
        ('"abc"', "abc"),
        ('"with space"', "with space"),
        ('"a\\"b\\\\c"', 'a"b\\c'),
        ("x" * 255, "x" * 255),
    ],
)
def test_parse_header(header: str, key: str) -> None:
    assert parse_idempotency_header(header) == key


@pytest.mark.parametrize(
    "header",
    ["", "   ", '""', '"abc', 'a"b', "a b", "a,b", "k;p=1", '"a\\nb"', '"caf\u00e9"', "x" * 256],
)
def test_parse_header_refuses_bad_values(header: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_idempotency_header(header)
    assert info.value.http_status == 400


def test_resolve_sources() -> None:
    assert resolve_idempotency_key(None, None, None) is None
    assert resolve_idempotency_key("k", None, None) == "k"
    assert resolve_idempotency_key(None, "k", None) == "k"
    assert resolve_idempotency_key(None, None, '"k"') == "k"
    assert resolve_idempotency_key("k", "k", "k") == "k"


@pytest.mark.parametrize(
    ("body", "alias", "header"),
    [("a", "b", None), ("a", None, "b"), (None, "a", '"b"'), ("a", "a", "b")],
)
def test_resolve_conflict_is_400(body: str | None, alias: str | None, header: str | None) -> None:
    with pytest.raises(ConflictingIdempotencyKeys) as info:
        resolve_idempotency_key(body, alias, header)
    assert info.value.http_status == 400


def test_index_claim_lookup_and_retention() -> None:
    index = IdempotencyIndex()
    index.claim("t1", "k", "d1", "batch_1", at=1000)
    claim = index.lookup("t1", "k", now=1000 + 10, retention_s=DEFAULT_RETENTION_S)
    assert claim is not None and claim.batch_id == "batch_1"
    assert index.lookup("t2", "k", now=1010, retention_s=DEFAULT_RETENTION_S) is None  # per tenant
    assert index.lookup("t1", "k", now=1000 + 60, retention_s=60) is None  # expired
    index.claim("t1", "k", "d2", "batch_2", at=2000)  # reclaimed after expiry
    claim = index.lookup("t1", "k", now=2001, retention_s=60)
    assert claim is not None and (claim.batch_id, claim.digest) == ("batch_2", "d2")
    assert len(index) == 1
