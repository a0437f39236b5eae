"""The executor for OpenAI-compatible HTTP upstreams (vLLM, Ollama, OpenAI, ...).

A batch actor hands a chunk of work items to ``UpstreamExecutorActor.run_chunk`` and gets
one Outcome per item back (shapes in ``docs/architecture.md``, "Executors"). The executor
is one async Ray actor shared by every batch actor, so all chunks bound for an upstream
share its connection pool and its in-flight semaphore.

- ``HttpUpstream``: one upstream. One ``aiohttp.ClientSession`` of ``max_concurrency``
  connections, an ``asyncio.Semaphore(max_concurrency)`` around each attempt, retries with exponential
  backoff + jitter (``batches.domain.retry``, honouring ``Retry-After``) on the statuses
  ``is_retryable_status`` names, timeouts, refused and dropped connections. The
  semaphore is held for an attempt only, never during a backoff sleep.
- ``UpstreamRouter``: model -> upstream (a model map, then what each upstream's
  ``GET /models`` lists, then a default upstream).
- ``UpstreamExecutor`` / ``UpstreamExecutorActor``: the Ray async-actor wrapper.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import ray

from batches.domain import line_errors, request_errors
from batches.domain.executor import (
    LineError,
    Outcome,
    WorkItem,
    make_outcome,
    rejected_outcomes,
)
from batches.domain.retry import RetryPolicy, backoff_delay, is_retryable_status

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

# --- one upstream -------------------------------------------------------------------

_rng = random.Random()
_MAX_ERROR_TEXT = 2000


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    base_url: str  # ends in /v1
    api_key: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 64
    max_response_bytes: int = 32 * 2**20

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UpstreamConfig:
        known = {
            "name",
            "base_url",
            "api_key",
            "timeout_s",
            "max_concurrency",
            "max_response_bytes",
        }
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown upstream settings: {sorted(unknown)}")
        return cls(**d)


def _header_safe(value: str) -> str:
    """Header values must be visible ASCII: percent-encode anything else."""
    if value.isascii() and value.isprintable():
        return value
    from urllib.parse import quote

    return quote(value, safe="!#$%&'()*+,-./:;<=>?@[]^_`{|}~ ")


class ResponseTooLarge(Exception):
    pass


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise ResponseTooLarge(f"the upstream's response is larger than {limit} bytes")
    stream = resp.content
    body = b""
    while chunk := await stream.readany():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"the upstream's response is larger than {limit} bytes")
    return body


def _parse_body(content: bytes) -> tuple[dict[str, Any], bool]:
    """(body as a dict, whether it was a JSON object)."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content[:_MAX_ERROR_TEXT].decode("utf-8", errors="replace")
        return {"error": {"message": text}}, False
    if isinstance(parsed, dict):
        return parsed, True
    return {
        "error": {"message": content[:_MAX_ERROR_TEXT].decode("utf-8", errors="replace")}
    }, False


