"""The whole service against a fake upstream: batchlog's throughput vs the upstream's own.

Run by hand (a few minutes on 2 cores; results in docs/benchmarks.md, "Service"):

    .venv/bin/python bench/bench_service.py                          # 10,000 requests
    .venv/bin/python bench/bench_service.py --requests 3000 --sweep  # try chunk settings
    .venv/bin/python bench/bench_service.py --requests 4000 --skip-direct \
        --profile bench/out/profile --profile-gil                    # py-spy the actors

Service settings: ``--chunk-size 64 --chunks-in-flight 4 --upstream-max-concurrency 64``
by default (the best of the sweep; the service's own defaults are 16/4/64), any other
with ``--set BATCHLOG_X=V``. The machine is shared: every phase also records the CPU
seconds used by processes that are not ours (``others_cpu_s``), so a run disturbed by
neighbours shows it.

One run prints, and writes to bench/out/service.json:

1. The fake upstream's own limit: the same chat requests sent straight to it by a plain
   ``httpx.AsyncClient`` with ``--concurrency`` requests in flight (default: what batchlog
   keeps in flight toward the upstream, ``min(chunk_size * chunks_in_flight,
   upstream_max_concurrency)``), as requests/s. Measured before and after the batchlog
   run, to bracket the noise of a shared machine; the ratio uses their mean.
2. The same requests through ``batchlog serve`` (a real subprocess with its own Ray):
   upload the JSONL, create the batch with the ``openai`` SDK, poll until completed,
   download the output and check it has one line per request. Requests/s end to end
   (upload start -> output downloaded) and over the batch's in_progress time (from the
   event log: ``BatchValidated`` -> ``BatchFinalizing``), and the ratio to (1).
3. p50/p99 latency of ``GET /v1/batches/{id}`` (a thread polls every ~50 ms during the
   run) and of ``POST /v1/batches`` (a few extra small batches created during the run).
4. create -> in_progress: from the create response to the first GET that shows
   in_progress, and from the log (``BatchCreated`` -> ``BatchValidated`` recorded_at).
5. Peak RSS of the service's session (every process of it, sampled every ~0.5 s): the
   peak of the sum (and of PSS, which counts shared pages once) and the peak per kind of
   process; the fake upstream's separately. Also the CPU seconds each kind used while
   the batch ran (where the 2 cores went), and after the run the CPU cost of one GET.

The fake upstream's request log gives the requests/s it saw in both runs; the batch's
events give each request's upstream call time and how long its outcome waited to be
logged; CPU seconds per process show which process the cores went to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batches.testing import FakeUpstream, Service  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
ENDPOINT = "/v1/chat/completions"
MODEL = "fake-chat"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
# The best of a sweep on 2 cores (docs/benchmarks.md, "Service"); the service's own
# defaults (batches/settings.py) are chunk_size 16, chunks_in_flight 4, max concurrency 64.
DEFAULTS = {"chunk_size": 64, "chunks_in_flight": 4, "upstream_max_concurrency": 64}


# --- inputs ---------------------------------------------------------------------------


def chat_body(i: int, prefix: str = "req") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"hello {prefix} {i}"}]}


def chat_lines(n: int, prefix: str = "req") -> bytes:
    """The batch input: the shape the e2e tests use (tests/e2e/conftest.py)."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": ENDPOINT,
                "body": chat_body(i, prefix),
            }
        )
        + b"\n"
        for i in range(n)
    )


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100.0 * len(s) + 0.5) - 1))
    return s[k]


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000.0 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": _r(pct(ms, 50)),
        "p90_ms": _r(pct(ms, 90)),
        "p99_ms": _r(pct(ms, 99)),
        "max_ms": _r(max(ms) if ms else None),
        "mean_ms": _r(statistics.fmean(ms) if ms else None),
    }


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


# --- the fake upstream's view ---------------------------------------------------------


def upstream_view(fake: FakeUpstream, key_prefix: str = "") -> dict[str, Any]:
    """Requests/s as the fake upstream saw them (its request log).

    (Its ``inflight`` field is always 1 here: with no injected latency a handler never
    awaits, so the fake serves one request at a time; concurrency only keeps it fed.)

    ``key_prefix``: only requests whose X-Batchlog-Request starts with it (one batch's)."""
    log = [
        e
        for e in fake.requests()
        if e["path"] == "/v1/chat/completions" and (e["key"] or "").startswith(key_prefix)
    ]
    if not log:
        return {"requests": 0}
    ts = [e["t"] for e in log]
    span = max(ts) - min(ts)
    return {
        "requests": len(log),
        "ok": sum(1 for e in log if e["status"] == 200),
        "span_s": _r(span, 3),
        "requests_per_s": _r(len(log) / span if span > 0 else None, 1),
    }


