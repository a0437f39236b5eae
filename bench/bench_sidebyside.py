"""batchlog side by side with llama-stack 0.7.3's reference batches provider (issue 14).

Both servers get the same batches through the official ``openai`` SDK (upload the JSONL,
create, poll ``GET /v1/batches/{id}`` every 50 ms, download and check the output), against
the same instant fake upstream (``batches.testing.FakeUpstream``), runs interleaved:
round 1 runs workload A on batchlog, then on llama-stack, then workload B on each, ...

    nice bash bench/llama_stack_setup.sh          # once: the peer's venv, outside the repo
    nice .venv/bin/python bench/bench_sidebyside.py --rounds 1
    nice .venv/bin/python bench/bench_sidebyside.py --workloads idle w4 --rounds 3
    # before/after: an older main beside this checkout, interleaved with it
    git archive OLD | tar -x -C /tmp/batchlog-base
    nice .venv/bin/python bench/bench_sidebyside.py --baseline-dir /tmp/batchlog-base \
        --only batchlog baseline

Workloads (``--workloads``, default all, in this order):

- ``mock``: the fake upstream's own limit: wrk, 64 connections, the same chat request
  (before each round and after the last); without wrk, a plain httpx client instead
  (client-bound: bench/bench_service.py's direct loop) and the report says so.
- ``idle``: create -> in_progress on an idle service: a 10-line batch created 5 times,
  each after the previous one finished; from the create response to the first GET
  (polled every 20 ms) that no longer says ``validating``.
- ``w1``: 1,000 chat requests, end to end (upload -> output downloaded and checked).
- ``w2``: 10,000 chat requests; the p50/p99 of the GETs polling the batch.
- ``w3``: 2,000 requests with 50 ms upstream latency; the mean in flight at the fake.
- ``w4``: 40 batches of 10 lines, created at once from 40 threads -> all terminal.

Each server runs as a subprocess in its own session (batchlog serve starts its own Ray
inside it). Its whole process tree is sampled every 0.25 s (the session's processes and
the root's descendants: for batchlog serve, gcs_server, raylet, the Ray workers, the
dashboard/agent processes; for llama-stack its one process): RSS summed (peak per
workload, idle after start) and CPU seconds (user + system, including reaped children,
so workers that come and go between samples count). CPU per request is the server
tree's CPU over the workload / its requests: the fake upstream and this process are
reported apart. The machine is shared: each run also records the CPU used by processes
that are neither ours nor the servers' (``others_cpu_s``) and the load average.

A batch that makes no progress for ``--stall-s`` (or outlives ``--timeout-s``) is
recorded as hung with its last request counts, and that server is restarted for the
next workload. Every process this script starts is killed by its PID (servers: their
whole session); it never touches other Ray instances. Results: bench/out/sidebyside.json
and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import httpx
import openai
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream, free_port  # noqa: E402
from bench.bench_service import kind_of, machine_busy_s, pct, run_direct  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
LS_CONFIG = ROOT / "bench" / "llama_stack_config.yaml"
LS_VENV = Path.home() / ".cache" / "batchlog" / "llama-stack-venv"
ENDPOINT: Final = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
ALL_WORKLOADS = ["mock", "idle", "w1", "w2", "w3", "w4"]
MIB = 2**20


class Hung(Exception):
    """A batch made no progress for too long; carries what was last seen."""

    def __init__(self, message: str, seen: dict[str, Any]) -> None:
        super().__init__(message)
        self.seen = seen


# --- inputs and figures -------------------------------------------------------------------


def chat_lines(n: int, model: str, prefix: str) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": ENDPOINT,
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": f"hello {prefix} {i}"}],
                },
            }
        )
        + b"\n"
        for i in range(n)
    )


def r2(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def ms_summary(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": r2(pct(ms, 50)),
        "p99_ms": r2(pct(ms, 99)),
        "max_ms": r2(max(ms) if ms else None),
    }


def proc_cpu(p: psutil.Process) -> float:
    """User + system seconds of a process and of its children it has reaped."""
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


# --- a server under test: a subprocess session, sampled -----------------------------------


def _session_pids(sid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    out.add(int(entry.name))
    return out


def _ignores_sigchld(pid: int) -> bool:
    """Whether the process ignores SIGCHLD (its children are reaped by the kernel)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGCHLD - 1)))
    except (OSError, ValueError):
        pass
    return False


