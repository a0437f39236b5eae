"""Optional bearer auth: with API keys configured, each key is one tenant."""

from __future__ import annotations

from fastapi import Request

from batches.api.errors import ApiError
from batches.domain.ids import DEFAULT_TENANT


def tenant_of(request: Request) -> str:
    keys: dict[str, str] = request.app.state.settings.api_keys
    if not keys:
        return DEFAULT_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "You didn't provide an API key.", "missing_api_key")
    tenant = keys.get(token.strip())
    if tenant is None:
        raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")
    return tenant
