"""The portable llama.cpp build (AVX2 baseline) against a native one, same machine, same run.

    nice .venv/bin/python bench/bench_engine_build.py --native-site DIR [--rounds 3]

DIR holds another llama-cpp-python build, installed with
`pip install --no-deps --target DIR llama_cpp_python-*.whl` (built with
`CMAKE_ARGS='-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF'`). Each round runs
both builds in fresh subprocesses, alternating which goes first: greedy single-stream
generation (8 prompts x 64 tokens, 1 thread) and a 256-token prefill, on the bundled
SmolLM2 GGUF. Reported per build: tokens/s (wall) and tokens per CPU-second (this
process's thread; steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=1024, n_batch=512, n_threads=1, n_threads_batch=1, verbose=False)
prompts = [f"Write a short story about a {w}." for w in
           ("lighthouse", "robot", "cat", "river", "train", "moon", "baker", "violin")]
w0, c0, toks = time.perf_counter(), time.thread_time(), 0
for p in prompts:
    out = llm.create_chat_completion([{"role": "user", "content": p}], max_tokens=64, temperature=0)
    toks += out["usage"]["completion_tokens"]
gen = (toks / (time.perf_counter() - w0), toks / (time.thread_time() - c0))
doc = llm.tokenize(("The quick brown fox jumps over the lazy dog. " * 40).encode())[:256]
llm.reset(); w0, c0 = time.perf_counter(), time.thread_time(); llm.eval(doc)
pre = (256 / (time.perf_counter() - w0), 256 / (time.thread_time() - c0))
print(json.dumps({"lib": llama_cpp.__file__, "gen": gen, "prefill": pre}))
"""


def run(site: str | None, model: str) -> dict[str, object]:
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--native-site", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from actors.local import default_gguf_path

    model = str(default_gguf_path())
    results: dict[str, list[dict[str, object]]] = {"portable": [], "native": []}
    for r in range(args.rounds):
        order = ["portable", "native"] if r % 2 == 0 else ["native", "portable"]
        for name in order:
            res = run(args.native_site if name == "native" else None, model)
            results[name].append(res)
            print(name, res, flush=True)
    for name, runs in results.items():
        gen = [x["gen"] for x in runs]  # type: ignore[index]
        pre = [x["prefill"] for x in runs]  # type: ignore[index]
        print(
            f"{name}: generate {sum(g[0] for g in gen) / len(gen):.1f} tok/s "  # type: ignore[index]
            f"({sum(g[1] for g in gen) / len(gen):.1f} per CPU-s), "  # type: ignore[index]
            f"prefill {sum(p[0] for p in pre) / len(pre):.0f} tok/s "  # type: ignore[index]
            f"({sum(p[1] for p in pre) / len(pre):.0f} per CPU-s)"  # type: ignore[index]
        )


if __name__ == "__main__":
    main()