class TreeSampler:
    """RSS and CPU seconds of a server's whole process tree, sampled every ``interval`` s.

    CPU: the sum over live processes of their own and their reaped children's times,
    plus the last seen times of processes that left without a parent of the tree that
    waits for its children. The raylet ignores SIGCHLD (the kernel reaps its workers and
    adds their time to nobody), so a Ray worker counts with its last sample: what it
    used in its last <= 0.25 s is missed. Children of a parent that waits (serve's
    gcs_server and raylet) count in full through the parent."""

    def __init__(self, pids: Callable[[], set[int]], label: Callable[[str], str]) -> None:
        self.pids, self.label = pids, label
        self.interval = 0.25
        self._procs: dict[int, psutil.Process] = {}
        self._last: dict[int, tuple[float, int]] = {}  # pid -> (cpu incl. children, ppid)
        self._auto_reaps: set[int] = set()  # live pids that ignore SIGCHLD
        self._departed = 0.0
        self.cpu_total = 0.0
        # for the breakdown: each process's own CPU (dead ones keep their last sample)
        self.own: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.rss_now = 0
        self.peak = 0
        self.peak_breakdown: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # sampling scans /proc: only while a workload runs on this server (see Window), so
        # the idle servers' samplers do not take CPU from the one under test
        self.active = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.active.wait(self.interval):
                continue
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        with self._lock:
            seen: dict[int, tuple[float, int]] = {}
            by_kind: dict[str, int] = {}
            for pid in self.pids():
                try:
                    p = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                    with p.oneshot():
                        cpu, ppid = proc_cpu(p), p.ppid()
                        t = p.cpu_times()
                        rss = p.memory_info().rss
                        cmd = " ".join(p.cmdline())
                except (psutil.Error, OSError):
                    continue
                seen[pid] = (cpu, ppid)
                self.own[pid] = t.user + t.system
                kind = self.label(cmd) if cmd.strip() else "exiting"
                if kind != "exiting":
                    self.kinds[pid] = kind
                by_kind[kind] = by_kind.get(kind, 0) + rss
            auto_reaps = {pid for pid in seen if _ignores_sigchld(pid)}
            for pid, (cpu, ppid) in self._last.items():
                if pid not in seen:
                    self._procs.pop(pid, None)
                    # no parent of ours waited for it (gone, or one that ignores SIGCHLD):
                    # its time is nowhere else, keep what we saw last
                    if ppid not in seen or ppid in self._auto_reaps or ppid in auto_reaps:
                        self._departed += cpu
            self._last, self._auto_reaps = seen, auto_reaps
            # no clamp: a drop would mean time counted nowhere, and must show
            self.cpu_total = self._departed + sum(c for c, _ in seen.values())
            self.rss_now = sum(by_kind.values())
            if self.rss_now > self.peak:
                self.peak, self.peak_breakdown = self.rss_now, by_kind

    def cpu_by_kind(self, since: dict[int, float]) -> dict[str, float]:
        """Each kind's own CPU seconds since the ``own`` snapshot ``since``."""
        with self._lock:
            out: dict[str, float] = {}
            for pid, cpu in self.own.items():
                kind = self.kinds.get(pid, "exiting")
                out[kind] = out.get(kind, 0.0) + cpu - since.get(pid, 0.0)
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.01}

    def reset_peak(self) -> None:
        with self._lock:
            self.peak, self.peak_breakdown = 0, {}
        self.sample()

    def memory(self) -> dict[str, Any]:
        with self._lock:
            return {
                "peak_rss_mib": round(self.peak / MIB, 1),
                "peak_rss_by_kind_mib": {
                    k: round(v / MIB, 1)
                    for k, v in sorted(self.peak_breakdown.items(), key=lambda kv: -kv[1])
                },
            }


