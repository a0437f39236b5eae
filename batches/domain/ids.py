"""Object ids in OpenAI's shapes: ``batch_...``, ``file-...``, ``batch_req_...``."""

from __future__ import annotations

import secrets

DEFAULT_TENANT = "default"
"""The tenant used when auth does not name one (single-tenant deployments)."""


def _hex24() -> str:
    # 96 random bits: collision-free in practice and the length OpenAI's ids have.
    return secrets.token_hex(12)


def new_batch_id() -> str:
    return "batch_" + _hex24()


def new_file_id() -> str:
    return "file-" + _hex24()


def new_request_id() -> str:
    return "batch_req_" + _hex24()
