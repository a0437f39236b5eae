"""Several façades, one deployment: `batchlog serve --facade-only` attaches to the
coordinator a first `serve` started on the cluster, and keeps serving after that first
process is killed with SIGKILL (the coordinator is detached on a cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_RETRIES, chat_lines, read_lines, upload, wait_for

from batches.testing import FakeUpstream, Service
from batches.testing.raycluster import RayCluster

pytestmark = pytest.mark.e2e


def create(client, file_id: str):  # type: ignore[no-untyped-def]
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_a_facade_outlives_the_serve_that_started_the_deployment(
    pg_database: str, tmp_path: Path
) -> None:
    with RayCluster() as rc, FakeUpstream() as upstream:
        rc.start_head(num_cpus=2)
        env = {
            **rc.env,
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_DATABASE_URL": pg_database,
            "BATCHLOG_RAY_ADDRESS": rc.address,
            **FAST_RETRIES,
        }
        facade_env = {**env, "BATCHLOG_FACADE_ONLY": "true"}
        # No deployment yet: a façade says so and exits.
        with pytest.raises(RuntimeError, match="no batchlog coordinator"):
            Service(tmp_path / "early", facade_env).start()

        first = Service(tmp_path / "first", env).start()  # starts the coordinator
        try:
            # its own data dir, its own port: it shares nothing local with the first
            with Service(tmp_path / "second", facade_env) as second:
                c1, c2 = first.client(), second.client()
                b1 = create(c1, upload(c1, chat_lines(3)).id)
                assert c2.batches.retrieve(b1.id).id == b1.id  # the same deployment
                b1 = wait_for(c1, b1.id, {"completed", "failed"}, timeout=200)
                assert b1.status == "completed", first.log()[-3000:]

                first.kill()  # SIGKILL: the process that started the coordinator

                got = c2.batches.retrieve(b1.id)
                assert got.status == "completed"
                out = read_lines(c2, got.output_file_id)
                assert sorted(r["custom_id"] for r in out) == [f"req-{i}" for i in range(3)]
                f2 = upload(c2, chat_lines(4, prefix="second"))
                b2 = wait_for(c2, create(c2, f2.id).id, {"completed", "failed"}, timeout=200)
                assert b2.status == "completed", second.log()[-3000:]
                out = read_lines(c2, b2.output_file_id)
                assert sorted(r["custom_id"] for r in out) == [f"second-{i}" for i in range(4)]
                assert {r["response"]["status_code"] for r in out} == {200}
                listed = [b.id for b in c2.batches.list(limit=10)]
                assert b1.id in listed and b2.id in listed
        finally:
            first.stop()
