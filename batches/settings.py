"""Configuration: every option is a `BATCHLOG_*` environment variable (or a CLI flag)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batches.webhooks import check_secret, parse_tenant_webhooks

# Never passed as actor arguments (docs/security.md).
SECRET_FIELDS = {"api_keys", "upstream_api_key", "webhook_secret", "tenant_webhooks"}
ACTOR_SECRETS = (
    "upstream_api_key",
    "webhook_secret",
    "tenant_webhooks",
)  # the ones an actor needs, via secrets_file


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHLOG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./batchlog-data")
    # PostgreSQL for the event log, the file contents and the actors' secrets
    # (docs/scaling.md); None: all under data_dir. Actors get it without its password
    # (actor_args); they read the password from Ray's GCS store (actors/dbpassword.py).
    database_url: str | None = None

    # Ray: None starts a local Ray bound to 127.0.0.1; "auto" or an address joins a cluster.
    ray_address: str | None = None
    namespace: str = "batchlog"
    # Serve the API only: attach to the coordinator another `serve` started on this Ray
    # cluster (needs ray_address); start no coordinator, webhook sender or models.
    facade_only: bool = False
    # GET /v1/batches/{id} of a changing batch from the façade's own copies, kept current
    # by a long-polling change request to the coordinator (docs/read-cache.md); off:
    # every GET is a call on the coordinator.
    read_cache: bool = True
    ray_num_cpus: int | None = None
    # A local Ray's workers' log lines also in serve's output (Ray's log monitor, one more
    # ~80 MiB process); off: they stay in Ray's session logs (batchlog/localray.py).
    ray_worker_logs: bool = False

    # Upstreams. With no upstream the embedded local models serve the batches.
    upstream: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout_s: float = 120.0
    upstream_max_concurrency: int = 64
    # Upstream executor processes; 0: one per two cores of this node, at most 4. Each
    # gets a share of every upstream's max_concurrency, so the limit stays global.
    upstream_executors: int = Field(default=0, ge=0)
    upstream_max_response_bytes: int = 32 * 2**20  # a larger answer fails its request
    # model -> upstream base URL, for models served by other upstreams than the default.
    model_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    local_models: bool | None = None  # None: on when there is no upstream
    chat_replicas: int = 2
    chat_threads: int = 1
    chat_parallel: int = 8  # sequences one chat replica decodes together
    chat_kv_tokens: int = 4096  # KV-cache cells they share (one request: at most 2,048)
    model_max_restarts: int = 2  # replica process deaths per model before it is failed
    chat_model_path: Path | None = None  # another GGUF for the embedded chat model
    embed_replicas: int = 1
    embed_threads: int = 1

    # Retries of upstream calls.
    retry_max_attempts: int = 5
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0

    # Auth: "key1:tenant1,key2:tenant2". Empty: no auth, one tenant "default".
    api_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # Batches.
    max_active_batches: int = 4
    # A batch whose actor fails this many times in a row ends `failed`; tries back off
    # from batch_restart_backoff_s, doubling, up to a minute.
    batch_max_restarts: int = 5
    # Ray custom resources a batch actor asks for (JSON), to place batch actors on the
    # nodes that offer them; {} (default): any node.
    batch_actor_resources: dict[str, float] = Field(default_factory=dict)
    # The same for each upstream executor, e.g. to keep them on the nodes that reach the
    # upstream.
    executor_resources: dict[str, float] = Field(default_factory=dict)
    batch_restart_backoff_s: float = 2.0
    # Idle batch actors kept started, so a new batch need not wait for a Ray worker to
    # start (~1 s, ~1 CPU-s); each costs one idle worker's memory (actors/runners.py).
    batch_actor_spares: int = 1
    # Per tenant (429 with Retry-After beyond them; 0 turns one off).
    tenant_max_queued_batches: int = 1_000
    tenant_creates_per_minute: float = 600.0
    tenant_max_stored_bytes: int = 10 * 2**30
    chunk_size: int = 16
    chunks_in_flight: int = 4
    # Outcomes are appended as they come back, at most one append per this many ms per
    # batch (a group commit: fewer fdatasyncs and Ray objects, a few ms later in the log).
    outcome_group_ms: float = Field(default=10.0, ge=0)
    # Batch actors and upstream executors run this many steps nicer than serve and the
    # coordinator, so API answers get a busy core first (actors/priority.py); 0: off.
    bulk_nice: int = Field(default=5, ge=0, le=19)
    completion_window_s: int = 86_400  # "24h"; tests shorten it to see expiry
    idempotency_retention_s: int = 7 * 86_400
    # An upload of purpose "batch" without expires_after expires this long after it was
    # created (OpenAI's default: 30 days); 0: never (docs/retention.md).
    batch_file_ttl_s: int = 30 * 86_400
    # A batch terminal for longer than this leaves the coordinator's memory; GET and list
    # load it from its stream (snapshot + tail) when asked (docs/recovery.md).
    hot_batch_window_s: int = 3_600
    # The coordinator folds new events into data_dir/analytics/tables.duckdb once a minute
    # (docs/analytics.md), so `batchlog sql` and notebooks open fast whatever the history.
    analytics_refresh: bool = True
    max_file_bytes: int = 200 * 2**20
    max_requests_per_batch: int = 50_000
    max_json_body_bytes: int = 1 * 2**20
    max_inflight_requests: int = 512
    # Open connections served at once; while more are open, requests get 503 `overloaded`
    # from the gate, and their connection is closed (docs/security.md).
    max_connections: int = 1024
    # A request body must keep arriving: at most this long between two chunks, and after
    # the first body_timeout_s at least body_min_bytes_per_s on average, else 408.
    body_timeout_s: float = 30.0
    body_min_bytes_per_s: int = 1024

    # HTTP Host names accepted (DNS rebinding). None: the loopback names when bound to
    # loopback, any host otherwise; "*" accepts any.
    trusted_hosts: Annotated[list[str] | None, NoDecode] = None
    # Serving a non-loopback address without API keys is refused unless this is set.
    allow_open: bool = False
    fsync: bool = True
    # Uploads and creates are refused (507) when the data dir's disk has less free space.
    min_free_bytes: int = 256 * 2**20
    # At start, content files no event names (and .tmp files) older than this go.
    orphan_file_grace_s: float = 3600.0

    # Live progress (docs/live.md): SSE heartbeat while idle, and how often a stream
    # looks for new events.
    sse_heartbeat_s: float = 15.0
    sse_poll_s: float = 0.25

    # Webhooks (docs/webhooks.md): the deployment's, and per tenant "tenant=url|secret,...".
    webhook_url: str | None = None
    webhook_secret: str | None = None
    tenant_webhooks: Annotated[dict[str, dict[str, str]], NoDecode] = Field(default_factory=dict)
    webhook_retry_base_s: float = 5.0
    webhook_retry_max_delay_s: float = 3_600.0
    webhook_retry_period_s: float = 72 * 3_600.0
    webhook_timeout_s: float = 10.0
    snapshot_every: int = 1_000

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            keys: dict[str, str] = {}
            for pair in filter(None, (p.strip() for p in value.split(","))):
                # The tenant name lands in events, /events and SQL: a key without one
                # would put the secret there, so it is refused.
                key, _, tenant = pair.rpartition(":")
                if not key.strip() or not tenant.strip():
                    raise ValueError("BATCHLOG_API_KEYS entries must be key:tenant")
                keys[key.strip()] = tenant.strip()
            return keys
        return value

    @field_validator("tenant_webhooks", mode="before")
    @classmethod
    def _parse_tenant_webhooks(cls, value: Any) -> Any:
        return parse_tenant_webhooks(value) if isinstance(value, str) else value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)

    @property
    def webhooks_on(self) -> bool:
        return bool(self.webhook_url or self.tenant_webhooks)

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("model_map", mode="before")
    @classmethod
    def _parse_model_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("{"):
                return json.loads(value)
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            return dict(p.split("=", 1) for p in pairs)
        return value

    def actor_args(self) -> dict[str, Any]:
        """Settings for actor constructors: without secrets (Ray keeps actor arguments in
        its GCS to restart actors) nor the database password. Actors that need a secret
        read it with `read_secret`."""
        args = self.model_dump(mode="json", exclude=SECRET_FIELDS)
        if self.database_url:
            args["database_url"] = split_password(self.database_url)[0]
        return args

    def write_secrets(self) -> None:
        """The secrets actors need: with a database, in PostgreSQL, which every node
        reaches (batches/pgsecrets.py); else in a file only its owner can read."""
        data = {name: getattr(self, name) for name in ACTOR_SECRETS}
        if self.database_url:
            from batches import pgsecrets

            pgsecrets.write(self.database_url, data)
            # A copy left by an earlier run without a database must not linger.
            self.secrets_file.unlink(missing_ok=True)
            return
        tmp = self.secrets_file.with_name(self.secrets_file.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.secrets_file)

    def read_secret(self, name: str) -> Any:
        if self.database_url:
            from batches import pgsecrets

            return pgsecrets.read(self.database_url, name)
        try:
            return json.loads(self.secrets_file.read_text()).get(name)
        except FileNotFoundError:
            return None

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "secrets.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def use_local_models(self) -> bool:
        return self.upstream is None if self.local_models is None else self.local_models


def split_password(url: str) -> tuple[str, str | None]:
    """A PostgreSQL URL (or key=value string) without its password, and the password
    (None: it had none; then the URL comes back unchanged)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    if password is None:
        return url, None
    return make_conninfo("", **params), str(password)


def with_password(url: str, password: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, password=password)
