"""Memory of `batchlog serve`'s whole process tree, by kind of process, and what one
running batch costs; before/after side by side (issue 14).

    nice .venv/bin/python bench/bench_memory.py                     # this checkout
    git archive OLD | tar -x -C /tmp/batchlog-base
    nice .venv/bin/python bench/bench_memory.py --baseline-dir /tmp/batchlog-base --rounds 2

For each server, in turn (rounds interleave them): start it against the fake upstream,
let it settle ``--settle-s``, then record the tree's RSS and PSS (PSS counts pages shared
between processes once: Ray's workers share the interpreter and libraries) per kind of
process; then run one batch of ``--lines`` lines and record the tree's peak RSS while it
runs (the cost of one running batch), then two at once. The tree is the server's session
and its descendants (bench_sidebyside.Server), kinds as bench_service.kind_of.
Results: bench/out/memory.json and a table on stdout.

``--floor`` also measures what Ray itself costs, started as `batchlog serve` starts it
(`batchlog/localray.py`: token auth, no dashboard, monitor or log monitor) by a bare
driver with no batchlog code, holding 0, 1 and 3 trivial actors (batchlog's idle tree
holds three: the coordinator, the upstream executor, the kept batch actor): the memory
no Ray-based design with that many actors can go below.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream  # noqa: E402
from bench.bench_service import chat_lines, kind_of  # noqa: E402
from bench.bench_sidebyside import MIB, Server, batchlog_server  # noqa: E402
from bench.machine import cpu_model  # noqa: E402

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def tree_by_kind(srv: Server | FloorDriver) -> dict[str, Any]:
    rss: dict[str, float] = {}
    pss: dict[str, float] = {}
    procs: list[dict[str, Any]] = []
    for pid in sorted(srv.pids()):
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                cmd = " ".join(p.cmdline())
                r = p.memory_info().rss
                s = p.memory_full_info().pss
        except (psutil.Error, OSError):
            continue
        if not cmd.strip():
            continue
        kind = kind_of(cmd)
        if kind == "other" and "-c" in cmd and "localray" in cmd:
            kind = "driver"  # the --floor driver (serve's place in that tree)
        rss[kind] = rss.get(kind, 0) + r / MIB
        pss[kind] = pss.get(kind, 0) + s / MIB
        procs.append({"kind": kind, "title": cmd[:60], "rss_mib": round(r / MIB, 1)})
    return {
        "rss_mib": round(sum(rss.values()), 1),
        "pss_mib": round(sum(pss.values()), 1),
        "processes": len(procs),
        "rss_by_kind_mib": {k: round(v, 1) for k, v in sorted(rss.items(), key=lambda kv: -kv[1])},
        "pss_by_kind_mib": {k: round(v, 1) for k, v in sorted(pss.items(), key=lambda kv: -kv[1])},
    }


# A driver with no batchlog code: Ray as serve starts it, then `n` trivial actors.
FLOOR_DRIVER = """
import logging, os, sys, time
from batches import rayauth
from batches.settings import Settings
rayauth.prepare(Settings())
import ray
from batchlog import localray
localray.quiet_environment()
with localray.without_side_processes(False):
    ray.init(address="local", include_dashboard=False, num_cpus=2,
             logging_level=logging.WARNING, log_to_driver=False)
@ray.remote(num_cpus=0)
class Trivial:
    def pid(self):
        return os.getpid()
