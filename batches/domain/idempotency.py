"""The idempotency rule for batch creation (see docs/idempotency.md).

One batch per (tenant, key): the same key with the same parameters returns the
existing batch; with other parameters it is refused with 409 ``idempotency_key_reused``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batches.domain import refusals
from batches.domain.wire import MAX_IDEMPOTENCY_KEY_CHARS

DEFAULT_RETENTION_S = 7 * 86_400
"""How long a claimed key is remembered by default (a setting)."""


def idempotency_digest(
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: Mapping[str, str] | None,
    output_expires_after: Mapping[str, Any] | None,
) -> str:
    """sha256 hex of the create parameters as canonical JSON.

    Keys are sorted at every level (so metadata order is ignored) and no metadata is
    the same as empty metadata, because both create the same batch.
    """
    params = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
        "metadata": dict(metadata or {}),
        "output_expires_after": dict(output_expires_after) if output_expires_after else None,
    }
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _is_bare_char(ch: str) -> bool:
    # Visible ASCII minus the characters that would make it a structured-field list,
    # parameter or string: UUIDs and other common bare keys pass.
    return "!" <= ch <= "~" and ch not in '",;\\'


def parse_idempotency_header(value: str) -> str:
    """The key in an ``Idempotency-Key`` header: a bare token or an RFC 8941 string."""
    text = value.strip(" \t")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        key = _unquote(text[1:-1])
    elif text and all(_is_bare_char(ch) for ch in text):
        key = text
    else:
        raise refusals.invalid_idempotency_header()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise refusals.idempotency_key_length(MAX_IDEMPOTENCY_KEY_CHARS)
    return key


def _unquote(inner: str) -> str:
    """RFC 8941 sf-string body: printable ASCII; only \\" and \\\\ may be escaped."""
    out: list[str] = []
    chars = iter(inner)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in ('"', "\\"):
                raise refusals.invalid_idempotency_header("escape")
            out.append(nxt)
        elif ch == '"' or not " " <= ch <= "~":
            raise refusals.invalid_idempotency_header("character")
        else:
            out.append(ch)
    return "".join(out)


def resolve_idempotency_key(
    body_key: str | None, alias_key: str | None, header_value: str | None
) -> str | None:
    """The one key named by the body field, its ``idem_tok`` alias and the header.

    All sources that are given must agree; two different keys are refused rather
    than one silently winning.
    """
    header_key = parse_idempotency_header(header_value) if header_value is not None else None
    given = {k for k in (body_key, alias_key, header_key) if k is not None}
    if len(given) > 1:
        raise refusals.conflicting_idempotency_keys()
    return given.pop() if given else None


@dataclass(frozen=True, slots=True)
class Claim:
    tenant: str
    key: str
    digest: str
    batch_id: str
    at: int


class IdempotencyIndex:
    """In-memory (tenant, key) -> Claim, rebuilt by the coordinator from its events."""

    def __init__(self) -> None:
        self._claims: dict[tuple[str, str], Claim] = {}

    def __len__(self) -> int:
        return len(self._claims)

    def claim(self, tenant: str, key: str, digest: str, batch_id: str, at: int) -> Claim:
        """Record a claim (a later claim of an expired key replaces the old one)."""
        claim = Claim(tenant=tenant, key=key, digest=digest, batch_id=batch_id, at=at)
        self._claims[(tenant, key)] = claim
        return claim

    def lookup(self, tenant: str, key: str, now: float, retention_s: float) -> Claim | None:
        """The live claim of ``key`` for ``tenant``; claims older than retention are ignored."""
        claim = self._claims.get((tenant, key))
        if claim is None or now - claim.at >= retention_s:
            return None
        return claim