class Server:
    """A server under test, started as a subprocess in a new session."""

    def __init__(
        self,
        name: str,
        kind: str,
        cmd: list[str],
        env: dict[str, str],
        cwd: Path,
        health_path: str,
        model: str,
        port_env: str,
    ) -> None:
        self.name, self.kind, self.cmd, self.cwd = name, kind, cmd, cwd
        self.env, self.health_path, self.model, self.port_env = env, health_path, model, port_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.workdir: Path | None = None
        self.sampler: TreeSampler | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, timeout: float = 120.0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="none", max_retries=0, timeout=timeout)

    def pids(self) -> set[int]:
        if self.proc is None:
            return set()
        out = _session_pids(self.proc.pid)
        with contextlib.suppress(psutil.Error):  # descendants that left the session
            out |= {c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)}
        out.discard(os.getpid())
        return out

    def start(self, timeout: float = 180.0) -> float:
        """Start on a free port in a fresh work dir; seconds until its health check answers."""
        for _attempt in range(3):
            self.workdir = Path(tempfile.mkdtemp(prefix=f"sidebyside-{self.name}-"))
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            env.update({k: v.format(dir=self.workdir) for k, v in self.env.items()})
            env[self.port_env] = str(self.port)
            log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child's
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [c.format(port=self.port) for c in self.cmd],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout
            health = f"http://127.0.0.1:{self.port}{self.health_path}"
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(health, timeout=2, trust_env=False).status_code == 200:
                        self.starts += 1
                        self.sampler = TreeSampler(self.pids, self.label).start()
                        return time.perf_counter() - t0
                time.sleep(0.3)
            text = self.log_tail()
            self.kill()
            if "address already in use" not in text:  # a port race is retried
                raise RuntimeError(f"{self.name} did not come up:\n{text}")
        raise RuntimeError(f"{self.name}: no free port after 3 tries")

    def label(self, cmdline: str) -> str:
        return kind_of(cmdline) if self.kind == "batchlog" else self.kind

    def log_tail(self, n: int = 6000) -> str:
        if self.workdir is None or not (self.workdir / "server.log").exists():
            return ""
        return (self.workdir / "server.log").read_text(errors="replace")[-n:]

    def kill(self) -> None:
        """SIGTERM the root, then SIGKILL every process of the session and tree left."""
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        for _ in range(50):
            left = _session_pids(proc.pid) - {os.getpid()}
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def stop(self, keep_dir: bool = False) -> None:
        self.kill()
        if self.workdir is not None and not keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None


def batchlog_server(name: str, src: Path, fake_url: str) -> Server:
    # cwd and PYTHONPATH both name the checkout: `python -m` puts the cwd first on
    # sys.path and Ray's workers get the driver's path, so serve and every actor run it
    env = {
        "PYTHONPATH": str(src),
        "BATCHLOG_UPSTREAM": fake_url,
        "BATCHLOG_DATA_DIR": "{dir}/data",
        "BATCHLOG_RAY_NUM_CPUS": "2",
    }
    cmd = [sys.executable, "-m", "batchlog.cli", "serve"]
    return Server(name, "batchlog", cmd, env, src, "/health", "fake-chat", "BATCHLOG_PORT")


def llamastack_server(venv: Path, fake_url: str, inflight: int, batches: int) -> Server:
    env = {
        "OPENAI_BASE_URL": fake_url,
        "OPENAI_API_KEY": "none",
        "BENCH_LS_DIR": "{dir}",
        "BENCH_LS_MAX_CONCURRENT_REQUESTS": str(inflight),
        "BENCH_LS_MAX_CONCURRENT_BATCHES": str(batches),
        "PYTHONPATH": "",  # not ours: a 3.12 venv of its own
    }
    cmd = [str(venv / "bin" / "llama"), "stack", "run", str(LS_CONFIG), "--port", "{port}"]
    # the remote::openai provider lists the upstream's models as openai/<id>
    return Server(
        "llamastack", "llama-stack", cmd, env, ROOT, "/v1/health", "openai/fake-chat",
        "LLAMA_STACK_PORT",
    )  # fmt: skip


# --- measuring one workload ---------------------------------------------------------------