actors = [Trivial.remote() for _ in range(int(sys.argv[1]))]
ray.get([a.pid.remote() for a in actors])
print("ready", flush=True)
time.sleep(3600)
"""


class FloorDriver:
    """The bare driver's process tree (it and what it started), for `tree_by_kind`."""

    def __init__(self, actors: int, data: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BATCHLOG_DATA_DIR": str(data)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLOOR_DRIVER, str(actors)],
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the floor driver did not start")

    def pids(self) -> set[int]:
        root = psutil.Process(self.proc.pid)
        return {root.pid, *(c.pid for c in root.children(recursive=True))}

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def floor(settle_s: float) -> dict[str, Any]:
    out = {}
    for actors in (0, 1, 3):
        with tempfile.TemporaryDirectory() as tmp:
            driver = FloorDriver(actors, Path(tmp))
            try:
                time.sleep(settle_s)
                out[f"{actors}_actors"] = tree_by_kind(driver)
            finally:
                driver.stop()
        tree = out[f"{actors}_actors"]
        print(
            f"Ray floor, bare driver + {actors} actors: RSS {tree['rss_mib']} MiB "
            f"(PSS {tree['pss_mib']}), {tree['rss_by_kind_mib']}",
            flush=True,
        )
    return out


def run_batches(srv: Server, lines: int, count: int, timeout: float) -> dict[str, Any]:
    """`count` batches of `lines` lines at once; the tree's peak RSS until all end."""
    assert srv.sampler is not None
    client = srv.client()
    f = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(lines))), purpose="batch")
    srv.sampler.reset_peak()
    srv.sampler.active.set()  # it samples only while a workload runs
    t0 = time.perf_counter()
    ids = [
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(count)
    ]
    deadline = time.monotonic() + timeout
    left = set(ids)
    while left and time.monotonic() < deadline:
        left = {b for b in left if client.batches.retrieve(b).status not in TERMINAL}
        time.sleep(0.1)
    srv.sampler.active.clear()
    srv.sampler.sample()
    mem = srv.sampler.memory()
    return {
        "batches": count,
        "lines": lines,
        "all_terminal_s": round(time.perf_counter() - t0, 2),
        "unfinished": len(left),
        **mem,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--baseline-dir", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--settle-s", type=float, default=10.0)
    p.add_argument("--lines", type=int, default=3000)
    p.add_argument("--timeout-s", type=float, default=300.0)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "memory.json")
    p.add_argument("--floor", action="store_true", help="also measure Ray's own floor")
    p.add_argument("--skip-servers", action="store_true", help="with --floor: only that")
    args = p.parse_args(argv)
    sources = {"batchlog": ROOT}
    if args.baseline_dir is not None:
        sources["baseline"] = args.baseline_dir.resolve()
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "loadavg_before": os.getloadavg(),
        "runs": {name: [] for name in sources},
    }
    if args.floor:
        out["floor"] = floor(args.settle_s)
    with FakeUpstream() as fake:
        for rnd in range(0 if args.skip_servers else args.rounds):
            for name, src in sources.items():
                srv = batchlog_server(name, src, fake.url)
                try:
                    startup = srv.start()
                    time.sleep(args.settle_s)
                    res: dict[str, Any] = {"round": rnd + 1, "startup_s": round(startup, 1)}
                    res["idle"] = tree_by_kind(srv)
                    res["one_batch"] = run_batches(srv, args.lines, 1, args.timeout_s)
                    res["two_batches"] = run_batches(srv, args.lines, 2, args.timeout_s)
                    time.sleep(args.settle_s)
                    res["idle_after"] = tree_by_kind(srv)
                finally:
                    srv.stop()
                out["runs"][name].append(res)
                idle, after = res["idle"], res["idle_after"]
                print(
                    f"[{rnd + 1}] {name}: idle RSS {idle['rss_mib']} MiB (PSS {idle['pss_mib']}, "
                    f"{idle['processes']} processes); one batch peak "
                    f"{res['one_batch']['peak_rss_mib']}, two {res['two_batches']['peak_rss_mib']};"
                    f" idle after {after['rss_mib']} (PSS {after['pss_mib']})\n"
                    f"    idle RSS by kind: {idle['rss_by_kind_mib']}",
                    flush=True,
                )
    out["loadavg_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"load average before {out['loadavg_before']}, after {out['loadavg_after']}")


if __name__ == "__main__":
    main()
