"""Optional bearer auth: with API keys configured, each key names one tenant.

The gate (`batches/api/gate.py`) authenticates every request before its body is read
and leaves the tenant in the ASGI scope; routes take it from there.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from batches.domain import refusals
from batches.domain.ids import DEFAULT_TENANT

TENANT_KEY = "tenant"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """Keys are held as SHA-256 digests and compared in constant time, every one of
    them, so neither the answer time nor a memory dump gives a key away."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._entries = [(_digest(key), tenant) for key, tenant in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant(self, authorization: str | None) -> str:
        if not self._entries:
            return DEFAULT_TENANT
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise refusals.missing_api_key()
        presented = _digest(token.strip())
        found: str | None = None
        for digest, tenant in self._entries:
            if hmac.compare_digest(digest, presented):
                found = tenant
        if found is None:
            raise refusals.invalid_api_key()
        return found


def tenant_of(request: Request) -> str:
    """The tenant the gate authenticated (it refused the request otherwise)."""
    tenant = request.scope.get("state", {}).get(TENANT_KEY)
    if tenant is None:
        raise refusals.missing_api_key()
    return str(tenant)
