"""The gate every HTTP request passes before a route reads a byte of its body.

In this order: the open connections (uvicorn's own limit answers in plain text, so the
gate keeps it, in OpenAI's envelope), the Host header (DNS rebinding), the API key, the
media type, the declared size, then the in-flight count (backpressure), so a flood of
connections costs a counter read, and an unauthenticated or oversize request costs a
header parse and never holds a slot. The body must then keep
arriving at a minimum rate, so slow clients cannot hold slots either
(docs/security.md). Plain ASGI: BaseHTTPMiddleware costs a task group per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batches.api.auth import TENANT_KEY, KeyRing
from batches.api.errors import respond
from batches.domain import refusals
from batches.domain.errors import DomainError
from batches.filestore import free_bytes
from batches.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# Reachable without a key: the API description, and /health (status only, see app.py).
OPEN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
HEALTH_PATH = "/health"
UPLOAD_PATH = "/v1/files"
CREATE_PATH = "/v1/batches"
# Room for the multipart boundaries and part headers around an upload's file bytes.
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooSlow(Exception):
    """The client stopped sending, or sends below the minimum rate: answered 408."""


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def trusted_hosts(settings: Settings) -> frozenset[str] | None:
    """None accepts any Host header."""
    if settings.trusted_hosts is not None:
        hosts = frozenset(settings.trusted_hosts)
        return None if "*" in hosts else hosts
    if is_loopback(settings.host):
        return LOOPBACK_NAMES | {settings.host.lower()}
    return None  # bound to a real interface: the keys are the barrier (serve.py insists)


def host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        open_connections: Callable[[], int] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        # The server's count of open connections, this one's included (serve.py).
        self.open_connections = open_connections
        self.keys = KeyRing(settings.api_keys)
        self.hosts = trusted_hosts(settings)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self.open_connections is not None
            and self.open_connections() > self.settings.max_connections
        ):
            await respond(refusals.too_many_connections())(scope, receive, send)
            return
        try:
            tenant = self._admit(scope)
        except DomainError as err:
            await respond(err, {"connection": "close"})(scope, receive, send)
            return
        scope.setdefault("state", {})[TENANT_KEY] = tenant
        if self.in_flight >= self.settings.max_inflight_requests:
            await respond(refusals.overloaded())(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, self._paced(receive), send)
        finally:
            self.in_flight -= 1

    def _admit(self, scope: Scope) -> str | None:
        """The tenant, or a refusal (DomainError); reads headers only."""
        headers = Headers(scope=scope)
        path: str = scope["path"]
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            raise refusals.host_not_allowed()
        tenant: str | None = None
        if path not in OPEN_PATHS:
            try:
                tenant = self.keys.tenant(headers.get("authorization"))
            except DomainError:
                if path != HEALTH_PATH:
                    raise
        if scope["method"] in ("POST", "PUT", "PATCH"):
            self._check_body(path, headers)
        return tenant

    def _check_body(self, path: str, headers: Headers) -> None:
        if path in (UPLOAD_PATH, CREATE_PATH):
            self._check_free_space()
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (length is not None and length != "0")
        if path == UPLOAD_PATH:
            limit = self.settings.max_file_bytes + MULTIPART_OVERHEAD
            if media != "multipart/form-data":
                raise refusals.upload_not_multipart()
            if length is not None and length.isdigit() and int(length) > limit:
                raise refusals.file_too_large(self.settings.max_file_bytes)
            return
        if has_body and media != "application/json":
            # A page in a browser can send text/plain or a form without asking first;
            # application/json needs a CORS preflight, which batchlog never grants.
            raise refusals.body_not_json()
        limit = self.settings.max_json_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise refusals.request_too_large(limit)

    def _check_free_space(self) -> None:
        """Refuse new uploads and creates before the disk is full, while the log can
        still record the batches already running."""
        floor = self.settings.min_free_bytes
        if floor > 0 and free_bytes(self.settings.data_dir) < floor:
            raise refusals.insufficient_storage(floor)

    def _paced(self, receive: Receive) -> Receive:
        """`receive`, but the body must keep coming: at most body_timeout_s between
        chunks, and body_min_bytes_per_s on average once body_timeout_s has passed."""
        timeout = self.settings.body_timeout_s
        min_rate = self.settings.body_min_bytes_per_s
        started = time.monotonic()
        received = 0
        done = False

        async def paced() -> Message:
            nonlocal received, done
            if done:  # after the body: a disconnect wait, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise BodyTooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                elapsed = time.monotonic() - started
                if not done and elapsed > timeout and received < min_rate * elapsed:
                    raise BodyTooSlow()
            else:
                done = True
            return message

        return paced
