"""`batchlog serve` start until /health, GET of the oldest batch and the service's RSS, on
the histories of bench_history.py (run that first: it makes DIR/n<size>).

    nice .venv/bin/python bench/bench_history_serve.py --dir /tmp/bench-hist [--baseline SRC]

Each start runs on a fresh copy of the data dir (the service writes: a checkpoint, expired
batches) with BATCHLOG_MAX_ACTIVE_BATCHES=0, so no batch actor starts (the histories'
running batches have no input files). RSS is the sum of VmRSS over the service's session
(the server, Ray's processes, the coordinator actor), when /health first answers and
after the GET.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batches.testing.service import _session_pids, free_port  # noqa: E402
from eventlog import EventStore  # noqa: E402


def oldest_batch(log_dir: Path) -> tuple[str, str]:
    with EventStore.open(log_dir, fsync=False) as s:
        for e in s.read_all(after=0, limit=200):
            if e.type == "BatchCreated":
                return e.stream_id.removeprefix("batch-"), e.data["tenant"]
    raise LookupError("no batch")


def session_rss_mib(sid: int) -> float:
    total = 0
    for pid in _session_pids(sid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def run(data_dir: Path, src: Path, work: Path) -> dict[str, float]:
    copy = work / "data"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("analytics"))
    batch_id, tenant = oldest_batch(copy / "log")
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(src),
        "BATCHLOG_DATA_DIR": str(copy),
        "BATCHLOG_PORT": str(port),
        "BATCHLOG_MAX_ACTIVE_BATCHES": "0",
        "BATCHLOG_API_KEYS": f"kbench:{tenant}",
        "BATCHLOG_RAY_NUM_CPUS": "2",
        "BATCHLOG_FSYNC": "false",
    }
    log = open(work / "serve.log", "ab")  # noqa: SIM115 - handed to the child
    t0 = time.perf_counter()
    cli = "batchlog.cli" if (src / "batchlog" / "cli.py").exists() else "batches.cli"  # moved
    proc = subprocess.Popen(
        [sys.executable, "-m", cli, "serve"],
        env=env,
        cwd=src,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited; see {work / 'serve.log'}")
            if time.perf_counter() - t0 > 300:
                raise TimeoutError("serve did not answer /health in 300 s")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        health_s = time.perf_counter() - t0
        rss_health = session_rss_mib(proc.pid)
        t1 = time.perf_counter()
        r = httpx.get(
            f"http://127.0.0.1:{port}/v1/batches/{batch_id}",
            headers={"Authorization": "Bearer kbench"},
            timeout=300,
        )
        get_s = time.perf_counter() - t1
        assert r.status_code == 200 and r.json()["id"] == batch_id, r.text[:300]
        return {
            "health_s": health_s,
            "get_s": get_s,
            "rss_health": rss_health,
            "rss_after": session_rss_mib(proc.pid),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        for _ in range(50):  # Ray may leave processes in the session
            left = [p for p in _session_pids(proc.pid) if p != os.getpid()]
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        log.close()
        shutil.rmtree(copy, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    work = args.dir / "serve-work"
    work.mkdir(exist_ok=True)
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        data_dir = args.dir / f"n{size}"
        for label, src in [("after", ROOT), ("before", args.baseline)]:
            if src is None:
                continue
            got = run(data_dir, src, work)
            rows.setdefault(label, {})[size] = got
            print(label, size, got, flush=True)
    for label, by_size in rows.items():
        for key in ("health_s", "get_s"):
            cells = " | ".join(f"{v[key] * 1000:,.0f} ms" for v in by_size.values())
            print(f"| {key} {label} | {cells} |")
        cells = " | ".join(
            f"{v['rss_health']:.0f} / {v['rss_after']:.0f} MiB" for v in by_size.values()
        )
        print(f"| RSS {label} | {cells} |")


if __name__ == "__main__":
    main()
