"""PostgreSQL event log benchmark. Run by hand (starts its own server, fsync on):

    nice .venv/bin/python bench/bench_eventlog_pg.py [--seconds 3] [--threads 1,8,32]

For each concurrency N, interleaved rounds of:
  * group commit: N threads append single ~200-byte events (each to its own stream) through
    one PostgresEventStore (gap-free global order, expected-version check, NOTIFY);
  * plain INSERT loop, the baseline: N threads, a connection each, one autocommit
    ``INSERT`` per event into a table with a ``bigserial`` position and a
    unique (stream_id, version) (no version check, no gap-free order);
  * the file store (EventStore, fsync on) with the same N threads, for docs/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batches.testing.pgserver import PgServer
from bench.bench_eventlog import event_data, one_event
from eventlog import EventStore, NewEvent
from eventlog.postgres import PostgresEventStore

PLAIN_DDL = """
CREATE TABLE IF NOT EXISTS plain (
    position bigserial PRIMARY KEY, stream_id text NOT NULL, version bigint NOT NULL,
    type text NOT NULL, data json NOT NULL, metadata json NOT NULL,
    recorded_at double precision NOT NULL, event_id text NOT NULL,
    UNIQUE (stream_id, version))
"""


def run_threads(n: int, seconds: float, body) -> int:  # type: ignore[no-untyped-def]
    """Start n threads running body(k, stop) -> count; the total count after ``seconds``."""
    stop = threading.Event()
    counts = [0] * n
    go = threading.Barrier(n + 1)

    def worker(k: int) -> None:
        go.wait()
        counts[k] = body(k, stop)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    go.wait()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts)


def bench_group(store: PostgresEventStore | EventStore, n: int, seconds: float, tag: str) -> int:
    def body(k: int, stop: threading.Event) -> int:
        stream, v = f"{tag}-{k}", 0
        while not stop.is_set():
            v = store.append(stream, [one_event(v)], v)
        return v

    return run_threads(n, seconds, body)


def bench_plain(url: str, n: int, seconds: float, tag: str) -> int:
    conns = [psycopg.connect(url, autocommit=True) for _ in range(n)]
    q = (
        "INSERT INTO plain (stream_id, version, type, data, metadata, recorded_at, event_id) "
        "VALUES (%s, %s, %s, %s::json, '{}'::json, %s, %s)"
    )

    def body(k: int, stop: threading.Event) -> int:
        stream, v, c = f"{tag}-{k}", 0, conns[k]
        while not stop.is_set():
            v += 1
            data = orjson.dumps(event_data(v)).decode()
            c.execute(q, [stream, v, "RequestSucceeded", data, time.time(), os.urandom(16).hex()])
        return v

    try:
        return run_threads(n, seconds, body)
    finally:
        for c in conns:
            c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    levels = [int(x) for x in args.threads.split(",")]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if "model name" in ln), "?")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, nproc={os.cpu_count()},")
    print(f"# Python {platform.python_version()}, load {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    with PgServer(fsync=True) as server:
        with psycopg.connect(server.url, autocommit=True) as c:
            version = c.execute("SHOW server_version").fetchone()
            c.execute(PLAIN_DDL)
        print(f"# PostgreSQL {version[0] if version else '?'}, fsync on, synchronous_commit on")
        pg = PostgresEventStore.open(server.url, schema="bench")
        files = EventStore.open(tmp / "log", fsync=True)
        pg.append("warm", [NewEvent("T", {})], 0)
        results: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            for n in levels:
                for name, fn in (
                    ("group", lambda n, t: bench_group(pg, n, args.seconds, t)),
                    ("plain", lambda n, t: bench_plain(server.url, n, args.seconds, t)),
                    ("file", lambda n, t: bench_group(files, n, args.seconds, t)),
                ):
                    count = fn(n, f"{name}{r}n{n}")
                    results.setdefault((name, n), []).append(count / args.seconds)
        pg.close()
        files.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"# load after {os.getloadavg()}")
    print("| appenders | group commit appends/s | plain INSERT loop/s | ratio | file store/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n in levels:
        g = sum(results[("group", n)]) / args.rounds
        p = sum(results[("plain", n)]) / args.rounds
        f = sum(results[("file", n)]) / args.rounds
        print(f"| {n} | {g:,.0f} | {p:,.0f} | {g / p:.2f} | {f:,.0f} |")


if __name__ == "__main__":
    main()