class Window:
    """CPU seconds between start and end: the server tree, the fake, this process, others."""

    def __init__(self, srv: Server, fake: FakeUpstream) -> None:
        assert srv.sampler is not None and fake._proc is not None
        self.srv, self.sampler = srv, srv.sampler
        self.fake = psutil.Process(fake._proc.pid)
        self.me = psutil.Process()
        self.sampler.reset_peak()
        self.sampler.active.set()
        self.t0, self.load0 = time.time(), os.getloadavg()[0]
        self.s0, self.f0 = self.sampler.cpu_total, proc_cpu(self.fake)
        self.own0 = dict(self.sampler.own)
        self.m0, self.b0 = proc_cpu(self.me), machine_busy_s()

    def close(self, requests: int) -> dict[str, Any]:
        self.sampler.active.clear()
        self.sampler.sample()
        wall = time.time() - self.t0
        server = self.sampler.cpu_total - self.s0
        fake = proc_cpu(self.fake) - self.f0
        bench = proc_cpu(self.me) - self.m0
        busy = machine_busy_s() - self.b0
        return {
            "wall_s": r2(wall, 3),
            "server_cpu_s": r2(server),
            "server_cpu_ms_per_request": r2(1000 * server / requests, 3) if requests else None,
            "server_cpu_pct_of_one_cpu": r2(100 * server / wall, 1) if wall else None,
            "fake_cpu_s": r2(fake),
            "bench_cpu_s": r2(bench),
            "others_cpu_s": r2(busy - server - fake - bench),
            "loadavg_1min_start_end": [round(self.load0, 2), round(os.getloadavg()[0], 2)],
            # own CPU per kind of process (processes seen by the 0.25 s samples; a worker
            # that lived between two samples is only in server_cpu_s, via its parent)
            "server_cpu_s_by_kind": self.sampler.cpu_by_kind(self.own0),
            **self.sampler.memory(),
        }


def poll_until_terminal(
    client: openai.OpenAI,
    batch_id: str,
    *,
    period: float,
    timeout_s: float,
    stall_s: float,
) -> tuple[Any, list[float], dict[str, float], int]:
    """GET every ``period`` s: (final batch, GET latencies, status -> first seen, errors)."""
    latencies: list[float] = []
    first: dict[str, float] = {}
    errors = 0
    start = last_change = time.time()
    last: tuple[Any, ...] = ()
    batch: Any = None
    while True:
        t0 = time.perf_counter()
        try:
            batch = client.batches.retrieve(batch_id)
        except openai.OpenAIError:
            errors += 1  # a failed GET is counted; the stall clock decides
        else:
            latencies.append(time.perf_counter() - t0)
            now = time.time()
            first.setdefault(batch.status, now)
            rc = batch.request_counts
            state = (batch.status, rc.completed if rc else None, rc.failed if rc else None)
            if state != last:
                last, last_change = state, now
            if batch.status in TERMINAL:
                return batch, latencies, first, errors
        now = time.time()
        if now - last_change > stall_s or now - start > timeout_s:
            seen = {
                "status": last[0] if last else None,
                "completed_failed": last[1:],
                "get_errors": errors,  # GETs that failed or timed out (120 s)
            }
            raise Hung(f"batch {batch_id}: no progress for {now - last_change:.0f} s", seen)
        time.sleep(max(0.0, period - (time.perf_counter() - t0)))


def check_output(client: openai.OpenAI, batch: Any, n: int) -> dict[str, Any]:
    if not batch.output_file_id:
        raise RuntimeError(f"batch {batch.id} ended {batch.status} without output: {batch}")
    data = client.files.content(batch.output_file_id).content
    lines = [orjson.loads(x) for x in data.splitlines() if x.strip()]
    ok = sum(1 for x in lines if (x.get("response") or {}).get("status_code") == 200)
    if len(lines) != n or ok != n:
        raise RuntimeError(f"batch {batch.id}: {len(lines)} output lines, {ok} ok; want {n}")
    return {"output_lines": len(lines), "ok": ok}


