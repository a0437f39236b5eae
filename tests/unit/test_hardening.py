"""Hardening (issue 10) pieces that need no server: keys, secrets, huge lines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from batches.admission import CreateRate, admission_order
from batches.api.auth import KeyRing
from batches.domain import decider as d
from batches.domain.errors import DomainError
from batches.filestore import LocalFileStore
from batches.settings import Settings
from tests.unit.helpers import T0, in_status, outcome


def test_a_key_must_name_its_tenant() -> None:
    with pytest.raises(ValidationError):
        Settings(api_keys="sk-secret-without-tenant")
    assert Settings(api_keys="k1:alice, k2:bob").api_keys == {"k1": "alice", "k2": "bob"}


def test_keys_are_held_as_digests() -> None:
    ring = KeyRing({"k1": "alice", "k2": "bob"})
    assert ring.tenant("Bearer k2") == "bob"
    assert "k1" not in repr(ring.__dict__)
    with pytest.raises(DomainError) as wrong:
        ring.tenant("Bearer k3")
    assert (wrong.value.http_status, wrong.value.code) == (401, "invalid_api_key")
    with pytest.raises(DomainError) as missing:
        ring.tenant(None)
    assert (missing.value.http_status, missing.value.code) == (401, "missing_api_key")


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


def test_giving_up_fails_an_active_batch_once() -> None:
    run = in_status("in_progress")
    run.do(d.RecordOutcomes((outcome(1),)))
    events = run.do(d.GiveUp(at=T0 + 50, message="crashed 6 times"))
    assert [t for t, _ in events] == ["BatchFailed"]
    assert run.s.status == "failed" and run.s.failed_at == T0 + 50
    assert run.s.errors[0]["code"] == "batch_crashed"
    assert run.s.failed == run.s.total - 1  # the lines without an outcome
    assert run.do(d.GiveUp(at=T0 + 60, message="again")) == []
    assert d.fold(run.events) == run.s  # replays the same


def batch(batch_id: str, tenant: str, status: str = "validating") -> d.BatchState:
    run = in_status(status)
    return dataclasses.replace(run.s, id=batch_id, tenant=tenant)


def test_admission_is_round_robin_across_tenants() -> None:
    waiting = [batch(f"a{i}", "alice") for i in range(5)] + [batch("b0", "bob")]
    order = [b.id for b in admission_order(waiting, ["alice"], now=T0)]
    assert order.index("b0") == 0  # alice already runs one
    order = [b.id for b in admission_order(waiting, [], now=T0)]
    assert order[:3] == ["a0", "b0", "a1"]
    cancelling = batch("a9", "alice", "cancelling")
    assert admission_order([*waiting, cancelling], [], now=T0)[0].id == "a9"


def test_create_rate_is_a_token_bucket_per_tenant() -> None:
    rate = CreateRate(per_minute=2)
    assert rate.take("alice", 0.0) is None and rate.take("alice", 0.0) is None
    wait = rate.take("alice", 0.0)
    assert wait is not None and 0 < wait <= 30.0
    assert rate.take("bob", 0.0) is None
    assert rate.take("alice", 31.0) is None
