"""A real full disk (issue 10, item 6): a small tmpfs this test mounts holds the data dir.

Below the free-space floor uploads and creates get 507; on a full disk a log write
fails closed, /health says so (503), and once space is freed the coordinator reopens
its store by itself: no restart. Needs root (mount); skipped, saying why, without it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from batches.filestore import DurableWriter, free_bytes
from batches.testing import FakeUpstream, Service
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e

FLOOR = 4 * 2**20


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mnt = tmp_path_factory.mktemp("tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path, leave: int) -> None:
    """Grow `path` until the filesystem has about `leave` bytes free (0: until ENOSPC)."""
    with open(path, "ab") as fh:
        while True:
            room = free_bytes(path.parent) - leave
            if room <= 0:
                return
            try:
                fh.write(b"\0" * min(room, 1 << 20) if leave else b"\0" * 65536)
                fh.flush()
            except OSError:
                return


def test_a_failed_commit_leaves_no_tmp_file(tmpfs: Path) -> None:
    target = tmpfs / "scratch"
    target.mkdir()
    filler = tmpfs / "filler-unit"
    fill(filler, 0)
    writer = DurableWriter(target / "f")
    with pytest.raises(OSError), writer:
        writer.write(b"x" * 4000)  # buffered: the disk refuses it at commit
    filler.unlink()
    assert list(target.iterdir()) == []
    assert writer._fh.closed


@pytest.fixture(scope="module")
def service(tmpfs: Path) -> Iterator[Service]:
    with FakeUpstream() as up:
        env = {
            "BATCHLOG_UPSTREAM": up.url,
            "BATCHLOG_MIN_FREE_BYTES": str(FLOOR),
            **FAST_RETRIES,
        }
        with Service(tmpfs / "data", env) as svc:
            yield svc


def health(service: Service) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{service.port}/health", timeout=30)


def test_full_disk_refuses_then_recovers_without_a_restart(service: Service, tmpfs: Path) -> None:
    client = service.client(max_retries=0)
    spare = [upload(client, chat_lines(1), name=f"spare-{i}.jsonl").id for i in range(60)]
    filler = tmpfs / "filler"
    try:
        # Below the floor: new uploads and creates are refused with a clear error.
        fill(filler, FLOOR // 2)
        with pytest.raises(openai.APIStatusError) as refused:
            upload(client, chat_lines(1))
        assert refused.value.status_code == 507
        assert "free disk space" in str(refused.value)
        with pytest.raises(openai.APIStatusError) as refused:
            client.batches.create(
                input_file_id=spare[0], endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert refused.value.status_code == 507

        # Full: a log write (a delete is never refused by the floor) fails closed.
        statuses = []
        for file_id in spare[1:]:
            fill(filler, 0)  # each delete frees its file's pages: take them again
            try:
                client.files.delete(file_id)
                statuses.append(200)
            except openai.APIStatusError as err:
                statuses.append(err.status_code)
                break
        assert statuses[-1] == 503, statuses
        faulted = health(service)
        assert faulted.status_code == 503, faulted.text
        assert faulted.json()["status"] == "faulted"
    finally:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()

    # Space is back: the coordinator reopens its store by itself.
    deadline = time.monotonic() + 60
    while health(service).status_code != 200:
        assert time.monotonic() < deadline, health(service).text
        time.sleep(0.3)
    source = upload(client, chat_lines(3))
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_for(client, batch.id, {"completed", "failed"})
    assert done.status == "completed" and done.request_counts.completed == 3, done
    assert not [p for p in os.listdir(service.data_dir / "files") if p.endswith(".tmp")]
