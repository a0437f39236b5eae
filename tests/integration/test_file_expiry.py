"""File expiry: defaults and anchors, the FileExpired event, bytes deleted, gone from the
API's read model, inputs of running batches kept until they finish (the coordinator object
over a real log and real files; no Ray cluster)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from actors.batch_actor import output_expires_at
from actors.coordinator import Coordinator
from batches.domain.errors import NotFound
from tests.analytics.synth import Writer

TTL = 3 * 86_400


def coordinator(data_dir: Path, **settings: Any) -> Coordinator:
    return Coordinator({"data_dir": str(data_dir), "fsync": False, **settings})


def expire(c: Coordinator, now: int) -> list[str]:
    c.core.clock = lambda: float(now)
    return c.core.expire_files()


def upload(c: Coordinator, file_id: str, purpose: str = "batch", expires_at: int | None = None):
    with c.core.files.writer(file_id) as w:
        w.write(b'{"custom_id": "a"}\n')
    register = Coordinator.register_file.__wrapped__  # type: ignore[attr-defined]
    return asyncio.run(
        register(
            c, "default", file_id, f"{file_id}.jsonl", purpose, w.bytes, w.sha256, 1, expires_at
        )
    )


def content(c: Coordinator, file_id: str) -> Path:
    return c.settings.data_dir / c.core.model.files[file_id]["path"]


def test_defaults_and_explicit_expiry(tmp_path: Path) -> None:
    c = coordinator(tmp_path, batch_file_ttl_s=TTL)
    default = upload(c, "file-default")
    assert default["expires_at"] == default["created_at"] + TTL  # purpose batch: a default
    explicit = upload(c, "file-explicit", expires_at=default["created_at"] + 3600)
    assert explicit["expires_at"] == default["created_at"] + 3600
    output = upload(c, "file-output", purpose="batch_output")
    assert output["expires_at"] is None  # other purposes stay until deleted
    c.core.log.close()
    never = coordinator(tmp_path / "never", batch_file_ttl_s=0)
    assert upload(never, "file-n")["expires_at"] is None
    never.core.log.close()


def test_output_files_expire_from_their_own_creation() -> None:
    assert output_expires_at(None, 1_000) is None
    assert output_expires_at({"anchor": "created_at", "seconds": 3600}, 1_000) == 4_600


def test_an_expired_file_is_gone_with_an_event_and_its_bytes(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    now = int(time.time())
    upload(c, "file-old", expires_at=now - 5)
    upload(c, "file-later", expires_at=now + 100)
    upload(c, "file-out", purpose="batch_output")
    old_bytes = content(c, "file-old")
    assert old_bytes.exists()

    assert expire(c, now) == ["file-old"]
    assert not old_bytes.exists()
    with pytest.raises(NotFound):
        c.core.file_record("default", "file-old")
    assert [f["file_id"] for f in c.core.model.list_files("default", None, None, 10, "asc")[0]] == [
        "file-later",
        "file-out",
    ]
    (event,) = [e for e in c.core.log.read("files") if e.type == "FileExpired"]
    assert event.data == {"file_id": "file-old", "at": now, "expires_at": now - 5}
    assert expire(c, now) == []  # once
    assert expire(c, now + 100) == ["file-later"]
    c.core.log.close()

    again = coordinator(tmp_path)  # replayed (or restored): still gone
    assert "file-old" not in again.core.model.files and "file-later" not in again.core.model.files
    assert expire(again, now + 10**6) == []
    again.core.log.close()


def test_the_input_of_a_running_batch_waits_for_it(tmp_path: Path) -> None:
    c = coordinator(tmp_path)
    now = int(time.time())
    upload(c, "file-in", expires_at=now - 1)
    writer = Writer(c.core.log, "b1").create()  # its input_file_id is "file-in"
    c.core.catch_up()
    assert c.core.model.batches["b1"].input_file_id == "file-in"
    assert expire(c, now) == []  # its batch is validating
    writer.invalid()  # the batch ends
    c.core.catch_up()
    assert c.core.model.batches["b1"].status == "failed"
    assert expire(c, now) == ["file-in"]
    c.core.log.close()
