"""Tokens/s through the whole service on the embedded model, next to llama.cpp called directly.

One run: 64 chat requests (max_tokens 64) with llama-cpp-python called directly, single
stream, 1 thread, on the bundled GGUF and on the Q8_0 re-encoding the replicas decode;
then the same requests as one batch through `batchlog serve` (upload -> create ->
completed, via the openai SDK) with 1 replica decoding 1 sequence at a time, 1 replica
decoding 8 together, and the default (2 replicas x 8); then the direct runs again.
The service's rate is completion tokens over the batch's in_progress -> finalizing time
(event timestamps); the end-to-end time from create to completed is printed too.

    .venv/bin/python bench/bench_embedded_service.py [--requests 64] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.local import default_gguf_path
from batches.testing import Service
from bench.bench_local_models import chat_items, direct_chat


def service_run(
    items: list[dict[str, Any]], replicas: int, parallel: int, root: Path
) -> dict[str, float]:
    env = {
        "BATCHLOG_CHAT_REPLICAS": str(replicas),
        "BATCHLOG_CHAT_THREADS": "1",
        "BATCHLOG_CHAT_PARALLEL": str(parallel),
    }
    with Service(root / f"r{replicas}p{parallel}" / "data", env) as svc:
        client = svc.client()
        rows = [
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": item["body"],
            }
            for i, item in enumerate(items)
        ]
        source = client.files.create(
            file=("bench.jsonl", io.BytesIO(b"".join(orjson.dumps(r) + b"\n" for r in rows))),
            purpose="batch",
        )
        # Warm the replicas (model load is not what is measured).
        warm = client.batches.create(
            input_file_id=client.files.create(
                file=(
                    "warm.jsonl",
                    io.BytesIO(b"".join(orjson.dumps(r) + b"\n" for r in rows[:replicas])),
                ),
                purpose="batch",
            ).id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        while client.batches.retrieve(warm.id).status != "completed":
            time.sleep(0.5)
        started = time.monotonic()
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while (done := client.batches.retrieve(batch.id)).status not in ("completed", "failed"):
            time.sleep(0.2)
        wall = time.monotonic() - started
        events = httpx.get(f"{svc.url}/batches/{batch.id}/events", params={"limit": 1000}).json()[
            "data"
        ]
        at = {e["type"]: e["recorded_at"] for e in events}
        busy = at["BatchFinalizing"] - at["BatchValidated"]
        tokens = done.usage.output_tokens if done.usage else 0
        assert done.request_counts.completed == len(items), done
        return {
            "tokens": tokens,
            "seconds": busy,
            "tokens_per_s": tokens / busy,
            "create_to_completed_s": wall,
        }


# (chat replicas, sequences decoded together per replica): no batching, batching in one
# replica, and the default (BATCHLOG_CHAT_REPLICAS=2, BATCHLOG_CHAT_PARALLEL=8).
CONFIGS = ((1, 1), (1, 8), (2, 8))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    from llama_cpp import Llama

    from actors.local.chat import requantized

    items = chat_items(args.requests, args.max_tokens)
    bundled = default_gguf_path()
    # The replicas decode a Q8_0 re-encoding of the bundled Q4_1 file (actors/local/chat.py):
    # the direct baseline runs on both, and the ratio is taken against the faster one.
    q8 = requantized(bundled, Path.home() / ".cache" / "batchlog" / "models")

    def direct() -> dict[str, dict[str, float]]:
        out = {}
        for name, path in (("q4_1", bundled), ("q8_0", q8)):
            llm = Llama(model_path=str(path), n_threads=1, n_ctx=2048, verbose=False)
            out[name] = direct_chat(llm, items)
            del llm
        return out

    # The direct path is measured before and after the service runs: if the machine's
    # load changed in between, the two disagree and the ratio should not be trusted.
    before = direct()
    print(f"direct llama-cpp-python, single stream, 1 thread (before): {before}")
    results: dict[str, Any] = {"direct_before": before, "load_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for replicas, parallel in CONFIGS:
            results[f"service_r{replicas}_p{parallel}"] = service_run(
                items, replicas, parallel, Path(tmp)
            )
    after = direct()
    print(f"direct llama-cpp-python, single stream, 1 thread (after): {after}")
    results["direct_after"] = after
    results["load_end"] = os.getloadavg()
    baseline = max(
        (before[k]["tokens_per_s"] + after[k]["tokens_per_s"]) / 2 for k in ("q4_1", "q8_0")
    )
    results["baseline_tokens_per_s"] = baseline
    for replicas, parallel in CONFIGS:
        r = results[f"service_r{replicas}_p{parallel}"]
        r["ratio_vs_direct"] = r["tokens_per_s"] / baseline
        print(f"through batchlog, {replicas} replica(s) x {parallel} sequences: {r}")
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
