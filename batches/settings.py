"""Configuration: every option is a `BATCHLOG_*` environment variable (or a CLI flag)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHLOG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./batchlog-data")

    # Ray: None starts a local Ray bound to 127.0.0.1; "auto" or an address joins a cluster.
    ray_address: str | None = None
    namespace: str = "batchlog"
    ray_num_cpus: int | None = None

    # Upstreams. With no upstream the embedded local models serve the batches.
    upstream: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout_s: float = 120.0
    upstream_max_concurrency: int = 64
    # model -> upstream base URL, for models served by other upstreams than the default.
    model_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    local_models: bool | None = None  # None: on when there is no upstream
    chat_replicas: int = 2
    chat_threads: int = 1
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
    chunk_size: int = 16
    chunks_in_flight: int = 4
    completion_window_s: int = 86_400  # "24h"; tests shorten it to see expiry
    idempotency_retention_s: int = 7 * 86_400
    max_file_bytes: int = 200 * 2**20
    max_requests_per_batch: int = 50_000
    max_json_body_bytes: int = 1 * 2**20
    max_inflight_requests: int = 512
    fsync: bool = True
    snapshot_every: int = 1_000

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            keys: dict[str, str] = {}
            for pair in filter(None, (p.strip() for p in value.split(","))):
                key, _, tenant = pair.partition(":")
                keys[key] = tenant or key
            return keys
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

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def use_local_models(self) -> bool:
        return self.upstream is None if self.local_models is None else self.local_models
