"""Secrets on a real multi-node Ray cluster with a PostgreSQL that requires a password.

The upstream executor runs on a worker node, not where `serve` runs, and gets the
upstream's bearer key from PostgreSQL (there is no secrets.json anywhere); actors and a
`ray job submit` driver reach the database with a password that no node's environment
holds, and neither that password nor the key shows in anything Ray's state API lists
or in any file Ray wrote."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

from batches.testing import FakeUpstream, Service
from batches.testing.pgserver import PgServer
from batches.testing.raycluster import RayCluster

pytestmark = pytest.mark.e2e

STATE_DUMP = """
import json, sys
from ray.util.state import list_actors, list_jobs, list_nodes, list_tasks
a = sys.argv[1]
print(json.dumps({
    "actors": [x.__dict__ for x in list_actors(address=a, detail=True, limit=1000)],
    "tasks": [x.__dict__ for x in list_tasks(address=a, detail=True, limit=1000)],
    "jobs": [x.__dict__ for x in list_jobs(address=a)],
    "nodes": [x.__dict__ for x in list_nodes(address=a, detail=True)],
}, default=str))
"""


def ray_state(rc: RayCluster) -> tuple[str, dict]:
    """Everything Ray's state API lists about the cluster: the raw text and parsed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BATCHLOG_"))}
    out = subprocess.run(
        [sys.executable, "-c", STATE_DUMP, rc.dashboard_url],
        capture_output=True, text=True, check=True, env={**env, **rc.env}, timeout=120,
    ).stdout  # fmt: skip
    return out, json.loads(out)


def files_containing(root: Path, *needles: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n[:6]}..." for n in needles if n.encode() in data]
    return found


def test_secrets_reach_another_node_and_never_ray_state(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    key = "sk-upstream-" + secrets.token_hex(16)
    # The Ray nodes and the job driver must not find the password in their environment.
    assert "PGPASSWORD" not in os.environ
    with (
        PgServer(password=password) as pg,
        RayCluster() as rc,
        FakeUpstream(api_key=key) as upstream,
    ):
        rc.start_head(num_cpus=1, dashboard=True)
        # A driver attaches to the head when several nodes share its host, so `serve`
        # runs on the head; the executor and the batch actors can only run on w1.
        rc.add_worker("w1", num_cpus=1, resources={"batch": 1, "executor": 2})
        env = {
            **rc.env,
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_UPSTREAM_API_KEY": key,
            "BATCHLOG_DATABASE_URL": pg.url,  # with the password in it
            "BATCHLOG_RAY_ADDRESS": rc.address,
            "BATCHLOG_BATCH_ACTOR_RESOURCES": '{"batch": 1}',
            "BATCHLOG_EXECUTOR_RESOURCES": '{"executor": 1}',
            "BATCHLOG_UPSTREAM_EXECUTORS": "2",
            **FAST_RETRIES,
        }
        data = tmp_path / "data"
        with Service(data, env) as svc:
            client = svc.client()
            f = upload(client, chat_lines(4))
            batch = client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            done = wait_for(client, batch.id, {"completed", "failed"}, timeout=300)
            assert done.status == "completed", (done, svc.log()[-3000:])
            out = read_lines(client, done.output_file_id)
            # The fake upstream answers 401 to a request without the right key.
            assert sorted(r["response"]["status_code"] for r in out) == [200] * 4, out
            assert {r["status"] for r in upstream.requests()} == {200}
            assert not (data / "secrets.json").exists()

            # A Ray job driver (BatchlogClient: files straight from PostgreSQL).
            requests = tmp_path / "requests.jsonl"
            requests.write_bytes(chat_lines(3))
            driver = Path(__file__).with_name("ray_job_driver.py")
            no_pg = {k: v for k, v in os.environ.items() if not k.startswith("BATCHLOG_")}
            job = subprocess.run(
                [str(Path(sys.executable).with_name("ray")), "job", "submit",
                 "--address", rc.dashboard_url, "--", sys.executable, str(driver),
                 str(requests)],
                capture_output=True, text=True, env={**no_pg, **rc.env}, timeout=300,
            )  # fmt: skip
            assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
            assert job.stdout.count("RESULT ") == 3 and "STATUS completed" in job.stdout

            text, state = ray_state(rc)
            head = next(n["node_id"] for n in state["nodes"] if n["is_head_node"])
            executors = [a for a in state["actors"] if a["name"].startswith("batchlog-upstream")]
            assert len(executors) == 2, executors
            assert all(a["node_id"] != head for a in executors), executors
            assert any(a["name"] == "batchlog-coordinator" for a in state["actors"])
            assert password not in text
            assert key not in text
            assert password not in svc.log() and key not in svc.log()
        assert files_containing(rc.temp, password, key) == []