# --- (1) the baseline: a plain async client straight to the fake ---------------------


async def _direct(url: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    payloads = [orjson.dumps(chat_body(i)) for i in range(n)]
    headers = {"content-type": "application/json", "accept": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60.0, trust_env=False
    ) as client:

        async def worker(queue: list[int], record: bool) -> None:
            nonlocal errors
            while queue:
                i = queue.pop()
                t0 = time.perf_counter()
                r = await client.post(
                    "/chat/completions",
                    content=payloads[i % n],
                    headers={"x-batchlog-request": f"direct:req-{i}"},
                )
                r.content  # noqa: B018 - read, as the executor does
                if record:
                    latencies.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        errors += 1

        # a short warmup opens the connections (batchlog's pool is warm after a few chunks)
        wq = list(range(warmup))
        await asyncio.gather(*(worker(wq, False) for _ in range(concurrency)))
        queue = list(range(n))[::-1]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(queue, True) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": n,
        "concurrency": concurrency,
        "warmup_requests": warmup,
        "errors": errors,
        "wall_s": _r(wall, 3),
        "requests_per_s": _r(n / wall, 1),
        "latency": summary_ms(latencies),
    }


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, everything but idle/iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# switches the fake keeps across runs (its reset() clears them): --upstream-latency-ms
FAKE_SWITCHES: dict[str, Any] = {}


def reset_fake(fake: FakeUpstream) -> None:
    fake.reset()
    if FAKE_SWITCHES:
        fake.configure(**FAKE_SWITCHES)


def run_direct(fake: FakeUpstream, n: int, concurrency: int) -> dict[str, Any]:
    load0 = loadavg()
    reset_fake(fake)
    assert fake._proc is not None
    me, upstream = psutil.Process(), psutil.Process(fake._proc.pid)
    c0, u0 = sum(me.cpu_times()[:2]), sum(upstream.cpu_times()[:2])
    w0, m0 = time.time(), machine_busy_s()
    result = asyncio.run(_direct(fake.url, n, concurrency, warmup=min(n, 4 * concurrency)))
    wall, busy = time.time() - w0, machine_busy_s() - m0
    # CPU seconds (warmup included): which side of the baseline is the limit
    client_s = sum(me.cpu_times()[:2]) - c0
    fake_s = sum(upstream.cpu_times()[:2]) - u0
    sent = n + result["warmup_requests"]
    result["cpu_s"] = {"client": round(client_s, 2), "fake_upstream": round(fake_s, 2)}
    result["machine"] = {
        "wall_s": round(wall, 2),
        "busy_pct_of_all_cpus": round(100 * busy / (wall * (psutil.cpu_count() or 1)), 1),
        "client_pct_of_one_cpu": round(100 * client_s / wall, 1),
        "others_cpu_s": round(busy - client_s - fake_s, 2),  # warmup included in both
    }
    result["cpu_ms_per_request"] = {
        "client": round(1000 * client_s / sent, 3),
        "fake_upstream": round(1000 * fake_s / sent, 3),
    }
    # what the fake alone could serve with a core to itself (its CPU per request)
    result["fake_capacity_one_core_requests_per_s"] = round(sent / fake_s, 1) if fake_s else None
    result["upstream_view"] = upstream_view(fake)
    result["loadavg_1min_before_after"] = [load0, loadavg()]
    reset_fake(fake)
    return result


# --- (5) RSS and CPU of the service's session ----------------------------------------


def kind_of(cmdline: str) -> str:
    if "batchlog.cli serve" in cmdline:
        return "serve"
    if "gcs_server" in cmdline:
        return "gcs"
    exe = cmdline.split(" ", 1)[0]
    if exe.endswith("/raylet"):
        return "raylet"
    if cmdline.startswith("ray::"):
        # "ray::Coordinator", "ray::IDLE", "ray::batchlog-batch-<id>:BatchActor",
        # "ray::Coordinator.get_batch" (a method running)
        name = (cmdline[5:].split() or ["worker"])[0]
        name = name.rsplit(":", 1)[-1].split(".")[0]
        if name in ("DashboardAgent", "RuntimeEnvAgent"):
            return "ray-aux"
        return f"worker:{name}"
    if "default_worker.py" in cmdline:
        return "worker:starting"
    if "ray/" in cmdline:  # dashboard.py, monitor.py, log_monitor.py
        return "ray-aux"
    return "other"


