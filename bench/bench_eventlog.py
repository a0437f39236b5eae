"""Event log benchmark. Run by hand:

    .venv/bin/python bench/bench_eventlog.py [--events 1000000] [--seconds 3] [--dir DIR]

Prints, in one run:
  * durable append throughput with 1, 8 and 64 appender threads (single ~200-byte events,
    each thread to its own stream) beside the raw limit measured in the same run: a bare
    loop of write + fdatasync with the same record size and group size = appenders;
  * replay throughput (read_all over N events) beside bare orjson decoding of the same
    payload bytes; the N-event log is built with fsync=False for speed;
  * open/recovery time of that log after kill -9 of a writer;
  * DuckDB `SELECT type, count(*) FROM events GROUP BY type` warm, without and with
    compaction;
  * the serialization comparison (orjson, msgspec, pydantic, stdlib json).
"""

from __future__ import annotations

import argparse
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

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventlog import EventStore, NewEvent
from eventlog import frames as fr
from eventlog.segments import list_segments

TYPES = ["RequestSucceeded", "RequestFailed", "BatchCreated", "BatchValidated", "FileUploaded"]


def event_data(i: int) -> dict[str, Any]:
    # about 200 bytes of payload per event, like a request outcome
    return {
        "line": i,
        "custom_id": f"request-{i:08d}",
        "status_code": 200,
        "latency_ms": 123.4,
        "usage": {"prompt_tokens": 31, "completion_tokens": 57, "total_tokens": 88},
        "request_id": f"req_{i:016x}",
        "model": "smollm2-135m",
    }


def one_event(i: int) -> NewEvent:
    return NewEvent(TYPES[i % len(TYPES)], event_data(i))


def fmt(x: float) -> str:
    return f"{x:,.0f}"


# --------------------------------------------------------------------------- appends


def bench_append(root: Path, threads: int, seconds: float) -> float:
    shutil.rmtree(root, ignore_errors=True)
    store = EventStore.open(root, fsync=True)
    counts = [0] * threads
    stop = threading.Event()
    start_barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        v = 0
        ev = one_event(k)
        start_barrier.wait()
        while not stop.is_set():
            v = store.append(f"stream-{k}", [ev], v)
            counts[k] += 1

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    start_barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    store.close()
    return sum(counts) / elapsed


def frame_size() -> int:
    payload = fr.encode_payload([one_event(1)])
    return len(fr.encode_frame(b"stream-0", 1, 1, time.time(), 1, payload))


def bench_raw(root: Path, record: int, group: int, seconds: float) -> float:
    """A bare loop of write + fdatasync: ``group`` records of ``record`` bytes per fdatasync."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    fd = os.open(root / "raw.bin", os.O_RDWR | os.O_CREAT, 0o644)
    block = os.urandom(record) * group
    n = 0
    off = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        os.pwrite(fd, block, off)
        os.fdatasync(fd)
        off += len(block)
        n += group
    elapsed = time.perf_counter() - t0
    os.close(fd)
    return n / elapsed


# --------------------------------------------------------------------------- the big log


def build_log(root: Path, n: int) -> float:
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    with EventStore.open(root, fsync=False) as s:
        versions = [0] * 1000
        for i in range(n):
            k = i % 1000
            versions[k] = s.append(f"batch-{k:04d}", [one_event(i)], versions[k])
    return time.perf_counter() - t0


def payloads_of(root: Path) -> list[bytes]:
    out = []
    for _, p in list_segments(root / "segments"):
        data = p.read_bytes()
        stop = fr.ScanStop(0)
        out.extend(f.payload for f in fr.iter_frames(data, 0, len(data), 0, stop))
    return out


def bench_replay(root: Path, n: int) -> tuple[float, float, float]:
    payloads = payloads_of(root)

    def bare() -> None:  # bare orjson decoding of the same payload bytes, in the same pages
        for i in range(0, len(payloads), 100_000):
            page = [orjson.loads(p) for p in payloads[i : i + 100_000]]
            del page

    best_bare = min(_time(bare) for _ in range(2))
    store = EventStore.open(root, fsync=False)
    best_replay = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        after = 0
        got = 0
        while True:
            page = store.read_all(after=after, limit=100_000)
            if not page:
                break
            got += len(page)
            after = page[-1].position
            del page
        best_replay = min(best_replay, time.perf_counter() - t0)
        assert got == n, (got, n)
    # stream replay: every stream read whole (1000 streams)
    t0 = time.perf_counter()
    total = sum(len(store.read(sid)) for sid in store.streams())
    stream_s = time.perf_counter() - t0
    assert total == n
    store.close()
    return n / best_replay, n / best_bare, n / stream_s


def _time(f: Any) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


CHILD_WRITER = """
import sys
from eventlog import EventStore, NewEvent
s = EventStore.open(sys.argv[1])
v = s.version("killed-writer")
print("ready", flush=True)
while True:
    v = s.append("killed-writer", [NewEvent("T", {"pad": "x" * 180})] * 3, v)
