"""Disk bytes per request outcome, before and after the input file expires.

    nice .venv/bin/python bench/bench_disk.py [--lines 5000]

The real service (`batchlog serve`, fake upstream) runs one batch of N chat requests; the
data dir is measured when the batch has completed, then again once the input file has
expired (BATCHLOG_BATCH_FILE_TTL_S shortened to a few seconds; the default is 30 days).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import openai
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream, Service  # noqa: E402


def usage(data: Path) -> dict[str, int]:
    parts = {
        "log segments": "log/segments",
        "log index": "log/index",
        "log snapshots": "log/snapshots",
        "log parquet": "log/parquet",
        "file contents": "files",
        "checkpoints": "checkpoints",
        "analytics": "analytics",
    }
    out = {}
    for name, sub in parts.items():
        d = data / sub
        out[name] = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
    out["total"] = sum(out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    args = parser.parse_args()
    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"r-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake-chat", "messages": [{"role": "user", "content": f"q {i}"}]},
            }
        )
        + b"\n"
        for i in range(args.lines)
    )
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as upstream:
        data = Path(tmp) / "data"
        env = {
            "BATCHLOG_UPSTREAM": upstream.url,
            "BATCHLOG_BATCH_FILE_TTL_S": "5",
            "BATCHLOG_MAX_REQUESTS_PER_BATCH": str(args.lines),
        }
        with Service(data, env) as svc:
            client = svc.client()
            src = client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
            batch = client.batches.create(
                input_file_id=src.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            while (batch := client.batches.retrieve(batch.id)).status != "completed":
                assert batch.status in ("validating", "in_progress", "finalizing"), batch
                time.sleep(0.5)
            done = usage(data)
            while True:
                try:
                    client.files.retrieve(src.id)
                except openai.NotFoundError:
                    break
                time.sleep(0.5)
            expired = usage(data)
    n = args.lines
    print(f"| bytes per outcome ({n:,} outcomes) | completed | input expired |")
    print("| --- | ---: | ---: |")
    for key in done:
        print(f"| {key} | {done[key] / n:,.0f} | {expired[key] / n:,.0f} |")


if __name__ == "__main__":
    main()
