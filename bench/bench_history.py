"""History benchmark: what opening things costs at 0, 100k and 1M events of history.

    nice .venv/bin/python bench/bench_history.py --dir /tmp/bench-hist [--sizes 0,100000,1000000]

For each size, a data dir ``DIR/n<size>`` holds a history from the analytics generator
(``bench_analytics.generate``: size/100 batches, ``size`` request outcomes, fsync off),
then one more batch of 50,000 requests, 49,990 done, snapshotted every 1,000 events as the
batch actor does, and the log compacted (the coordinator compacts once a minute). The
history is generated once and reused (``--reuse`` is implied when the dir exists).

Measured, each in a fresh process (median of ``--repeat``), side by side, timed after the
imports (a fixed cost of a new process, whatever the history):

* log open: ``EventStore.open`` (and a first ``version`` lookup, which loads the directory);
* batch recovery: open + the 50,000-request batch's snapshot + tail folded, as
  ``BatchActor._load`` does;
* analytics: a new ``Analytics`` connection and its first query (the persisted tables are
  built once, first, and that build is reported apart);
* coordinator start: the read model restored from its checkpoint and caught up (after a
  run that evicted old terminal batches and wrote a checkpoint), then a GET of the oldest
  batch (loaded from its stream when it is out of memory); before: a full replay;
* the RSS of each process after the work (VmRSS);
* with ``--baseline SRC``, each probe once more on the code before (``SRC`` made with
  ``git archive COMMIT eventlog batches | tar -x -C SRC``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batches.domain import decider as d  # noqa: E402
from batches.domain import events as ev  # noqa: E402
from bench.bench_analytics import _outcome, generate  # noqa: E402
from eventlog import EventStore, NewEvent  # noqa: E402
from eventlog.compaction import compact  # noqa: E402

BIG = "batch_big50k"
BIG_LINES = 50_000
BIG_DONE = 49_990
SNAPSHOT_EVERY = 1_000


def big_batch(log_dir: Path) -> None:
    """The batch a recovering actor loads: 50,000 lines, snapshotted as the actor does."""
    rng = random.Random(5)
    store = EventStore.open(log_dir, fsync=False)
    stream = ev.batch_stream(BIG)
    state: d.BatchState | None = None
    snap = 0

    def do(command: d.Command) -> None:
        nonlocal state, snap
        events = d.decide(state, command)
        store.append(stream, [NewEvent(t, e) for t, e in events], state.version if state else 0)
        state = d.fold(events, state)
        if state.version - snap >= SNAPSHOT_EVERY:
            store.save_snapshot(stream, state.version, d.state_to_dict(state))
            snap = state.version

    t0 = 1_800_000_000
    do(
        d.CreateBatch(
            batch_id=BIG,
            tenant="tenant-big",
            input_file_id="file-big",
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=None,
            output_expires_after=None,
            idempotency_key=None,
            at=t0,
        )
    )
    do(d.RecordValidation(at=t0 + 1, model="m-chat", total=BIG_LINES))
    for first in range(1, BIG_DONE + 1, 16):
        chunk = tuple(
            _outcome(rng, "m-chat", "/v1/chat/completions", 40.0, line, t0 + 2 + line * 0.01)
            for line in range(first, min(first + 16, BIG_DONE + 1))
        )
        do(d.RecordOutcomes(chunk))
    store.close()


def prepare(data_dir: Path, size: int) -> dict[str, Any]:
    log_dir = data_dir / "log"
    info: dict[str, Any] = {}
    if (data_dir / "READY").exists():
        return json.loads((data_dir / "READY").read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if size:
        info.update(generate(log_dir, max(size // 100, 1), size))
    big_batch(log_dir)
    compact(log_dir)
    with EventStore.open(log_dir, fsync=False) as s:
        info["events"] = s.head()
    info["segments"] = len(list((log_dir / "segments").glob("*.seg")))
    info["log_bytes"] = sum(p.stat().st_size for p in (log_dir / "segments").glob("*.seg"))
    info["prepare_s"] = time.perf_counter() - t
    (data_dir / "READY").write_text(json.dumps(info))
    return info


_RSS = """
def rss_mib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
"""

PROBES = {
    "log open": _RSS
    + """
import time, json, sys
from eventlog import EventStore
t = time.perf_counter()
s = EventStore.open(sys.argv[1] + '/log')
s.version('files')
dt = time.perf_counter() - t
print(json.dumps({'s': dt, 'rss': rss_mib()}))
""",
    "batch recovery (50k requests)": _RSS
    + f"""
import time, json, sys
from eventlog import EventStore
from batches.domain import decider
from batches.domain.events import batch_stream
t = time.perf_counter()
s = EventStore.open(sys.argv[1] + '/log')
stream = batch_stream({BIG!r})
snap = s.load_snapshot(stream)
state = decider.state_from_dict(snap.state) if snap else None
start = snap.version + 1 if snap else 1
while True:
    events = s.read(stream, from_version=start, limit=5000)
    if not events:
        break
    state = decider.fold(((e.type, e.data) for e in events), state)
    start = events[-1].version + 1