def short_title(cmdline: str) -> str:
    """``ray::Coordinator``, ``log_monitor.py``, ``-m batchlog.cli serve``, ``raylet``..."""
    parts = cmdline.split()
    if not parts:
        return ""
    if cmdline.startswith("ray::"):
        return parts[0]
    exe = parts[0].rsplit("/", 1)[-1]
    if not exe.startswith("python"):
        return exe  # raylet, gcs_server
    for i, part in enumerate(parts):
        if part.endswith(".py"):
            return part.rsplit("/", 1)[-1]
        if part == "-m" and i + 1 < len(parts):
            return " ".join(parts[i : i + 3])
    return parts[0].rsplit("/", 1)[-1]


def _group(kind: str) -> str:
    return "workers" if kind.startswith("worker:") else kind


class SessionSampler:
    """Samples RSS and CPU time of every process of the service's session (~0.5 s)."""

    def __init__(self, svc: Service, fake_pid: int, interval: float = 0.5) -> None:
        self.svc = svc
        self.fake = psutil.Process(fake_pid)
        self.interval = interval
        self._procs: dict[int, psutil.Process] = {}
        self.kinds: dict[int, str] = {}
        self.titles: dict[int, str] = {}
        self.cpu: dict[int, float] = {}  # pid -> last seen user+system seconds
        self.samples = 0
        self.peak_total = 0
        self.peak_pss = 0  # proportional set size: shared pages counted once overall
        self.peak_total_at = 0.0
        self.peak_total_breakdown: dict[str, int] = {}
        self.peak_kind: dict[str, int] = {}
        self.peak_group: dict[str, int] = {}
        self.peak_proc: dict[int, int] = {}
        self.peak_fake = 0
        self.marks: dict[str, dict[int, float]] = {}
        self.machine: dict[str, tuple[float, float, float]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> SessionSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        with self._lock:
            by_kind: dict[str, int] = {}
            total = total_pss = 0
            for pid in self.svc.pids(""):
                if pid == os.getpid():
                    continue
                try:
                    p = self._procs.get(pid)
                    if p is None:
                        p = self._procs[pid] = psutil.Process(pid)
                    with p.oneshot():
                        rss = p.memory_info().rss
                        try:
                            pss = p.memory_full_info().pss
                        except (psutil.Error, AttributeError):
                            pss = rss
                        t = p.cpu_times()
                        cmd = " ".join(p.cmdline())
                except (psutil.Error, OSError):
                    continue
                if not cmd.strip():  # exiting (a zombie has no cmdline): keep what we knew
                    continue
                kind = kind_of(cmd)
                self.kinds[pid] = kind
                self.titles[pid] = short_title(cmd)
                self.cpu[pid] = t.user + t.system
                by_kind[kind] = by_kind.get(kind, 0) + rss
                total += rss
                total_pss += pss
                self.peak_proc[pid] = max(self.peak_proc.get(pid, 0), rss)
            by_group: dict[str, int] = {}
            for kind, rss in by_kind.items():
                self.peak_kind[kind] = max(self.peak_kind.get(kind, 0), rss)
                by_group[_group(kind)] = by_group.get(_group(kind), 0) + rss
            for group, rss in by_group.items():
                self.peak_group[group] = max(self.peak_group.get(group, 0), rss)
            self.peak_pss = max(self.peak_pss, total_pss)
            if total > self.peak_total:
                self.peak_total = total
                self.peak_total_at = time.time()
                self.peak_total_breakdown = by_kind
            with contextlib.suppress(psutil.Error):
                self.peak_fake = max(self.peak_fake, self.fake.memory_info().rss)
            self.samples += 1

    def mark(self, label: str) -> None:
        """Remember every process's CPU time now (dead ones keep their last sample)."""
        self.sample()
        with self._lock:
            self.marks[label] = dict(self.cpu)
            with contextlib.suppress(psutil.Error):
                t = self.fake.cpu_times()
                self.marks[label][-1] = t.user + t.system
            me = psutil.Process().cpu_times()
            self.machine[label] = (time.time(), machine_busy_s(), me.user + me.system)

    def machine_between(self, a: str, b: str) -> dict[str, Any]:
        """The whole machine between two marks: how busy, and how much was not ours."""
        (t0, busy0, me0), (t1, busy1, me1) = self.machine[a], self.machine[b]
        ours = sum(self.cpu_between(a, b).values()) + (me1 - me0)
        wall = t1 - t0
        busy = busy1 - busy0
        return {
            "wall_s": round(wall, 2),
            "cpus": psutil.cpu_count(),
            "busy_cpu_s": round(busy, 2),
            "busy_pct_of_all_cpus": round(100 * busy / (wall * (psutil.cpu_count() or 1)), 1),
            "ours_cpu_s": round(ours, 2),  # the service, the fake upstream, this process
            "this_process_cpu_s": round(me1 - me0, 2),  # the poller, sampler, extra creates
            "others_cpu_s": round(busy - ours, 2),  # anything else running on the machine
        }

    def cpu_between(self, a: str, b: str) -> dict[str, float]:
        start, end = self.marks[a], self.marks[b]
        out: dict[str, float] = {}
        for pid, t_end in end.items():
            kind = "fake-upstream" if pid == -1 else self.kinds.get(pid, "other")
            out[kind] = out.get(kind, 0.0) + t_end - start.get(pid, 0.0)
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    def cpu_by_process(self, a: str, b: str, top: int = 12) -> list[dict[str, Any]]:
        start, end = self.marks[a], self.marks[b]
        rows: list[dict[str, Any]] = [
            {
                "pid": pid,
                "kind": self.kinds.get(pid, "other"),
                "title": self.titles.get(pid, ""),
                "cpu_s": round(t_end - start.get(pid, 0.0), 2),
            }
            for pid, t_end in end.items()
            if pid != -1
        ]
        return sorted(rows, key=lambda r: -float(r["cpu_s"]))[:top]

    def report(self) -> dict[str, Any]:
        mib = 2**20
        per_proc: list[dict[str, Any]] = sorted(
            (
                {
                    "pid": pid,
                    "kind": self.kinds.get(pid, "other"),
                    "title": self.titles.get(pid, ""),
                    "peak_rss_mib": round(r / mib, 1),
                }
                for pid, r in self.peak_proc.items()
            ),
            key=lambda d: -float(d["peak_rss_mib"]),
        )
        return {
            "samples": self.samples,
            "interval_s": self.interval,
            "peak_total_mib": round(self.peak_total / mib, 1),
            "peak_total_pss_mib": round(self.peak_pss / mib, 1),
            "peak_total_breakdown_mib": {
                k: round(v / mib, 1) for k, v in sorted(self.peak_total_breakdown.items())
            },
            "peak_by_group_mib": {k: round(v / mib, 1) for k, v in sorted(self.peak_group.items())},
            "peak_by_kind_mib": {k: round(v / mib, 1) for k, v in sorted(self.peak_kind.items())},
            "peak_by_process": per_proc,
            "fake_upstream_peak_mib": round(self.peak_fake / mib, 1),
        }


# --- (2)-(4) the batch through batchlog ----------------------------------------------


class Poller:
    """GET /v1/batches/{id} every ~50 ms; remembers latencies and status changes."""

    def __init__(self, svc: Service, batch_id: str, period: float = 0.05) -> None:
        self.client = svc.client(max_retries=0, timeout=60.0)
        self.batch_id = batch_id
        self.period = period
        self.latencies: list[float] = []
        self.first_seen: dict[str, float] = {}  # status -> wall time of the response
        self.progress: list[tuple[float, int]] = []  # (wall time, completed + failed)
        self.final: Any = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                batch = self.client.batches.retrieve(self.batch_id)
                dt_s = time.perf_counter() - t0
                now = time.time()
                self.latencies.append(dt_s)
                self.first_seen.setdefault(batch.status, now)
                rc = batch.request_counts
                self.progress.append((now, (rc.completed + rc.failed) if rc else 0))
                if batch.status in TERMINAL:
                    self.final = batch
                    return
                self._stop.wait(max(0.0, self.period - dt_s))
        except BaseException as exc:  # surfaced by wait()
            self.error = exc

    def wait(self, timeout: float) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            raise TimeoutError(f"batch {self.batch_id} not done after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.final


def batch_events(svc: Service, batch_id: str) -> list[dict[str, Any]]:
    """Every event of the batch (the /events extension), paged by version."""
    out: list[dict[str, Any]] = []
    after = 0
    with httpx.Client(timeout=60.0, trust_env=False) as http:
        while True:
            r = http.get(
                f"{svc.url}/batches/{batch_id}/events",
                params={"after": after, "limit": 1000},
                headers={"authorization": f"Bearer {svc.api_key}"},
            )
            r.raise_for_status()
            page = r.json()
            out.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return out
            after = page["data"][-1]["version"]


def event_timeline(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Phase durations and per-request figures from the log's recorded_at timestamps."""
    first: dict[str, float] = {}
    for e in events:
        first.setdefault(e["type"], e["recorded_at"])
    outcomes = [e for e in events if e["type"] in ("RequestSucceeded", "RequestFailed")]

    def span(a: str, b: str) -> float | None:
        return _r(first[b] - first[a], 3) if a in first and b in first else None

    out: dict[str, Any] = {
        "events": len(events),
        "created_to_validated_s": span("BatchCreated", "BatchValidated"),
        "in_progress_s": span("BatchValidated", "BatchFinalizing"),
        "finalizing_s": span("BatchFinalizing", "BatchCompleted"),
        "created_to_completed_s": span("BatchCreated", "BatchCompleted"),
    }
    if outcomes:
        rec = [e["recorded_at"] for e in outcomes]
        commits = len(set(rec))  # one commit stamps all its events with one recorded_at
        upstream_ms = [e["data"]["latency_ms"] for e in outcomes]
        # from the upstream's answer to the outcome being durable in the log
        lag = [(e["recorded_at"] - e["data"]["finished_at"]) * 1000 for e in outcomes]
        starts = [e["data"]["started_at"] for e in outcomes]
        ends = [e["data"]["finished_at"] for e in outcomes]
        busy = sum(ends) - sum(starts)
        window = max(ends) - min(starts)
        out.update(
            {
                "outcomes": len(outcomes),
                "validated_to_first_outcome_s": _r(min(rec) - first["BatchValidated"], 3)
                if "BatchValidated" in first
                else None,
                "outcome_commits": commits,
                "outcomes_per_commit": _r(len(outcomes) / commits, 1),
                "upstream_call_ms": {
                    "p50": _r(pct(upstream_ms, 50)),
                    "p99": _r(pct(upstream_ms, 99)),
                    "mean": _r(statistics.fmean(upstream_ms)),
                },
                "answer_to_logged_ms": {
                    "p50": _r(pct(lag, 50)),
                    "p99": _r(pct(lag, 99)),
                    "mean": _r(statistics.fmean(lag)),
                },
                # mean requests in flight at the executor: sum of call times / wall window
                "executor_mean_inflight": _r(busy / window if window > 0 else None, 1),
                "first_call_to_last_answer_s": _r(window, 3),
            }
        )
    return out


def get_cost(svc: Service, sampler: SessionSampler, batch_id: str, n: int) -> dict[str, Any]:
    """n GETs back to back on the idle service: latency, and CPU per GET in each process."""
    client = svc.client(max_retries=0, timeout=60.0)
    latencies = []
    sampler.mark("gets0")
    for _ in range(n):
        t0 = time.perf_counter()
        client.batches.retrieve(batch_id)
        latencies.append(time.perf_counter() - t0)
    sampler.mark("gets1")
    cpu = sampler.cpu_between("gets0", "gets1")
    return {
        "gets": n,
        "latency": summary_ms(latencies),
        "cpu_ms_per_get": {k: round(1000 * v / n, 3) for k, v in cpu.items() if v > 0},
    }


def _create(client: Any, file_id: str, metadata: dict[str, str] | None = None) -> Any:
    return client.batches.create(
        input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata
    )


class Profiler:
    """py-spy record (raw collapsed stacks) of the serve process and the actors."""

    TARGETS = ("serve", "worker:Coordinator", "worker:UpstreamExecutor", "worker:BatchActor")

    def __init__(
        self, svc: Service, sampler: SessionSampler, out_dir: Path, rate: int, gil: bool
    ) -> None:
        self.svc, self.sampler, self.out_dir, self.rate = svc, sampler, out_dir, rate
        self.gil = gil
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="profiler", daemon=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.py_spy = str(Path(sys.executable).parent / "py-spy")

    def start(self) -> Profiler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        # the batch actor's worker appears (or is renamed) after the create
        while not self._stop.is_set() and len(self.procs) < len(self.TARGETS):
            self.sampler.sample()
            for pid, kind in list(self.sampler.kinds.items()):
                if kind in self.TARGETS and kind not in self.procs and psutil.pid_exists(pid):
                    path = self.out_dir / f"{kind.replace(':', '-')}-{pid}.txt"
                    self.files[kind] = str(path)
                    self.procs[kind] = subprocess.Popen(
                        [self.py_spy, "record", "--pid", str(pid), "--rate", str(self.rate),
                         "--nonblocking", "--format", "raw", "--output", str(path),
                         *(["--gil"] if self.gil else [])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
            self._stop.wait(0.1)

    def stop(self) -> dict[str, str]:
        self._stop.set()
        self._thread.join(timeout=5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return self.files


def run_batchlog(
    fake: FakeUpstream,
    n: int,
    env: dict[str, str],
    *,
    extra_batches: int,
    extra_lines: int,
    extra_every_s: float,
    profile_dir: Path | None,
    profile_rate: int,
    timeout_s: float,
    profile_gil: bool = False,
    idle_gets: int = 200,
) -> dict[str, Any]:
    reset_fake(fake)
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    svc = Service(tmp / "data", {"BATCHLOG_UPSTREAM": fake.url, **env})
    t = time.perf_counter()
    svc.start(timeout=180)
    startup_s = time.perf_counter() - t
    assert fake._proc is not None
    sampler = SessionSampler(svc, fake._proc.pid).start()
    profiler: Profiler | None = None
    try:
        client = svc.client(max_retries=0, timeout=300.0)
        content = chat_lines(n)
        small = client.files.create(
            file=("small.jsonl", io.BytesIO(chat_lines(extra_lines, "extra"))), purpose="batch"
        )
        sampler.mark("start")
        t_upload0 = time.time()
        f = client.files.create(file=("bench.jsonl", io.BytesIO(content)), purpose="batch")
        t_upload1 = time.time()
        if profile_dir is not None:
            profiler = Profiler(svc, sampler, profile_dir, profile_rate, profile_gil).start()
        t_create0 = time.time()
        batch = _create(client, f.id)
        t_create1 = time.time()
        sampler.mark("created")
        load_created = loadavg()
        poller = Poller(svc, batch.id).start()
        # extra small batches while the big one runs: POST latency samples
        post_latencies = [t_create1 - t_create0]
        extra_ids: list[str] = []
        next_at = time.time() + extra_every_s
        while poller.final is None and poller.error is None and poller._thread.is_alive():
            if len(extra_ids) < extra_batches and time.time() >= next_at:
                t0 = time.perf_counter()
                extra = _create(client, small.id, {"bench": f"extra-{len(extra_ids)}"})
                post_latencies.append(time.perf_counter() - t0)
                extra_ids.append(extra.id)
                next_at = time.time() + extra_every_s
            time.sleep(0.05)
        final = poller.wait(timeout=timeout_s)
        t_done = poller.first_seen.get(final.status, time.time())
        sampler.mark("completed")
        load_completed = loadavg()
        if final.status != "completed":
            raise RuntimeError(f"batch ended {final.status}: {final}")

        t_dl0 = time.time()
        output = client.files.content(final.output_file_id).content
        t_dl1 = time.time()
        lines = [orjson.loads(x) for x in output.splitlines() if x.strip()]
        ids = {x["custom_id"] for x in lines}
        ok = sum(1 for x in lines if x["response"] and x["response"]["status_code"] == 200)
        if len(lines) != n or ids != {f"req-{i}" for i in range(n)} or ok != n:
            raise RuntimeError(f"output has {len(lines)} lines, {len(ids)} ids, {ok} ok; want {n}")

        upstream = upstream_view(fake, batch.id + ":")
        events = batch_events(svc, batch.id)
        timeline = event_timeline(events)
        if profiler is not None:
            profile_files = profiler.stop()
            profiler = None
        else:
            profile_files = {}
        for extra_id in extra_ids:  # they must all finish too (not timed)
            deadline = time.time() + 120
            while client.batches.retrieve(extra_id).status not in TERMINAL:
                if time.time() > deadline:
                    raise TimeoutError(f"extra batch {extra_id} did not finish")
                time.sleep(0.2)
        idle_get = get_cost(svc, sampler, batch.id, idle_gets)
        sampler.stop()
    except BaseException:
        print(f"batchlog run failed; its data dir and server log are in {tmp}", file=sys.stderr)
        raise
    else:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if profiler is not None:
            profiler.stop()
        svc.stop()  # a no-op after a clean stop

    e2e = t_dl1 - t_upload0
    cpu_run = sampler.cpu_between("created", "completed")
    in_progress = timeline.get("in_progress_s")
    seen_in_progress = poller.first_seen.get("in_progress")
    # progress samples: requests/s between 10% and 90% done, the steady state
    steady = None
    marks = [(t, c) for t, c in poller.progress if 0.1 * n <= c <= 0.9 * n]
    if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
        steady = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
    return {
        "requests": n,
        "env": env,
        "startup_s": _r(startup_s, 2),
        "loadavg_1min_created_completed": [load_created, load_completed],
        "batch_id": batch.id,
        "upload_s": _r(t_upload1 - t_upload0, 3),
        "upload_bytes": len(content),
        "create_to_completed_seen_s": _r(t_done - t_create1, 3),
        "download_s": _r(t_dl1 - t_dl0, 3),
        "end_to_end_s": _r(e2e, 3),
        "end_to_end_requests_per_s": _r(n / e2e, 1),
        "in_progress_s": in_progress,
        "in_progress_requests_per_s": _r(n / in_progress, 1) if in_progress else None,
        "steady_requests_per_s_10_to_90pct": _r(steady, 1),
        "create_to_in_progress": {
            "seen_by_poller_s": _r(seen_in_progress - t_create1, 3) if seen_in_progress else None,
            "from_events_s": timeline.get("created_to_validated_s"),
            # (no process start to time: batch actors are kept between batches and
            # named batchlog-runner-*, actors/runners.py)
            "note": "poller resolution ~50 ms plus one GET",
        },
        "latency": {
            "get_batch": summary_ms(poller.latencies),
            "post_batch": summary_ms(post_latencies),
            "extra_batches": len(extra_ids),
            "extra_batch_lines": extra_lines,
        },
        "idle_get": idle_get,
        "timeline": timeline,
        "upstream_view": upstream,
        "cpu_s_while_running": cpu_run,
        "cpu_ms_per_request_while_running": {k: round(1000 * v / n, 3) for k, v in cpu_run.items()},
        "cpu_s_total_while_running": round(sum(cpu_run.values()), 2),
        "machine_while_running": sampler.machine_between("created", "completed"),
        # share of one CPU each kind used while the batch ran
        "cpu_pct_of_one_cpu_while_running": {
            k: round(100 * v / max(t_done - t_create1, 1e-9), 1) for k, v in cpu_run.items()
        },
        "cpu_s_by_process_while_running": sampler.cpu_by_process("created", "completed"),
        "cpu_s_upload_to_completed": sampler.cpu_between("start", "completed"),
        "memory": sampler.report(),
        "profile_files": profile_files,
        "output_lines": len(lines),
    }


# --- the command -----------------------------------------------------------------------


def settings_env(
    chunk_size: int, chunks_in_flight: int, upstream_max: int, extra: list[str]
) -> dict[str, str]:
    env = {
        "BATCHLOG_CHUNK_SIZE": str(chunk_size),
        "BATCHLOG_CHUNKS_IN_FLIGHT": str(chunks_in_flight),
        "BATCHLOG_UPSTREAM_MAX_CONCURRENCY": str(upstream_max),
    }
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "date_utc": subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }


def sweep(args: argparse.Namespace, fake: FakeUpstream) -> dict[str, Any]:
    rows = []
    for cs in args.sweep_chunk_sizes:
        for cif in args.sweep_chunks_in_flight:
            umc = (
                max(args.upstream_max_concurrency, cs * cif)
                if args.sweep_match_upstream
                else args.upstream_max_concurrency
            )
            env = settings_env(cs, cif, umc, args.set)
            print(
                f"  sweep: chunk_size={cs} chunks_in_flight={cif} upstream_max={umc} ...",
                flush=True,
            )
            r = run_batchlog(
                fake, args.requests, env, extra_batches=0, extra_lines=args.extra_lines,
                extra_every_s=args.extra_every_s, profile_dir=None, profile_rate=args.profile_rate,
                timeout_s=args.timeout_s,
            )  # fmt: skip
            row = {
                "chunk_size": cs,
                "chunks_in_flight": cif,
                "upstream_max_concurrency": umc,
                "in_flight_toward_upstream": min(cs * cif, umc),
                "end_to_end_requests_per_s": r["end_to_end_requests_per_s"],
                "in_progress_requests_per_s": r["in_progress_requests_per_s"],
                "executor_mean_inflight": r["timeline"].get("executor_mean_inflight"),
                "outcomes_per_commit": r["timeline"].get("outcomes_per_commit"),
                "peak_rss_mib": r["memory"]["peak_total_mib"],
                # noise-proof on a shared machine: CPU the service + fake spent per request
                "cpu_ms_per_request": round(
                    1000 * r["cpu_s_total_while_running"] / args.requests, 2
                ),
                "loadavg_1min": loadavg(),
                # CPU seconds used by processes that are not ours while the batch ran
                "others_cpu_s": r["machine_while_running"]["others_cpu_s"],
            }
            print(f"    -> {row}", flush=True)
            rows.append(row)
    best = max(rows, key=lambda r: r["in_progress_requests_per_s"] or 0)
    return {"requests": args.requests, "rows": rows, "best": best}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="the direct client's in-flight requests (default: batchlog's)",
    )
    p.add_argument("--chunk-size", type=int, default=DEFAULTS["chunk_size"])
    p.add_argument("--chunks-in-flight", type=int, default=DEFAULTS["chunks_in_flight"])
    p.add_argument(
        "--upstream-max-concurrency", type=int, default=DEFAULTS["upstream_max_concurrency"]
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="BATCHLOG_X=V",
        help="any other service setting, e.g. BATCHLOG_FSYNC=false",
    )
    p.add_argument(
        "--extra-batches", type=int, default=5, help="small batches created during the run"
    )
    p.add_argument("--extra-lines", type=int, default=10)
    p.add_argument(
        "--upstream-latency-ms", type=float, default=0.0, help="the fake upstream's latency"
    )
    p.add_argument("--extra-every-s", type=float, default=3.0)
    p.add_argument("--timeout-s", type=float, default=1800.0)
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy record the serve process and the actors into DIR",
    )
    p.add_argument("--profile-rate", type=int, default=50)
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="py-spy --gil: only samples holding the GIL (Python CPU, no idle waits)",
    )
    p.add_argument("--sweep", action="store_true", help="try several chunk settings instead")
    p.add_argument("--sweep-chunk-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--sweep-chunks-in-flight", type=int, nargs="+", default=[4, 8])
    p.add_argument(
        "--sweep-match-upstream",
        action="store_true",
        help="raise upstream_max_concurrency to chunk_size * chunks_in_flight",
    )
    p.add_argument("--skip-direct", action="store_true", help="no direct baseline (sweeps)")
    p.add_argument("--json", type=Path, default=None, help="default bench/out/service.json")
    args = p.parse_args(argv)

    env = settings_env(
        args.chunk_size, args.chunks_in_flight, args.upstream_max_concurrency, args.set
    )
    in_flight = min(args.chunk_size * args.chunks_in_flight, args.upstream_max_concurrency)
    concurrency = args.concurrency or in_flight
    result: dict[str, Any] = {
        "machine_before": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(f"machine: {result['machine_before']['uptime']}", flush=True)

    if args.upstream_latency_ms:
        FAKE_SWITCHES["latency_ms"] = args.upstream_latency_ms
    with FakeUpstream(**FAKE_SWITCHES) as fake:
        if args.sweep:
            result["sweep"] = sweep(args, fake)
            default_json = OUT_DIR / "service-sweep.json"
        else:
            result["settings"] = {
                "chunk_size": args.chunk_size,
                "chunks_in_flight": args.chunks_in_flight,
                "upstream_max_concurrency": args.upstream_max_concurrency,
                "in_flight_toward_upstream": in_flight,
                "direct_concurrency": concurrency,
                "env": env,
            }
            direct = []
            if not args.skip_direct:
                print(
                    f"(1) direct: {args.requests} requests, concurrency {concurrency} ...",
                    flush=True,
                )
                direct.append(run_direct(fake, args.requests, concurrency))
                print(f"    {direct[-1]['requests_per_s']} req/s", flush=True)
            print(f"(2) batchlog: {args.requests} requests, {env} ...", flush=True)
            svc = run_batchlog(
                fake, args.requests, env, extra_batches=args.extra_batches,
                extra_lines=args.extra_lines, extra_every_s=args.extra_every_s,
                profile_dir=args.profile, profile_rate=args.profile_rate, timeout_s=args.timeout_s,
                profile_gil=args.profile_gil,
            )  # fmt: skip
            print(f"    end to end {svc['end_to_end_requests_per_s']} req/s, "
                  f"in_progress {svc['in_progress_requests_per_s']} req/s", flush=True)  # fmt: skip
            if not args.skip_direct:
                print("(1') direct again ...", flush=True)
                direct.append(run_direct(fake, args.requests, concurrency))
                print(f"    {direct[-1]['requests_per_s']} req/s", flush=True)
            result["direct"] = direct
            result["batchlog"] = svc
            if direct:
                base = statistics.fmean(d["requests_per_s"] for d in direct)
                result["ratio"] = {
                    "direct_requests_per_s_mean": _r(base, 1),
                    "end_to_end": _r(svc["end_to_end_requests_per_s"] / base, 3),
                    "in_progress": _r((svc["in_progress_requests_per_s"] or 0) / base, 3),
                    # on a shared machine the two direct runs can differ a lot: both ratios
                    "end_to_end_vs_each_direct": [
                        _r(svc["end_to_end_requests_per_s"] / d["requests_per_s"], 3)
                        for d in direct
                    ],
                    "target": 0.5,
                }
            default_json = OUT_DIR / "service.json"
    result["machine_after"] = machine()
    out = args.json or default_json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "args"}, indent=2))
    print(f"written to {out}")
    print(f"finished {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
