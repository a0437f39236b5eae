"""Hardening (issue 10) pieces that need no server: keys, secrets, huge lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from batches.api.auth import KeyRing
from batches.api.errors import ApiError
from batches.filestore import LocalFileStore
from batches.settings import Settings


def test_a_key_must_name_its_tenant() -> None:
    with pytest.raises(ValidationError):
        Settings(api_keys="sk-secret-without-tenant")
    assert Settings(api_keys="k1:alice, k2:bob").api_keys == {"k1": "alice", "k2": "bob"}


def test_keys_are_held_as_digests() -> None:
    ring = KeyRing({"k1": "alice", "k2": "bob"})
    assert ring.tenant("Bearer k2") == "bob"
    assert "k1" not in repr(ring.__dict__)
    with pytest.raises(ApiError):
        ring.tenant("Bearer k3")
    with pytest.raises(ApiError):
        ring.tenant(None)


def test_actor_arguments_carry_no_secrets(tmp_path: Path) -> None:
    settings = Settings(api_keys="k1:alice", upstream_api_key="up-secret", data_dir=tmp_path)
    assert "up-secret" not in repr(settings.actor_args())
    assert "k1" not in repr(settings.actor_args())
    settings.write_secrets()
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path).read_secret("upstream_api_key") == "up-secret"


def test_a_huge_line_is_never_read_whole(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    with store.writer("f") as w:
        w.write(b'{"a": 1}\n' + b"x" * (5 * 2**20) + b"\n" + b'{"b": 2}\n')
    lines = list(store.lines("f", max_line_bytes=1000))
    assert [len(line) for line in lines] == [9, 1001, 9]
    assert lines[2] == b'{"b": 2}\n'
