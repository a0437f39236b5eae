"""Batch throughput on 1 vs 2 worker nodes of a real Ray cluster (this machine), state
in PostgreSQL. Run by hand:

    nice .venv/bin/python bench/bench_cluster.py [--batches 4] [--lines 200] [--latency-ms 100]

For each worker count: a head (coordinator, façade, executors may go anywhere) and N
worker nodes offering the "batch" resource (1 each, so one batch actor per worker node
at a time); all batches are created at once; the figure is requests/s from the first
create to the last batch completed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batches.testing import FakeUpstream, Service
from batches.testing.pgserver import PgServer
from batches.testing.raycluster import RayCluster


def lines(n: int, tag: str) -> bytes:
    rows = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "fake-chat", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def run(workers: int, pg: PgServer, args: argparse.Namespace) -> float:
    db = f"bench_cluster_{workers}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {db}")
    url = pg.url.rsplit("/", 1)[0] + "/" + db
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    with RayCluster() as rc, FakeUpstream() as upstream:
        rc.start_head(num_cpus=1)
        env = {
            **rc.env,
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_DATABASE_URL": url,
            "BATCHLOG_RAY_ADDRESS": rc.address,
            "BATCHLOG_BATCH_ACTOR_RESOURCES": '{"batch": 1}',
            "BATCHLOG_MAX_ACTIVE_BATCHES": str(args.batches),
        }
        with Service(tmp / "data", env) as svc:
            for w in range(workers):
                rc.add_worker(f"w{w + 1}", num_cpus=1, resources={"batch": 1})
            upstream.configure(latency_ms=args.latency_ms)
            client = svc.client()
            files = [
                client.files.create(file=("in.jsonl", lines(args.lines, f"b{b}")), purpose="batch")
                for b in range(args.batches)
            ]
            t0 = time.monotonic()
            ids = [
                client.batches.create(
                    input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
                ).id
                for f in files
            ]
            pending = set(ids)
            while pending:
                for b in list(pending):
                    if client.batches.retrieve(b).status in ("completed", "failed", "expired"):
                        pending.discard(b)
                time.sleep(0.2)
            return args.batches * args.lines / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--latency-ms", type=int, default=100)
    args = ap.parse_args()
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if "model name" in ln), "?",
    )  # fmt: skip
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, nproc={os.cpu_count()}")
    print(f"# load before {os.getloadavg()}, {vars(args)}")
    with PgServer() as pg:
        for workers in (1, 2):
            rate = run(workers, pg, args)
            print(f"| {workers} | {rate:.1f} |", flush=True)
    print(f"# load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