"""


def bench_recovery(root: Path) -> tuple[float, float, int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_WRITER, str(root)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout is not None
    child.stdout.readline()
    time.sleep(0.5)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # a torn tail as a kill during a write would leave it
    last = list_segments(root / "segments")[-1][1]
    with open(last, "ab") as f:
        f.write(fr.MAGIC + b"\x00" * 50)
    t0 = time.perf_counter()
    s = EventStore.open(root)
    opened = time.perf_counter() - t0
    head = s.head()
    s.close()
    t0 = time.perf_counter()
    EventStore.open(root).close()
    clean = time.perf_counter() - t0
    return opened, clean, head


def bench_duckdb(root: Path) -> dict[str, float]:
    from eventlog.compaction import compact
    from eventlog.query import EventQuery

    q_sql = "SELECT type, count(*) FROM events GROUP BY type"
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    q = EventQuery(root)
    out["load_uncompacted_s"] = time.perf_counter() - t0
    q.sql(q_sql)
    out["query_uncompacted_s"] = statistics.median(_time(lambda: q.sql(q_sql)) for _ in range(5))
    q.close()
    t0 = time.perf_counter()
    written = compact(root)
    out["compact_s"] = time.perf_counter() - t0
    out["parquet_files"] = len(written)
    t0 = time.perf_counter()
    q = EventQuery(root)
    out["load_compacted_s"] = time.perf_counter() - t0
    q.sql(q_sql)
    out["query_compacted_s"] = statistics.median(_time(lambda: q.sql(q_sql)) for _ in range(5))
    out["rows"] = q.sql("SELECT count(*) FROM events")[0][0]
    q.close()
    return out


# --------------------------------------------------------------------------- serialization


def bench_serialization(n: int = 50_000) -> list[tuple[str, float, float, int]]:
    import uuid

    rows = [[uuid.uuid4().hex, TYPES[i % 5], event_data(i), {}] for i in range(n)]
    results = []

    def run(name: str, enc: Any, dec: Any) -> None:
        # CPU time, best of five: the machine is shared, wall time is noisy
        te = td = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            blobs = [enc(r) for r in rows]
            te = min(te, time.process_time() - t0)
            t0 = time.process_time()
            for b in blobs:
                dec(b)
            td = min(td, time.process_time() - t0)
        results.append((name, n / te, n / td, sum(map(len, blobs)) // n))

    run("orjson", lambda r: orjson.dumps([r]), orjson.loads)
    try:
        import msgspec

        enc_j, dec_j = msgspec.json.Encoder(), msgspec.json.Decoder()
        run("msgspec.json", lambda r: enc_j.encode([r]), dec_j.decode)
        enc_m, dec_m = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
        run("msgspec.msgpack", lambda r: enc_m.encode([r]), dec_m.decode)
    except ImportError:
        results.append(("msgspec (not installed)", 0.0, 0.0, 0))
    try:
        from pydantic import TypeAdapter

        ta = TypeAdapter(list[tuple[str, str, dict[str, Any], dict[str, Any]]])
        run("pydantic TypeAdapter", lambda r: ta.dump_json([tuple(r)]), ta.validate_json)
    except ImportError:
        results.append(("pydantic (not installed)", 0.0, 0.0, 0))
    run("json (stdlib)", lambda r: json.dumps([r]).encode(), json.loads)
    return results


# --------------------------------------------------------------------------- main


def section_append(base: Path, seconds: float) -> None:
    rec = frame_size()
    print(f"\n## durable append (fsync=True), one ~200-byte event per append, frame {rec} B")
    print("| appenders | eventlog events/s | raw write+fdatasync records/s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for threads in (1, 8, 64):
        # interleaved rounds, so both see the same disk and the same neighbours
        raws, gots = [], []
        for _ in range(3):
            raws.append(bench_raw(base / "raw", rec, threads, seconds / 3))
            gots.append(bench_append(base / f"append-{threads}", threads, seconds / 3))
        raw, got = statistics.mean(raws), statistics.mean(gots)
        print(f"| {threads} | {fmt(got)} | {fmt(raw)} | {got / raw:.2f} |", flush=True)


def section_replay(big: Path, n: int) -> None:
    built = build_log(big, n)
    size = sum(p.stat().st_size for _, p in list_segments(big / "segments"))
    print(
        f"\n## replay of {n:,} events ({size / 2**20:.0f} MiB, 1000 streams, one event per "
        f"frame; built with fsync=False in {built:.1f} s)"
    )
    replay, bare, streams = bench_replay(big, n)
    print("| read | events/s | bare orjson.loads of the same payloads | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| read_all (pages of 100k) | {fmt(replay)} | {fmt(bare)} | {replay / bare:.2f} |")
    print(f"| read(stream) x 1000 | {fmt(streams)} | {fmt(bare)} | {streams / bare:.2f} |")
    opened, clean, head = bench_recovery(big)
    print(f"\n## open of the {head:,}-event log")
    print(f"- after kill -9 of a writer (torn tail repaired, every CRC checked): {opened:.2f} s")
    print(f"- clean open: {clean:.2f} s", flush=True)


def section_duckdb(big: Path) -> None:
    d = bench_duckdb(big)
    print(f"\n## DuckDB `SELECT type, count(*) FROM events GROUP BY type` ({d['rows']:,} rows)")
    print("| | load (EventQuery()) | query, warm (median of 5) |")
    print("| --- | ---: | ---: |")
    print(
        f"| no compaction (all frames parsed in Python) | {d['load_uncompacted_s']:.2f} s | "
        f"{d['query_uncompacted_s'] * 1000:.0f} ms |"
    )
    print(
        f"| compacted ({d['parquet_files']:.0f} Parquet files, compact() took "
        f"{d['compact_s']:.1f} s; the active segment still parsed) | "
        f"{d['load_compacted_s']:.2f} s | {d['query_compacted_s'] * 1000:.0f} ms |",
        flush=True,
    )


def section_serialization() -> None:
    print("\n## serialization of one event row (encode / decode per CPU second, best of 5)")
    print("| codec | encode/s | decode/s | bytes |")
    print("| --- | ---: | ---: | ---: |")
    for name, e, dcd, b in bench_serialization():
        print(f"| {name} | {fmt(e)} | {fmt(dcd)} | {b} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="size of the replay log")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each append run")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (same disk as data)")
    ap.add_argument(
        "--sections",
        default="append,replay,duckdb,serialization",
        help="comma-separated subset of append,replay,duckdb,serialization "
        "(replay includes the recovery timing; duckdb needs replay's log)",
    )
    args = ap.parse_args()
    out_dir = Path(__file__).resolve().parent / "out"  # git-ignored, on the data disk
    out_dir.mkdir(exist_ok=True)
    base = args.dir or Path(tempfile.mkdtemp(prefix="eventlog-", dir=out_dir))
    base.mkdir(parents=True, exist_ok=True)
    print(f"# eventlog benchmark  {time.strftime('%Y-%m-%d %H:%M')}  ")
    print(
        f"# {platform.node()} nproc={os.cpu_count()} Python {platform.python_version()} "
        f"scratch={base} loadavg={os.getloadavg()[0]:.1f}"
    )
    try:
        sections = set(args.sections.split(","))
        if "append" in sections:
            section_append(base, args.seconds)
        big = base / "big"
        if "replay" in sections:
            section_replay(big, args.events)
        if "duckdb" in sections:
            if not big.exists():
                build_log(big, args.events)
            section_duckdb(big)
        if "serialization" in sections:
            section_serialization()
        print(f"\n(load average at the end: {os.getloadavg()[0]:.1f})")
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