assert state.version > {BIG_DONE}, state.version
dt = time.perf_counter() - t
print(json.dumps({{'s': dt, 'rss': rss_mib()}}))
""",
    "analytics connect + first query": _RSS
    + """
import time, json, sys
from batches.analytics import Analytics
t = time.perf_counter()
a = Analytics(sys.argv[1])
rows = a.sql('SELECT status, count(*) FROM batches GROUP BY 1 ORDER BY 1')
dt = time.perf_counter() - t
print(json.dumps({'s': dt, 'rss': rss_mib()}))
""",
    "coordinator start (read model)": _RSS
    + """
import time, json, sys
from actors.coordinator import Coordinator
t = time.perf_counter()
c = Coordinator({'data_dir': sys.argv[1], 'fsync': False})
dt = time.perf_counter() - t
m = c.core.model if hasattr(c, 'core') else c.model  # (the code before had no core)
bid = next(m.catalog.all_batch_ids()) if hasattr(m, 'catalog') else m._batch_keys[0][2]  # the oldest
b = m.batches
tenant = b.tenant(bid) if hasattr(b, 'tenant') else b[bid].tenant
t = time.perf_counter()
assert m.batch(tenant, bid) is not None
get = time.perf_counter() - t
print(json.dumps({'s': dt, 'rss': rss_mib(), 'get_s': get}))
""",
}


def checkpoint_coordinator(data_dir: Path) -> None:
    """What a coordinator that ran a while leaves: old terminal batches out of memory and
    a read-model checkpoint (it writes one a minute)."""
    import asyncio

    from actors.coordinator import Coordinator

    c = Coordinator({"data_dir": str(data_dir), "fsync": False})
    c.core.model.batches.evict(time.time(), c.settings.hot_batch_window_s)
    asyncio.run(c.checkpoints.save(c.core.model))
    c.core.log.close()


def probe(code: str, data_dir: Path, src: Path = ROOT) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        cwd=src,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sizes", default="0,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a source tree of the code before (git archive COMMIT eventlog batches): each "
        "probe is also run once with it",
    )
    parser.add_argument("--only", default="", help="run only the probes whose name has this")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    infos = {}
    for size in sizes:
        infos[size] = prepare(args.dir / f"n{size}", size)
        print(f"history n{size}: {infos[size]}", flush=True)
    results: dict[str, dict[int, dict[str, float]]] = {}
    probes = {n: c for n, c in PROBES.items() if args.only in n}
    for size in sizes:
        if "coordinator start (read model)" in probes:
            checkpoint_coordinator(args.dir / f"n{size}")
    for size in sizes:
        if "analytics connect + first query" not in probes:
            break
        data_dir = args.dir / f"n{size}"
        shutil.rmtree(data_dir / "analytics", ignore_errors=True)
        build = probe(PROBES["analytics connect + first query"], data_dir)  # builds them
        results.setdefault("analytics first connect (builds the tables)", {})[size] = build
    for name, code in probes.items():
        for size in sizes:
            data_dir = args.dir / f"n{size}"
            runs = [probe(code, data_dir) for _ in range(args.repeat)]
            results.setdefault(name, {})[size] = {
                "s": statistics.median(r["s"] for r in runs),
                "rss": statistics.median(r["rss"] for r in runs),
            }
            if "get_s" in runs[0]:
                results.setdefault("GET of the oldest batch (read model)", {})[size] = {
                    "s": statistics.median(r["get_s"] for r in runs),
                    "rss": results[name][size]["rss"],
                }
            print(name, size, results[name][size], flush=True)
            if args.baseline is not None:
                before = probe(code, data_dir, args.baseline)
                results.setdefault(f"{name}, before", {})[size] = before
                if "get_s" in before:
                    results.setdefault("GET of the oldest batch, before", {})[size] = {
                        "s": before["get_s"],
                        "rss": before["rss"],
                    }
                print(name, "before", size, before, flush=True)
    for size in sizes:
        data_dir = args.dir / f"n{size}"

        def du(sub: str, dd: Path = data_dir) -> int:
            return sum(p.stat().st_size for p in (dd / sub).rglob("*") if p.is_file())

        disk = {k: du(k) for k in ("log/segments", "log/index", "log/parquet", "analytics")}
        print(f"disk n{size}: {disk} ({infos[size]['events']:,} events)")
    head = " | ".join(f"{infos[s]['events']:,} events" for s in sizes)
    print(f"\n| measure | {head} |")
    print("| --- |" + " ---: |" * len(sizes))
    for name, by_size in results.items():
        cells = " | ".join(
            f"{by_size[s]['s'] * 1000:,.1f} ms, {by_size[s]['rss']:.0f} MiB" for s in sizes
        )
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