def _env_proxy(url: str) -> bool:
    """Whether the environment names a proxy for ``url`` (HTTP(S)_PROXY, NO_PROXY)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    return parts.scheme in getproxies() and not proxy_bypass(parts.hostname or "")


class HttpUpstream:
    """One OpenAI-compatible upstream: a pooled client, in-flight bound, retries."""

    def __init__(self, config: UpstreamConfig, policy: RetryPolicy | None = None) -> None:
        self.config = config
        self.policy = policy or RetryPolicy()
        self.name = config.name
        self.base_url = config.base_url.rstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        # aiohttp, chosen by measurement (bench/bench_http_clients.py, docs/benchmarks.md
        # "Service"): ~6x less client CPU per request than httpx split in pools of 8, ~20x
        # less than one 64-connection httpx client (whose pool scan grows with its size).
        # Its session needs a running loop: made on first use.
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = (
            _ssl_context() if self.base_url.startswith("https:") else False
        )
        # httpx honoured HTTP(S)_PROXY by default; aiohttp does so only with trust_env,
        # which re-reads the environment (and ~/.netrc) per request: only if one is set.
        self._trust_env = _env_proxy(self.base_url)
        self._sem = asyncio.Semaphore(config.max_concurrency)
        self.inflight = 0
        self.max_inflight = 0
        self.attempts_total = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # here: only the executor's process needs it (batch actors don't)

            limit = self.config.max_concurrency  # the semaphore never lets more wait
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ssl=self._ssl),
                headers=self._headers,
                # like httpx.Timeout(t): connecting and each read wait at most t
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.config.timeout_s, sock_read=self.config.timeout_s
                ),
                trust_env=self._trust_env,
            )
        return self._session

    def url_for(self, endpoint: str) -> str:
        """``/v1/chat/completions`` -> ``{base_url}/chat/completions``."""
        path = endpoint[len("/v1") :] if endpoint.startswith("/v1/") else endpoint
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    async def list_models(self) -> list[str]:
        """The ids from ``GET /models``; ``[]`` (and a warning) if it cannot be had."""
        try:
            from aiohttp import ClientTimeout

            timeout = ClientTimeout(total=min(self.config.timeout_s, 10.0))
            url = self.base_url + "/models"
            async with self._client().get(url, timeout=timeout) as resp:
                resp.raise_for_status()
                content = await _read_capped(resp, self.config.max_response_bytes)
            data = orjson.loads(content).get("data", [])
            return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except Exception as e:
            log.warning("upstream %s: cannot list models at %s: %r", self.name, self.base_url, e)
            return []

    async def run_chunk(self, endpoint: str, items: list[WorkItem], batch_id: str) -> list[Outcome]:
        """One Outcome per item, in the items' order; never raises for an item's failure."""
        url = self.url_for(endpoint)
        return list(await asyncio.gather(*(self._run_one(url, it, batch_id) for it in items)))

    async def stream_chunk(
        self, endpoint: str, items: list[WorkItem], batch_id: str, group_s: float = 0.0
    ) -> AsyncIterator[list[Outcome]]:
        """The same Outcomes as ``run_chunk``, in groups as they are ready (not in the
        items' order): each group is what came back in the ``group_s`` after the first of
        it, so a caller that pays per group (a Ray object) is not paid per request."""
        url = self.url_for(endpoint)
        pending = {asyncio.ensure_future(self._run_one(url, it, batch_id)) for it in items}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending and group_s > 0:
                    more, pending = await asyncio.wait(pending, timeout=group_s)
                    done |= more
                yield [t.result() for t in done]
        finally:
            for t in pending:
                t.cancel()

    async def _run_one(self, url: str, item: WorkItem, batch_id: str) -> Outcome:
        custom_id = str(item.get("custom_id", ""))
        started_at = time.time()
        t0 = time.perf_counter()
        try:
            payload = orjson.dumps(item["body"])
        except (KeyError, TypeError) as e:
            failure = line_errors.body_not_encodable(f"{type(e).__name__}: {e}")
            return make_outcome(
                item, started_at=started_at, finished_at=time.time(), error=failure, attempts=0
            )
        from aiohttp import ClientConnectorError, ClientError, InvalidURL

        headers = {"x-batchlog-request": _header_safe(f"{batch_id}:{custom_id}")}
        policy = self.policy
        session = self._client()
        limit = self.config.max_response_bytes
        attempt = 0
        started = False
        status_code: int | None = None
        body: dict[str, Any] | None = None
        outcome_error: LineError | None = None
        error: LineError | None = None
        while True:
            attempt += 1
            status: int | None = None
            retry_after: str | None = None
            content = b""
            final = False  # an answer that retrying cannot fix
            error = None
            async with self._sem:
                if not started:  # the clock starts at the first attempt, not in the queue
                    started = True
                    started_at = time.time()
                    t0 = time.perf_counter()
                self.inflight += 1
                if self.inflight > self.max_inflight:
                    self.max_inflight = self.inflight
                self.attempts_total += 1
                try:
                    # Streamed and capped: a runaway upstream cannot fill this process.
                    async with session.post(url, data=payload, headers=headers) as r:
                        content = await _read_capped(r, limit)
                        status = r.status
                        retry_after = r.headers.get("retry-after")
                except ResponseTooLarge:
                    error = line_errors.upstream_response_too_large(limit)
                    final = True
                except TimeoutError as e:  # aiohttp's connect/read timeouts are TimeoutErrors
                    error = line_errors.upstream_timeout(url, _describe(e))
                except (ClientConnectorError, InvalidURL) as e:
                    error = line_errors.upstream_unreachable(url, _describe(e))
                except ClientError as e:  # dropped connections, protocol errors
                    error = line_errors.upstream_connection_failed(url, _describe(e))
                finally:
                    self.inflight -= 1
            if status is not None:
                if (
                    200 <= status < 300
                    or not is_retryable_status(status)
                    or attempt >= policy.max_attempts
                ):
                    body, ok = _parse_body(content)
                    status_code = status
                    if 200 <= status < 300 and not ok:
                        outcome_error = line_errors.upstream_not_a_json_object()
                    break
            elif final or attempt >= policy.max_attempts:
                assert error is not None
                outcome_error = line_errors.after_attempts(error, attempt) if attempt > 1 else error
                break
            delay = backoff_delay(policy, attempt, retry_after, _rng.random(), now=time.time())
            await asyncio.sleep(delay)
        return make_outcome(
            item,
            started_at=started_at,
            finished_at=time.time(),
            status_code=status_code,
            body=body,
            error=outcome_error,
            attempts=attempt,
            latency_ms=round((time.perf_counter() - t0) * 1000.0, 3),
        )

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "max_concurrency": self.config.max_concurrency,
            "inflight": self.inflight,
            "max_inflight": self.max_inflight,
            "attempts_total": self.attempts_total,
        }

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying context for all of an upstream's clients (loading CAs is slow)."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _describe(e: Exception) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- routing --------------------------------------------------------------------------


def _model_not_found(model: str | None, items: list[WorkItem]) -> list[Outcome]:
    err = request_errors.no_upstream_for_model(model)
    return rejected_outcomes(items, err.status_code, err.body(), at=time.time(), attempts=0)


class UpstreamRouter:
    """Picks the upstream for a model: the model map, then discovery, then the default."""

    REFRESH_MIN_INTERVAL_S = 5.0

    def __init__(
        self,
        upstreams: list[HttpUpstream],
        model_map: dict[str, str] | None = None,
        default: str | None = None,
    ) -> None:
        self.upstreams = {u.name: u for u in upstreams}
        if len(self.upstreams) != len(upstreams):
            raise ValueError("upstream names must be unique")
        self.model_map = dict(model_map or {})
        for model, name in self.model_map.items():
            if name not in self.upstreams:
                raise ValueError(f"model map sends {model!r} to unknown upstream {name!r}")
        if default is not None and default not in self.upstreams:
            raise ValueError(f"unknown default upstream {default!r}")
        self.default = default
        self._discovered: dict[str, str] = {}
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()

    async def list_models(self) -> dict[str, str]:
        """model -> upstream name: every upstream's ``GET /models`` (first upstream listing
        a model wins) overlaid with the model map. Also refreshes ``resolve``'s view."""
        ups = list(self.upstreams.values())
        listed = await asyncio.gather(*(u.list_models() for u in ups))
        found: dict[str, str] = {}
        for u, models in zip(ups, listed, strict=True):
            for m in models:
                found.setdefault(m, u.name)
        self._discovered = found
        self._refreshed_at = time.monotonic()
        return {**found, **self.model_map}

    def resolve(self, model: str | None) -> HttpUpstream | None:
        if model is not None:
            name = self.model_map.get(model) or self._discovered.get(model)
            if name is not None:
                return self.upstreams[name]
        return self.upstreams[self.default] if self.default is not None else None

    async def _resolve_or_refresh(self, model: str | None) -> HttpUpstream | None:
        upstream = self.resolve(model)
        if upstream is None:
            async with self._refresh_lock:
                if time.monotonic() - self._refreshed_at >= self.REFRESH_MIN_INTERVAL_S:
                    await self.list_models()
            upstream = self.resolve(model)
        return upstream

    async def run_chunk(
        self, endpoint: str, model: str | None, items: list[WorkItem], batch_id: str
    ) -> list[Outcome]:
        upstream = await self._resolve_or_refresh(model)
        if upstream is None:
            return _model_not_found(model, items)
        return await upstream.run_chunk(endpoint, items, batch_id)

    async def stream_chunk(
        self, endpoint: str, model: str | None, items: list[WorkItem], batch_id: str, group_s: float
    ) -> AsyncIterator[list[Outcome]]:
        """``run_chunk``'s outcomes in groups as they come back (``HttpUpstream.stream_chunk``)."""
        upstream = await self._resolve_or_refresh(model)
        if upstream is None:
            yield _model_not_found(model, items)
            return
        async for group in upstream.stream_chunk(endpoint, items, batch_id, group_s):
            yield group

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams.values()))


