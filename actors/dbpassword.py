"""The database password, kept out of what Ray shows about actors.

Actors get the settings as constructor arguments (`Settings.actor_args`), and with them
the database URL without its password. The password travels in Ray's GCS key-value
store instead: `batchlog serve` puts it there (from the URL it was given, or its
PGPASSWORD), and every actor and driver, on any node, puts it back into its own copy
of the URL. Not a runtime_env variable: Ray's state API (`list_actors(detail=True)`,
the dashboard) shows an actor's runtime_env; it shows neither the KV store nor actor
arguments. A node whose environment or ~/.pgpass (PGPASSFILE) already holds the
password needs none of this: libpq reads those itself (docs/scaling.md).
"""

from __future__ import annotations

import os
from typing import Any

from ray.experimental import internal_kv

from batches.settings import Settings, split_password, with_password

_KV_NAMESPACE = "batchlog"


def _key(namespace: str) -> bytes:
    return f"{namespace}/database-password".encode()


def publish(settings: Settings) -> None:
    """In the process that runs `serve`, after `ray.init`."""
    if not settings.database_url:
        return
    password = split_password(settings.database_url)[1] or os.environ.get("PGPASSWORD")
    if password:
        internal_kv._internal_kv_put(
            _key(settings.namespace), password.encode(), overwrite=True, namespace=_KV_NAMESPACE
        )


def full_url(url: str, namespace: str) -> str:
    """`url` with the published password, if it has none and one was published."""
    if split_password(url)[1] is not None or not internal_kv._internal_kv_initialized():
        return url
    password = internal_kv._internal_kv_get(_key(namespace), namespace=_KV_NAMESPACE)
    return with_password(url, password.decode()) if password else url


def actor_settings(args: dict[str, Any]) -> Settings:
    """An actor's settings from its constructor argument, able to reach the database."""
    settings = Settings.model_validate(args)
    if settings.database_url:
        settings.database_url = full_url(settings.database_url, settings.namespace)
    return settings
