"""Ray-cluster submission: a separate driver process submits and watches a batch, no HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from batches.testing import Service
from tests.e2e.conftest import chat_lines

pytestmark = pytest.mark.e2e

DRIVER = textwrap.dedent(
    """
    import sys, orjson
    from batchlog.client import BatchlogClient

    data_dir, input_path = sys.argv[1], sys.argv[2]
    client = BatchlogClient.from_data_dir(data_dir)
    f = client.upload(input_path)
    batch = client.create(f["id"], "/v1/chat/completions", metadata={"via": "ray"})
    done = client.wait(batch["id"], poll_s=0.2, timeout_s=120, progress=False)
    lines = list(client.results(batch["id"]))
    print(orjson.dumps({"batch": done, "ids": sorted(l["custom_id"] for l in lines)}).decode())
    """
)


def test_driver_submits_and_watches_a_batch(service: Service, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(chat_lines(7, prefix="ray"))
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(service.data_dir), str(source)],
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert result["batch"]["status"] == "completed"
    assert result["batch"]["metadata"] == {"via": "ray"}
    assert result["ids"] == sorted(f"ray-{i}" for i in range(7))
    # The same batch is visible through the REST façade.
    assert service.client().batches.retrieve(result["batch"]["id"]).status == "completed"
