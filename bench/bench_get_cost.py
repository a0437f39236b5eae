"""Where a GET's latency goes under load: GET /v1/batches/{id} (façade -> coordinator
actor over Ray -> core) beside GET of an unknown route under /v1 (the same HTTP stack,
gate and error envelope in serve, no Ray call), polled alternately every ``--period-s``
while a ``--requests``-line batch runs (issue 14). If the two p99s are close, the Ray
call is not what the tail is made of.

    nice .venv/bin/python bench/bench_get_cost.py --requests 10000
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream, Service  # noqa: E402
from bench.bench_service import chat_lines, pct  # noqa: E402

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def poll(
    url: str, paths: list[str], period: float, stop: threading.Event
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {p: [] for p in paths}
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer none"}) as c:
        while not stop.is_set():
            for path in paths:
                t0 = time.perf_counter()
                c.get(path)
                out[path].append(time.perf_counter() - t0)
                time.sleep(period / len(paths))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--period-s", type=float, default=0.05)
    args = p.parse_args()
    load0 = os.getloadavg()
    with (
        FakeUpstream() as fake,
        tempfile.TemporaryDirectory() as tmp,
        Service(Path(tmp) / "data", {"BATCHLOG_UPSTREAM": fake.url}) as svc,
    ):
        client = svc.client()
        f = client.files.create(
            file=("in.jsonl", io.BytesIO(chat_lines(args.requests))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        paths = [f"/batches/{batch.id}", "/no-such-route"]
        stop = threading.Event()
        result: dict[str, dict[str, list[float]]] = {}
        t = threading.Thread(
            target=lambda: result.update(lat=poll(svc.url, paths, args.period_s, stop))
        )
        t.start()
        while client.batches.retrieve(batch.id).status not in TERMINAL:
            time.sleep(0.5)
        stop.set()
        t.join()
    for path, values in result["lat"].items():
        ms = [1000 * v for v in values]
        print(f"{path.split('/')[1]:>14}: n {len(ms)}, p50 {pct(ms, 50):.1f} ms, "
              f"p90 {pct(ms, 90):.1f}, p99 {pct(ms, 99):.1f}, max {max(ms):.1f}")  # fmt: skip
    print(f"load average before {load0}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
