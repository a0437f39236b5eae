"""Webhook routes and Standard Webhooks signing (docs/webhooks.md).

The signature is the Standard Webhooks one, computed by the `standardwebhooks` library:
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, so that the
openai SDK's ``client.webhooks.unwrap(body, headers, secret=...)`` verifies it.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class Route:
    url: str
    secret: str


def new_secret() -> str:
    """A fresh ``whsec_<base64 of 32 random bytes>`` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """A ``whsec_`` secret must be base64 (as both the library and the SDK decode it)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ValueError("a whsec_ webhook secret must be base64 after the prefix") from exc
    if not secret:
        raise ValueError("a webhook secret may not be empty")
    return secret


def parse_tenant_webhooks(value: str) -> dict[str, dict[str, str]]:
    """``tenant=url|secret,...`` -> ``{tenant: {"url", "secret"}}``."""
    routes: dict[str, dict[str, str]] = {}
    for entry in filter(None, (p.strip() for p in value.split(","))):
        tenant, _, target = entry.partition("=")
        url, _, secret = target.partition("|")
        if not tenant.strip() or not url.strip() or not secret.strip():
            raise ValueError("BATCHLOG_TENANT_WEBHOOKS entries must be tenant=url|secret")
        routes[tenant.strip()] = {"url": url.strip(), "secret": check_secret(secret.strip())}
    return routes


def route_for(
    tenant: str,
    url: str | None,
    secret: str | None,
    tenant_routes: dict[str, Any],
) -> Route | None:
    """The tenant's own webhook if it has one, else the deployment's, else None."""
    own = tenant_routes.get(tenant)
    if own:
        return Route(own["url"], own["secret"])
    if url and secret:
        return Route(url, secret)
    return None


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (a fresh timestamp each)."""
    # A whsec_ secret is base64 of the key (both sides decode it); any other string is
    # the key's bytes, as the openai SDK takes it.
    key: str | bytes = secret if secret.startswith(SECRET_PREFIX) else secret.encode()
    signature = Webhook(key).sign(
        webhook_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode()
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
