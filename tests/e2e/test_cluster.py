"""batchlog on a real multi-node Ray cluster (a head and two worker nodes started with
`ray start`, each its own raylet) with its state in PostgreSQL: kill -9 the worker node
that runs the batch actor, mid-batch; the batch finishes on the surviving nodes."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import psycopg
import pytest
from conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

from batches.testing import FakeUpstream, Service
from batches.testing.raycluster import RayCluster

pytestmark = pytest.mark.e2e


def durable_outcomes(url: str, batch_id: str) -> set[str]:
    """custom_ids whose outcome is in the log (what must never be sent again)."""
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT data->>'custom_id' FROM eventlog.events WHERE stream_id = %s "
            "AND type IN ('RequestSucceeded', 'RequestFailed')",
            [f"batch-{batch_id}"],
        ).fetchall()
    return {r[0] for r in rows}


def test_kill_the_worker_node_running_the_batch(pg_database: str, tmp_path: Path) -> None:
    n = 30  # one request at a time, 1 s each: the kill lands mid-batch
    with RayCluster() as rc, FakeUpstream() as upstream:
        rc.start_head(num_cpus=1)
        env = {
            **rc.env,
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_DATABASE_URL": pg_database,
            "BATCHLOG_RAY_ADDRESS": rc.address,
            "BATCHLOG_CHUNK_SIZE": "1",
            "BATCHLOG_CHUNKS_IN_FLIGHT": "1",
            # batch actors go where "batch" is offered: the worker nodes, never the head
            "BATCHLOG_BATCH_ACTOR_RESOURCES": '{"batch": 1}',
            **FAST_RETRIES,
        }
        # the service's driver attaches to the head's raylet: start it before the workers
        with Service(tmp_path / "data", env) as svc:
            rc.add_worker("w1", num_cpus=1, resources={"batch": 1})
            upstream.configure(latency_ms=1000)
            client = svc.client()
            f = upload(client, chat_lines(n))
            batch = client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            while client.batches.retrieve(batch.id).request_counts.completed < 2:
                time.sleep(0.3)
            rc.add_worker("w2", num_cpus=1, resources={"batch": 1})  # the only place left
            rc.kill_node("w1")  # its raylet and its workers, the batch actor among them
            durable = durable_outcomes(pg_database, batch.id)
            assert len(durable) < n  # killed mid-batch
            done = wait_for(client, batch.id, {"completed", "failed"}, timeout=400)
            assert done.status == "completed", (done, svc.log()[-3000:])
            out = read_lines(client, done.output_file_id)
            ids = collections.Counter(r["custom_id"] for r in out)
            assert ids == collections.Counter(f"req-{i}" for i in range(n))  # exactly once
            sent = collections.Counter(r["key"] for r in upstream.requests() if r["key"])
            again = [k for k in sent if sent[k] > 1 and k.split(":", 1)[1] in durable]
            assert again == [], "a request whose outcome was durable was sent again"


def test_ray_job_submit_driver(pg_database: str, tmp_path: Path) -> None:
    """`ray job submit -- python driver.py`: the Python client inside a Ray job uploads,
    creates, waits (progress bar) and reads the results, with no HTTP."""
    import subprocess
    import sys

    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(chat_lines(5))
    with RayCluster() as rc, FakeUpstream() as upstream:
        rc.start_head(num_cpus=2, dashboard=True)
        env = {
            **rc.env,
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_DATABASE_URL": pg_database,
            "BATCHLOG_RAY_ADDRESS": rc.address,
            **FAST_RETRIES,
        }
        with Service(tmp_path / "data", env):
            driver = Path(__file__).with_name("ray_job_driver.py")
            job = subprocess.run(
                [
                    str(Path(sys.executable).with_name("ray")),
                    "job",
                    "submit",
                    "--address",
                    rc.dashboard_url,
                    "--",
                    sys.executable,
                    str(driver),
                    str(requests),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, **rc.env},
                timeout=300,
            )
        out = job.stdout + job.stderr
        assert job.returncode == 0, out[-4000:]
        assert "STATUS completed" in out, out[-4000:]
        got = sorted(line.split()[1] for line in out.splitlines() if line.startswith("RESULT "))
        assert got == sorted(f"req-{i}" for i in range(5)), out[-4000:]
