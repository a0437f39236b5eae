"""Which async HTTP client should the upstream executor use? CPU per request, measured.

Each client sends the same chat requests to the instant fake upstream
(``batches.testing.FakeUpstream``, a separate process) with ``--concurrency`` requests
in flight, from this one process, and we record the client process's CPU time per
request (``time.process_time``: what the executor would spend) and requests/s.
The clients run in alternating rounds (A B C A B C ...) so a neighbour's load on a
shared machine falls on all of them alike. Results in docs/benchmarks.md, "Service".

    .venv/bin/python bench/bench_http_clients.py --requests 3000 --rounds 3

Clients: ``httpx`` (one AsyncClient with ``concurrency`` connections), ``httpx-split``
(AsyncClients of 8 connections each, what the executor used before), ``httpx2`` (the
fork the openai SDK pulls in), ``aiohttp`` (one ClientSession, a TCPConnector of
``concurrency``). Every request reads the whole body and parses it with orjson, like
the executor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream  # noqa: E402

Post = Callable[[bytes], Awaitable[bytes]]


def body(i: int) -> bytes:
    return orjson.dumps(
        {"model": "fake-chat", "messages": [{"role": "user", "content": f"hello {i}"}]}
    )


async def _drive(post: Post, n: int, concurrency: int) -> tuple[float, float]:
    """(wall s, cpu s) for n posts with `concurrency` in flight."""
    payloads = [body(i) for i in range(n)]
    it = iter(payloads)

    async def worker() -> None:
        for p in it:
            orjson.loads(await post(p))

    for p in payloads[:concurrency]:  # warm the pool
        await post(p)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, time.process_time() - c0


async def run_httpx(
    url: str, n: int, conc: int, module: str, split: int | None
) -> tuple[float, float]:
    mod: Any = __import__(module)
    sizes = [conc] if split is None else [split] * max(1, conc // split)
    headers = {"content-type": "application/json"}
    clients = [
        mod.AsyncClient(
            headers=headers,
            timeout=60.0,
            limits=mod.Limits(max_connections=s, max_keepalive_connections=s),
        )
        for s in sizes
    ]
    free = list(sizes)

    async def post(payload: bytes) -> bytes:
        slot = max(range(len(free)), key=free.__getitem__)
        free[slot] -= 1
        try:
            r = await clients[slot].post(url, content=payload)
            return r.content  # type: ignore[no-any-return]
        finally:
            free[slot] += 1

    try:
        return await _drive(post, n, conc)
    finally:
        for c in clients:
            await c.aclose()


async def run_aiohttp(url: str, n: int, conc: int) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60.0),
        headers={"content-type": "application/json"},
    )

    async def post(payload: bytes) -> bytes:
        async with session.post(url, data=payload) as r:
            return await r.read()

    try:
        return await _drive(post, n, conc)
    finally:
        await session.close()


CLIENTS: dict[str, Callable[[str, int, int], Coroutine[Any, Any, tuple[float, float]]]] = {
    "httpx": lambda u, n, c: run_httpx(u, n, c, "httpx", None),
    "httpx-split8": lambda u, n, c: run_httpx(u, n, c, "httpx", 8),
    "httpx2": lambda u, n, c: run_httpx(u, n, c, "httpx2", None),
    "aiohttp": run_aiohttp,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", nargs="+", default=list(CLIENTS))
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "http_clients.json")
    args = p.parse_args()
    rows: dict[str, list[dict[str, float]]] = {c: [] for c in args.clients}
    start = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             "loadavg": os.getloadavg()}  # fmt: skip
    with FakeUpstream() as fake:
        url = fake.url + "/chat/completions"
        for r in range(args.rounds):
            for name in args.clients:
                wall, cpu = asyncio.run(CLIENTS[name](url, args.requests, args.concurrency))
                row = {
                    "req_per_s": round(args.requests / wall, 1),
                    "client_cpu_ms_per_req": round(1000 * cpu / args.requests, 3),
                }
                rows[name].append(row)
                print(f"round {r} {name:13s} {row}", flush=True)
    summary = {
        name: {
            "client_cpu_ms_per_req_median": statistics.median(
                x["client_cpu_ms_per_req"] for x in runs
            ),
            "req_per_s_median": statistics.median(x["req_per_s"] for x in runs),
            "runs": runs,
        }
        for name, runs in rows.items()
    }
    result = {"start": start, "end_loadavg": os.getloadavg(), "args": vars(args) | {"json": str(args.json)},
              "clients": summary}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: {kk: vv for kk, vv in v.items() if kk != "runs"} for k, v in summary.items()},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