def run_one_batch(
    srv: Server, fake: FakeUpstream, n: int, latency_ms: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One batch of n chat requests end to end (w1, w2, w3)."""
    fake.reset()
    if latency_ms:
        fake.configure(latency_ms=latency_ms)
    content = chat_lines(n, srv.model, f"{srv.name}-{n}")
    client = srv.client()
    win = Window(srv, fake)
    t0 = time.time()
    f = client.files.create(file=("bench.jsonl", io.BytesIO(content)), purpose="batch")
    t_up = time.time()
    b = client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h")
    t_created = time.time()
    final, gets, first, get_errors = poll_until_terminal(
        client, b.id, period=0.05, timeout_s=args.timeout_s, stall_s=args.stall_s
    )
    if final.status != "completed":
        raise RuntimeError(f"batch ended {final.status}: {final}")
    out = check_output(client, final, n)
    e2e = time.time() - t0
    cpu = win.close(n)
    log = [e for e in fake.requests() if e["path"] == "/v1/chat/completions"]
    fake.reset()
    t_ip = first.get("in_progress")
    return {
        "status": "ok",
        "requests": n,
        "upstream_latency_ms": latency_ms,
        "end_to_end_s": r2(e2e, 3),
        "requests_per_s": r2(n / e2e, 1),
        "upload_s": r2(t_up - t0, 3),
        "create_to_in_progress_seen_s": r2(t_ip - t_created, 3) if t_ip else None,
        "get_batch": ms_summary(gets),
        "get_errors": get_errors,
        "fake_requests": len(log),
        # requests in flight at the fake as each arrived (the fake counts its handlers)
        "fake_mean_inflight": r2(statistics.fmean(e["inflight"] for e in log), 1) if log else None,
        **out,
        **cpu,
    }


def run_idle_create(srv: Server, fake: FakeUpstream, args: argparse.Namespace) -> dict[str, Any]:
    """create -> in_progress on an idle service: 10-line batches, one at a time."""
    fake.reset()
    client = srv.client()
    f = client.files.create(
        file=("idle.jsonl", io.BytesIO(chat_lines(10, srv.model, f"{srv.name}-idle"))),
        purpose="batch",
    )
    samples: list[float] = []
    statuses: list[str] = []
    win = Window(srv, fake)
    for _ in range(args.idle_samples):
        time.sleep(1.0)  # let the previous batch's aftermath settle
        b = client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h")
        t_created = time.time()
        deadline = t_created + args.stall_s
        while True:
            cur = client.batches.retrieve(b.id)
            if cur.status != "validating":
                samples.append(time.time() - t_created)
                statuses.append(cur.status)
                break
            if time.time() > deadline:
                raise Hung(f"batch {b.id} still validating", {"status": cur.status})
            time.sleep(0.02)
        final, *_ = poll_until_terminal(
            client, b.id, period=0.1, timeout_s=args.timeout_s, stall_s=args.stall_s
        )
        if final.status != "completed":
            raise RuntimeError(f"idle batch ended {final.status}: {final}")
    cpu = win.close(10 * args.idle_samples)
    fake.reset()
    return {
        "status": "ok",
        "create_to_in_progress_p50_s": r2(statistics.median(samples), 3),
        "create_to_in_progress_s": [round(s, 3) for s in samples],
        "first_status_after_validating": statuses,
        "note": "poll every 20 ms; each batch created 1 s after the previous one finished",
        **cpu,
    }


def run_small_batches(srv: Server, fake: FakeUpstream, args: argparse.Namespace) -> dict[str, Any]:
    """40 batches of 10 lines created at once (40 threads) -> all terminal."""
    count, lines = args.small_batches, args.small_lines
    fake.reset()
    client = srv.client()
    files = [
        client.files.create(
            file=(f"s{i}.jsonl", io.BytesIO(chat_lines(lines, srv.model, f"{srv.name}-s{i}"))),
            purpose="batch",
        ).id
        for i in range(count)
    ]
    win = Window(srv, fake)
    t0 = time.time()

    def create(fid: str) -> str:
        return client.batches.create(
            input_file_id=fid, endpoint=ENDPOINT, completion_window="24h"
        ).id

    with ThreadPoolExecutor(max_workers=count) as pool:
        ids = list(pool.map(create, files))
    t_created = time.time()
    pending = set(ids)
    done: dict[str, tuple[float, str, int]] = {}
    gets: list[float] = []
    last_change = time.time()
    while pending:
        for bid in sorted(pending):
            g0 = time.perf_counter()
            b = client.batches.retrieve(bid)
            gets.append(time.perf_counter() - g0)
            if b.status in TERMINAL:
                rc = b.request_counts
                done[bid] = (time.time() - t0, b.status, rc.completed if rc else 0)
                pending.discard(bid)
                last_change = time.time()
        if pending and (
            time.time() - last_change > args.stall_s or time.time() - t0 > args.timeout_s
        ):
            raise Hung(f"{len(pending)} of {count} small batches not terminal", {"done": len(done)})
        time.sleep(0.05)
    cpu = win.close(count * lines)
    completed = [d for d in done.values() if d[1] == "completed" and d[2] == lines]
    if len(completed) != count:
        raise RuntimeError(f"{len(completed)} of {count} small batches completed: {done}")
    fake.reset()
    ends = sorted(d[0] for d in done.values())
    return {
        "status": "ok",
        "batches": count,
        "lines_each": lines,
        "create_calls_s": r2(t_created - t0, 3),
        "all_terminal_s": r2(ends[-1], 2),
        "first_terminal_s": r2(ends[0], 2),
        "get_batch": ms_summary(gets),
        "note": "terminal seen by sequential GET sweeps over the pending batches",
        **cpu,
    }


# --- the fake upstream's own limit --------------------------------------------------------

WRK_LUA = """wrk.method = "POST"
wrk.body = '{"model":"fake-chat","messages":[{"role":"user","content":"hello wrk 1"}]}'
wrk.headers["Content-Type"] = "application/json"
"""


def mock_limit(fake: FakeUpstream, args: argparse.Namespace) -> dict[str, Any]:
    assert fake._proc is not None
    fake.reset()
    fp = psutil.Process(fake._proc.pid)
    f0, t0, load0 = proc_cpu(fp), time.time(), os.getloadavg()[0]
    wrk = shutil.which("wrk")
    out: dict[str, Any]
    if wrk:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(WRK_LUA)
        try:
            proc = subprocess.run(
                [wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.wrk_s}s",
                 "--latency", "-s", lua.name, f"{fake.url}/chat/completions"],
                capture_output=True, text=True, timeout=args.wrk_s + 60,
            )  # fmt: skip
        finally:
            os.unlink(lua.name)
        text = proc.stdout
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        total = re.search(r"(\d+) requests in", text)
        out = {
            "tool": f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.wrk_s}s",
            "requests_per_s": float(m.group(1)) if m else None,
            "requests": int(total.group(1)) if total else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "latency_p50_p99": re.findall(r"\s(50|99)%\s+(\S+)", text),
        }
        if m is None:
            out["wrk_output"] = (text + proc.stderr)[-2000:]
    else:
        direct = run_direct(fake, args.direct_requests, args.connections)
        out = {
            "tool": f"httpx.AsyncClient, {args.connections} in flight (wrk not installed)",
            "note": "client-bound, a floor of the fake's limit: apt-get install wrk",
            "requests_per_s": direct["requests_per_s"],
            "requests": direct["requests"],
        }
    fake_cpu = proc_cpu(fp) - f0
    fake.reset()
    if out.get("requests"):
        out["fake_cpu_ms_per_request"] = round(1000 * fake_cpu / out["requests"], 3)
    out["wall_s"] = r2(time.time() - t0)
    out["loadavg_1min_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return out


# --- the run ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "mem_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def git_rev(path: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(path), "log", "-1", "--format=%h %cI"], capture_output=True, text=True
    )
    return proc.stdout.strip() or "(not a git checkout)"


def run_workload(name: str, srv: Server, fake: FakeUpstream, args: argparse.Namespace) -> Any:
    if name == "idle":
        return run_idle_create(srv, fake, args)
    if name == "w1":
        return run_one_batch(srv, fake, args.w1_requests, 0.0, args)
    if name == "w2":
        return run_one_batch(srv, fake, args.w2_requests, 0.0, args)
    if name == "w3":
        return run_one_batch(srv, fake, args.w3_requests, args.w3_latency_ms, args)
    if name == "w4":
        return run_small_batches(srv, fake, args)
    raise ValueError(name)


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)

    def f(v: float) -> str:
        return f"{v:,.0f}" if hi >= 100 else f"{v:.1f}" if hi >= 10 else f"{v:.2f}"

    return f(lo) if lo == hi else f"{f(lo)}-{f(hi)}"


ROWS: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
    ("idle", "create -> in_progress p50 on an idle service (s)",
     lambda r: r["create_to_in_progress_p50_s"]),
    ("idle", "RSS of the server tree after start, idle (MiB)", lambda r: r["idle_rss_mib"]),
    ("w1", "{w1_requests:,} chat requests end to end (req/s)", lambda r: r["requests_per_s"]),
    ("w1", "  CPU per request, server tree (ms)", lambda r: r["server_cpu_ms_per_request"]),
    ("w2", "{w2_requests:,} chat requests end to end (req/s)", lambda r: r["requests_per_s"]),
    ("w2", "  CPU per request, server tree (ms)", lambda r: r["server_cpu_ms_per_request"]),
    ("w2", "  peak RSS of the server tree (MiB)", lambda r: r["peak_rss_mib"]),
    ("w2", "  GET /v1/batches/{{id}} p50 (ms)", lambda r: r["get_batch"]["p50_ms"]),
    ("w2", "  GET /v1/batches/{{id}} p99 (ms)", lambda r: r["get_batch"]["p99_ms"]),
    ("w3", "{w3_requests:,} requests, {w3_latency_ms:g} ms upstream latency (req/s)", lambda r: r["requests_per_s"]),
    ("w3", "  mean requests in flight at the upstream", lambda r: r["fake_mean_inflight"]),
    ("w3", "  CPU per request, server tree (ms)", lambda r: r["server_cpu_ms_per_request"]),
    ("w4", "{small_batches} batches x {small_lines} lines created at once: all terminal (s)",
     lambda r: r["all_terminal_s"]),
    ("w4", "  CPU seconds, server tree", lambda r: r["server_cpu_s"]),
    ("w4", "  peak RSS of the server tree (MiB)", lambda r: r["peak_rss_mib"]),
]  # fmt: skip


def table(
    results: dict[str, dict[str, list[dict[str, Any]]]],
    mock: list[dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    """Ranges over the rounds (min-max); a last column batchlog / llamastack (medians)."""
    names = list(results)
    ratio = "batchlog" in names and "llamastack" in names
    head = [*names, *(["batchlog / llamastack"] if ratio else [])]
    lines = ["| workload | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    if mock:
        rps = [float(m["requests_per_s"]) for m in mock if m.get("requests_per_s")]
        label = f"the fake upstream's own limit ({mock[0]['tool']}, req/s)"
        lines.append(f"| {label} | " + " | ".join([_fmt(rps)] + [""] * (len(head) - 1)) + " |")
    for wl, label, get in ROWS:
        cells, medians = [], {}
        for name in names:
            runs = results[name].get(wl, [])
            vals = []
            for run in runs:
                if run.get("status") == "ok":
                    with contextlib.suppress(KeyError, TypeError):
                        v = get(run)
                        if v is not None:
                            vals.append(float(v))
            bad = [r["status"] for r in runs if r.get("status") != "ok"]
            cell = _fmt(vals)
            if bad:
                cell += f" ({len(bad)} of {len(runs)} {'/'.join(sorted(set(bad)))})"
            cells.append(cell if runs else "-")
            if vals:
                medians[name] = statistics.median(vals)
        if ratio:
            a, b = medians.get("batchlog"), medians.get("llamastack")
            cells.append(f"{a / b:.2f}" if a is not None and b else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {label.format(**vars(args))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workloads", nargs="+", default=ALL_WORKLOADS, choices=ALL_WORKLOADS)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--only", nargs="+", default=None, choices=["batchlog", "baseline", "llamastack"],
        help="which servers (default: batchlog, baseline if --baseline-dir, llamastack if installed)",
    )  # fmt: skip
    p.add_argument("--baseline-dir", type=Path, default=None,
                   help="another batchlog checkout (e.g. git archive of an older main), run as 'baseline'")  # fmt: skip
    p.add_argument("--llamastack-venv", type=Path, default=LS_VENV)
    p.add_argument("--llamastack-inflight", type=int, default=10,
                   help="its max_concurrent_requests_per_batch (its default: 10)")  # fmt: skip
    p.add_argument("--llamastack-batches", type=int, default=1,
                   help="its max_concurrent_batches (its default: 1)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="BATCHLOG_X=V",
                   help="a batchlog setting for both batchlog servers (default: its defaults)")  # fmt: skip
    p.add_argument("--w1-requests", type=int, default=1_000)
    p.add_argument("--w2-requests", type=int, default=10_000)
    p.add_argument("--w3-requests", type=int, default=2_000)
    p.add_argument("--w3-latency-ms", type=float, default=50.0)
    p.add_argument("--small-batches", type=int, default=40)
    p.add_argument("--small-lines", type=int, default=10)
    p.add_argument("--idle-samples", type=int, default=5)
    p.add_argument("--connections", type=int, default=64, help="the mock-limit load's")
    p.add_argument("--wrk-s", type=int, default=10)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--direct-requests", type=int, default=5_000, help="without wrk")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per batch")
    p.add_argument("--stall-s", type=float, default=90.0, help="no progress for this: hung")
    p.add_argument("--json", type=Path, default=OUT_DIR / "sidebyside.json")
    args = p.parse_args(argv)

    only = args.only or ["batchlog", *(["baseline"] if args.baseline_dir else []), "llamastack"]
    if "llamastack" in only and not (args.llamastack_venv / "bin" / "llama").exists():
        if args.only:
            sys.exit(f"no llama-stack at {args.llamastack_venv}: run bench/llama_stack_setup.sh")
        print(f"llama-stack not installed at {args.llamastack_venv} "
              "(bench/llama_stack_setup.sh): batchlog only", flush=True)  # fmt: skip
        only.remove("llamastack")
    if "baseline" in only and args.baseline_dir is None:
        sys.exit("--only baseline needs --baseline-dir")

    # a SIGTERM ends the run through the finally blocks (servers killed by PID)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    extra = dict(item.partition("=")[::2] for item in args.set)
    result: dict[str, Any] = {
        "machine_before": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "servers": {},
        "mock": [],
        "runs": {},
    }
    print(f"machine: {result['machine_before']}", flush=True)
    workloads = [w for w in ALL_WORKLOADS if w in args.workloads and w != "mock"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in only}
    with FakeUpstream() as fake:
        servers: list[Server] = []
        for name in only:
            if name == "llamastack":
                srv = llamastack_server(
                    args.llamastack_venv,
                    fake.url,
                    args.llamastack_inflight,
                    args.llamastack_batches,
                )
                src = "llama-stack 0.7.3 " + str(args.llamastack_venv)
            else:
                src_dir = ROOT if name == "batchlog" else args.baseline_dir.resolve()
                srv = batchlog_server(name, src_dir, fake.url)
                srv.env.update(extra)
                src = f"{src_dir} @ {git_rev(src_dir)}"
            servers.append(srv)
            result["servers"][name] = src
        try:
            for rnd in range(args.rounds):
                if "mock" in args.workloads:
                    result["mock"].append(mock_limit(fake, args))
                    print(f"[round {rnd + 1}] mock limit: {result['mock'][-1]}", flush=True)
                for srv in servers:
                    startup = srv.start()
                    time.sleep(3.0)  # idle: let start-up work finish
                    assert srv.sampler is not None
                    srv.sampler.sample()
                    idle = {
                        "startup_s": r2(startup),
                        "idle_rss_mib": round(srv.sampler.rss_now / MIB, 1),
                    }
                    results[srv.name].setdefault("start", []).append({"status": "ok", **idle})
                    print(f"[round {rnd + 1}] {srv.name} up: {idle}", flush=True)
                for wl in workloads:
                    for srv in servers:
                        if srv.proc is None:  # restarted after a hang or failure
                            srv.start()
                        t0 = time.time()
                        try:
                            res = run_workload(wl, srv, fake, args)
                        except Hung as exc:
                            res = {"status": "hung", "error": str(exc), "last_seen": exc.seen,
                                   "log_tail": srv.log_tail(3000)}  # fmt: skip
                        except Exception as exc:  # recorded; the run goes on
                            res = {"status": "failed", "error": repr(exc)[:2000],
                                   "log_tail": srv.log_tail(3000)}  # fmt: skip
                        if wl == "idle" and res.get("status") == "ok":
                            res["idle_rss_mib"] = results[srv.name]["start"][-1]["idle_rss_mib"]
                        res["round"] = rnd + 1
                        results[srv.name].setdefault(wl, []).append(res)
                        brief = {k: res.get(k) for k in (
                            "status", "requests_per_s", "server_cpu_ms_per_request",
                            "peak_rss_mib", "all_terminal_s", "create_to_in_progress_p50_s",
                            "fake_mean_inflight", "get_batch", "error")}  # fmt: skip
                        print(f"[round {rnd + 1}] {wl} {srv.name} ({time.time() - t0:.0f} s): "
                              f"{ {k: v for k, v in brief.items() if v is not None} }", flush=True)  # fmt: skip
                        if res["status"] != "ok":
                            print(f"  {srv.name} is restarted; its log was in {srv.workdir}")
                            srv.stop(keep_dir=True)
                for srv in servers:
                    srv.stop()
            if "mock" in args.workloads:
                result["mock"].append(mock_limit(fake, args))
                print(f"mock limit after: {result['mock'][-1]}", flush=True)
        finally:
            for srv in servers:
                srv.stop(keep_dir=srv.proc is not None)
    result["runs"] = results
    result["machine_after"] = machine()
    md = table(results, result["mock"], args)
    result["table_markdown"] = md
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(md)
    print(f"machine after: {result['machine_after']}")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
