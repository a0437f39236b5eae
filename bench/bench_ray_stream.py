"""What a group of outcomes costs to cross from the executor to a batch actor over Ray.

Two async actors on a local Ray (``num_cpus=2``): one yields lists of ``--outcomes``
outcome-shaped dicts through a Ray streaming generator (``num_returns="streaming"``), in
groups of 1, 8 and 64, or returns them in plain calls of 64; the other consumes them
(``async for ref in gen: await ref``). Prints each process's CPU per Ray object and per
outcome. Results in docs/benchmarks.md, "Service".

    .venv/bin/python bench/bench_ray_stream.py
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import psutil
import ray

OUTCOME: dict[str, Any] = {
    "line": 1,
    "custom_id": "req-1",
    "status_code": 200,
    "body": {"id": "x", "choices": [{"message": {"content": "hello there"}}], "usage": {}},
    "error": None,
    "attempts": 1,
    "latency_ms": 1.0,
    "request_id": "batch_req_x",
    "started_at": 1.0,
    "finished_at": 2.0,
}


@ray.remote(num_cpus=0, max_concurrency=100)
class Producer:
    def pid(self) -> int:
        return os.getpid()

    async def stream(self, n: int, per: int) -> Any:
        for _ in range(0, n, per):
            yield [OUTCOME] * per

    async def whole(self, n: int) -> list[dict[str, Any]]:
        return [OUTCOME] * n


@ray.remote(num_cpus=0, max_concurrency=100)
class Consumer:
    def pid(self) -> int:
        return os.getpid()

    async def run(self, producer: Any, n: int, per: int, mode: str) -> int:
        got = 0
        if mode == "stream":
            async for ref in producer.stream.options(num_returns="streaming").remote(n, per):
                got += len(await ref)
        else:
            for _ in range(n // per):
                got += len(await producer.whole.remote(per))
        return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--outcomes", type=int, default=4096)
    args = p.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    prod, cons = Producer.remote(), Consumer.remote()  # type: ignore[attr-defined]
    pp = psutil.Process(ray.get(prod.pid.remote()))
    pc = psutil.Process(ray.get(cons.pid.remote()))
    ray.get(cons.run.remote(prod, 256, 1, "stream"))  # warm up
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "loadavg", os.getloadavg())
    n = args.outcomes
    for mode, per in (("stream", 1), ("stream", 8), ("stream", 64), ("call", 64)):
        p0, c0 = sum(pp.cpu_times()[:2]), sum(pc.cpu_times()[:2])
        assert ray.get(cons.run.remote(prod, n, per, mode)) == n
        p1, c1 = sum(pp.cpu_times()[:2]), sum(pc.cpu_times()[:2])
        objects = n // per
        print(
            f"{mode:6s} {per:2d} outcomes/object: {objects} objects; producer "
            f"{1e3 * (p1 - p0) / objects:.3f} ms/object, consumer {1e3 * (c1 - c0) / objects:.3f}"
            f" ms/object; both {1e3 * ((p1 - p0) + (c1 - c0)) / n:.4f} ms/outcome"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
