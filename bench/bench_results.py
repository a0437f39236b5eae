"""Partial results on a 50,000-line batch: a consumer reading as it goes (after=N).

Baseline: every request scans the batch's stream from its start (no index). Measured:
the coordinator's LineIndex, which learns a checkpoint every 1000 lines while serving.
Both read the same store, interleaved, in one run.

    nice .venv/bin/python bench/bench_results.py [--lines 50000] [--step 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from batches.results import LineIndex, indexed_page, results_page
from eventlog import EventStore, NewEvent

STREAM = "batch-b"
BODY = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 10}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15},
}


def build(root: Path, lines: int) -> EventStore:
    store = EventStore.open(root, fsync=False)
    store.append(STREAM, [NewEvent("BatchCreated", {"batch_id": "b"})], expected_version=0)
    version = 1
    for start in range(0, lines, 1000):
        chunk = [
            NewEvent(
                "RequestSucceeded",
                {
                    "line": i + 1,
                    "custom_id": f"r{i}",
                    "request_id": f"q{i}",
                    "status_code": 200,
                    "body": BODY,
                    "error": None,
                },
            )
            for i in range(start, min(start + 1000, lines))
        ]
        version = store.append(STREAM, chunk, expected_version=version)
    return store


def read_after(
    store: EventStore, index: LineIndex | None, after: int, limit: int
) -> tuple[int, float]:
    """One HTTP request's worth: steps until `limit` lines or the end; (lines, worst step s)."""
    start, skip, ordinal, got, worst = 1, after, 0, 0, 0.0
    while True:
        t = time.perf_counter()
        if index is None:
            page = results_page(store, STREAM, "output", start, skip, limit - got)
        else:
            page = indexed_page(
                store, index, "b", STREAM, "output", start, skip, limit - got, ordinal
            )
        worst = max(worst, time.perf_counter() - t)
        skip -= page.skipped
        ordinal += page.skipped + len(page.lines)
        got += len(page.lines)
        if got >= limit or page.next_version == start:
            return got, worst
        start = page.next_version


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--step", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "log", args.lines)
        index = LineIndex()
        totals = {"scan": 0.0, "index": 0.0}
        worst = {"scan": 0.0, "index": 0.0}
        for after in range(0, args.lines, args.step):
            for name, idx in (("scan", None), ("index", index)):
                t = time.perf_counter()
                got, w = read_after(store, idx, after, args.step)
                totals[name] += time.perf_counter() - t
                worst[name] = max(worst[name], w)
                assert got == args.step
        requests = args.lines // args.step
        for name in ("scan", "index"):
            print(
                f"{name}: {requests} requests of {args.step} lines, total {totals[name]:.2f} s, "
                f"mean {totals[name] / requests * 1000:.0f} ms, worst step {worst[name] * 1000:.0f} ms"
            )
        store.close()


if __name__ == "__main__":
    main()