# --- the Ray actor ----------------------------------------------------------------------


def _read_secret(path: str, name: str) -> Any:
    try:
        with open(path, "rb") as fh:
            return orjson.loads(fh.read()).get(name)
    except FileNotFoundError:
        return None


class UpstreamExecutor:
    """The executor actor's body: one router over ``HttpUpstream``s for the whole node.

    ``upstreams``: ``[{"name", "base_url", "api_key"?, "timeout_s"?, "max_concurrency"?}]``;
    ``model_map``: model -> upstream name; ``retry``: ``RetryPolicy`` fields; ``default``:
    the upstream for models nobody claims (if not given: the only upstream, else the one
    named ``"default"``, else none, and unclaimed models get 404 ``model_not_found``).
    """

    def __init__(
        self,
        upstreams: list[dict[str, Any]],
        model_map: dict[str, str] | None = None,
        retry: dict[str, Any] | None = None,
        default: str | None = None,
        secrets_file: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        policy = RetryPolicy(**(retry or {}))
        if secrets_file is not None or settings is not None:
            # Secrets are not actor arguments: read the key, from the deployment's
            # secrets (`settings`: the file, or PostgreSQL on any node) or `secrets_file`.
            if settings is not None:
                from actors.dbpassword import actor_settings
                from actors.priority import lower_priority

                deployment = actor_settings(settings)
                lower_priority(deployment.bulk_nice)  # API answers first (actors/priority.py)
                key = deployment.read_secret("upstream_api_key")
            else:
                key = _read_secret(str(secrets_file), "upstream_api_key")
            upstreams = [{**u, "api_key": u.get("api_key") or key} for u in upstreams]
        ups = [HttpUpstream(UpstreamConfig.from_dict(u), policy) for u in upstreams]
        if default is None and ups:
            names = [u.name for u in ups]
            if len(names) == 1:
                default = names[0]
            elif "default" in names:
                default = "default"
        self.router = UpstreamRouter(ups, model_map, default)

    async def list_models(self) -> list[str]:
        """Every model some upstream serves (or the model map names), sorted."""
        return sorted(await self.router.list_models())

    async def model_routes(self) -> dict[str, str]:
        """model -> upstream name."""
        return await self.router.list_models()

    async def run_chunk(
        self, endpoint: str, model: str | None, items: list[WorkItem], batch_id: str
    ) -> list[Outcome]:
        return await self.router.run_chunk(endpoint, model, items, batch_id)

    async def stream_chunk(
        self,
        endpoint: str,
        model: str | None,
        items: list[WorkItem],
        batch_id: str,
        group_s: float = 0.005,
    ) -> AsyncIterator[list[Outcome]]:
        """``run_chunk`` as a Ray streaming generator: each yield is a group of outcomes
        that came back within ``group_s`` of the group's first (one Ray object per group,
        not per request), so the batch actor can record them as they arrive instead of
        when the chunk's slowest request is back."""
        async for group in self.router.stream_chunk(endpoint, model, items, batch_id, group_s):
            yield group

    async def stats(self) -> list[dict[str, Any]]:
        return [u.stats() for u in self.router.upstreams.values()]

    async def aclose(self) -> None:
        await self.router.aclose()


UpstreamExecutorActor = ray.remote(UpstreamExecutor)
