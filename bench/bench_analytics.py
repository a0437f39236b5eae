"""Analytics benchmark. Run by hand:

    .venv/bin/python bench/bench_analytics.py [--batches 10000] [--outcomes 1000000]
        [--dir DIR] [--reuse] [--repeat 5]

1. Generates a history straight into an ``EventStore``: ``--batches`` batches and
   ``--outcomes`` request outcomes, written through ``batches.domain.decider`` exactly as
   the batch actor writes them (outcomes appended in chunks of 16, a few batches running at
   once so their streams interleave; chat bodies like the fake upstream's; input, output and
   error files registered on the ``files`` stream, some deleted). Mostly completed batches,
   some failing validation, cancelled, expired or still running; ~4% of requests fail
   (429, 500, timeouts) and ~6% were retried. Generation uses ``fsync=False``: durability
   is not what is measured, and fsyncing 60k+ appends would only slow the setup.
2. Times each view's typical query, cold (a new ``Analytics`` connection: parsing the log
   and building the views included) and warm (the same connection again, median of
   ``--repeat``; a warm query still looks for new events first), beside the same question
   written on the raw ``events`` view (``EventQuery``, cold and warm) in the same run.
3. Compacts the sealed segments to Parquet (``eventlog.compaction.compact``) and does it
   all again.

Prints a Markdown table (the one in docs/benchmarks.md, ## Analytics).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batches.analytics import Analytics
from batches.domain import decider as d
from batches.domain import events as ev
from eventlog import EventStore, NewEvent
from eventlog.compaction import compact
from eventlog.query import EventQuery

T0 = 1_750_000_000
CHUNK = 16  # BATCHLOG_CHUNK_SIZE default: the actor records one chunk per append
RUNNING_AT_ONCE = 4  # BATCHLOG_MAX_ACTIVE_BATCHES default
MODELS = [  # (model, endpoint, share, latency median ms)
    ("gpt-4o-mini", "/v1/chat/completions", 0.55, 450.0),
    ("llama-3.1-8b-instruct", "/v1/chat/completions", 0.30, 900.0),
    ("text-embedding-3-small", "/v1/embeddings", 0.15, 60.0),
]
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "batches",
    "run",
    "all",
    "night",
]


# --- generation ---------------------------------------------------------------------------


def _body(rng: random.Random, model: str, endpoint: str, line: int, now: int) -> dict[str, Any]:
    prompt = rng.randint(8, 400)
    if endpoint == "/v1/embeddings":
        return {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": 0,
                    "embedding": [round(rng.uniform(-1, 1), 6) for _ in range(8)],
                }
            ],
            "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    words = rng.randint(5, 60)
    return {
        "id": f"chatcmpl-{rng.getrandbits(64):016x}",
        "object": "chat.completion",
        "created": now,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": " ".join(rng.choice(WORDS) for _ in range(words)),
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": words,
            "total_tokens": prompt + words,
        },
        "system_fingerprint": "fp_bench",
    }


def _outcome(
    rng: random.Random, model: str, endpoint: str, median_ms: float, line: int, t: float
) -> dict[str, Any]:
    latency = rng.lognormvariate(0, 0.6) * median_ms
    attempts = 1 if rng.random() > 0.06 else rng.choice((2, 2, 3))
    if attempts > 1:
        latency += 500.0 * (attempts - 1)
    fail = rng.random()
    outcome: dict[str, Any] = {
        "line": line,
        "custom_id": f"request-{line}",
        "request_id": f"batch_req_{rng.getrandbits(96):024x}",
        "status_code": 200,
        "body": None,
        "error": None,
        "attempts": attempts,
        "latency_ms": round(latency, 3),
        "started_at": t,
        "finished_at": t + latency / 1000.0,
    }
    if fail < 0.015:  # rate limited to the end
        outcome["status_code"] = 429
        outcome["attempts"] = 5
        outcome["body"] = {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    elif fail < 0.03:
        outcome["status_code"] = 500
        outcome["attempts"] = 5
        outcome["body"] = {
            "error": {
                "message": "The server had an error",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    elif fail < 0.04:
        outcome["status_code"] = None
        outcome["attempts"] = 5
        outcome["error"] = {
            "code": "upstream_timeout",
            "message": "ReadTimeout: (after 5 attempts)",
        }
    else:
        outcome["body"] = _body(rng, model, endpoint, line, int(t))
    return outcome


class _Batch:
    """One batch's life as a list of steps; each step is one decide + append."""

    def __init__(
        self, store: EventStore, i: int, lines: int, rng: random.Random, fate: str | None = None
    ) -> None:
        self.store = store
        self.rng = rng
        self.id = f"batch_{i:08d}{rng.getrandbits(40):010x}"
        self.stream = ev.batch_stream(self.id)
        self.state: d.BatchState | None = None
        roll = rng.random()
        pick, choice = rng.random(), MODELS[-1]
        for option in MODELS:
            pick -= option[2]
            if pick <= 0:
                choice = option
                break
        self.model, self.endpoint, _, self.median = choice
        self.t = float(T0 + i * 60)
        self.lines = lines
        self.fate = fate or (
            "invalid"
            if lines == 0
            else "cancelled"
            if roll < 0.05
            else "expired"
            if roll < 0.08
            else "running"
            if roll < 0.10
            else "completed"
        )
        self.steps = self._steps()

    def _do(self, command: d.Command) -> None:
        events = d.decide(self.state, command)
        if events:
            version = self.state.version if self.state else 0
            self.store.append(self.stream, [NewEvent(t, e) for t, e in events], version)
            self.state = d.fold(events, self.state)

    def _steps(self) -> Any:
        at = int(self.t)
        tenant = f"tenant-{self.rng.randrange(20)}"
        input_id = f"file-{self.id[6:]}in"
        _file(self.store, input_id, tenant, "batch", 300 * max(self.lines, 1), at, self.lines)
        yield self._do(
            d.CreateBatch(
                batch_id=self.id,
                tenant=tenant,
                input_file_id=input_id,
                endpoint=self.endpoint,
                completion_window="24h",
                metadata={"job": f"nightly-{self.rng.randrange(100)}"},
                output_expires_after=None,
                idempotency_key=None,
                at=at,
            )
        )
        if self.fate == "invalid":
            error = {"code": "invalid_json_line", "message": "Line 3 is not JSON.", "line": 3}
            yield self._do(d.RecordValidation(at=at + 1, errors=(error,)))
            return
        yield self._do(d.RecordValidation(at=at + 1, model=self.model, total=self.lines))
        stop = self.lines
        if self.fate in ("cancelled", "expired", "running"):
            stop = self.rng.randrange(self.lines)
        t = self.t + 1.0
        for first in range(1, stop + 1, CHUNK):
            chunk = [
                _outcome(self.rng, self.model, self.endpoint, self.median, line, t + line * 0.05)
                for line in range(first, min(first + CHUNK, stop + 1))
            ]
            yield self._do(d.RecordOutcomes(tuple(chunk)))
        end = int(t + stop * 0.05) + 2
        out_id, err_id = f"file-{self.id[6:]}out", f"file-{self.id[6:]}err"
        if self.fate == "completed":
            yield self._do(d.StartFinalizing(at=end))
            _file(self.store, out_id, tenant, "batch_output", 900 * stop, end, stop)
            yield self._do(d.Complete(at=end + 1, output_file_id=out_id, error_file_id=None))
        elif self.fate == "cancelled":
            yield self._do(d.Cancel(at=end))
            _file(self.store, err_id, tenant, "batch_output", 200 * self.lines, end, self.lines)
            yield self._do(d.FinishCancel(at=end + 1, output_file_id=None, error_file_id=err_id))
        elif self.fate == "expired":
            assert self.state is not None
            _file(self.store, err_id, tenant, "batch_output", 200 * self.lines, end, self.lines)
            yield self._do(
                d.Expire(at=self.state.expires_at, output_file_id=None, error_file_id=err_id)
            )
        if self.rng.random() < 0.1:  # the user cleans up the input file
            self.store.append(
                ev.FILES_STREAM,
                [NewEvent(ev.FILE_DELETED, {"file_id": input_id, "at": end + 5})],
                self.store.version(ev.FILES_STREAM),
            )


def _file(
    store: EventStore, file_id: str, tenant: str, purpose: str, size: int, at: int, lines: int
) -> None:
    data = {
        "file_id": file_id,
        "tenant": tenant,
        "filename": f"{file_id}.jsonl",
        "purpose": purpose,
        "bytes": size,
        "created_at": at,
        "expires_at": None,
        "path": f"files/{file_id[5:7]}/{file_id}",
        "sha256": f"{hash(file_id) & (2**256 - 1):064x}",
        "lines": lines,
    }
    store.append(
        ev.FILES_STREAM, [NewEvent(ev.FILE_UPLOADED, data)], store.version(ev.FILES_STREAM)
    )


def sizes(batches: int, outcomes: int, rng: random.Random) -> list[int]:
    """Lines per batch: 5% of batches fail validation (0 lines); the rest share ``outcomes``
    (sizes from 1 to about twice the mean)."""
    invalid = {i for i in range(batches) if rng.random() < 0.05}
    valid = [i for i in range(batches) if i not in invalid]
    weights = [rng.uniform(0.05, 1.95) for _ in valid]
    scale = outcomes / sum(weights)
    out = [0] * batches
    for i, w in zip(valid, weights, strict=True):
        out[i] = max(1, round(w * scale))
    return out


def generate(log_dir: Path, batches: int, outcomes: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    store = EventStore.open(log_dir, fsync=False)
    t0 = time.perf_counter()
    pending = [
        _Batch(store, i, n, random.Random(rng.getrandbits(64)))
        for i, n in enumerate(sizes(batches, outcomes, rng))
    ]
    pending.reverse()
    running: list[_Batch] = []
    done = 0
    while pending or running:
        while pending and len(running) < RUNNING_AT_ONCE:
            running.append(pending.pop())
        batch = running[rng.randrange(len(running))]
        if next(batch.steps, StopIteration) is StopIteration:
            running.remove(batch)
            done += 1
            if done % 1000 == 0:
                print(f"  {done} batches, {store.head()} events, {time.perf_counter() - t0:.0f} s")
    head = store.head()
    store.close()
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (log_dir / "segments").iterdir())
    return {"events": head, "seconds": seconds, "bytes": size}


# --- queries ------------------------------------------------------------------------------

_STATUS_CASE = (
    "CASE type WHEN 'BatchCreated' THEN 'validating' WHEN 'BatchValidated' THEN 'in_progress' "
    "WHEN 'BatchValidationFailed' THEN 'failed' WHEN 'BatchFinalizing' THEN 'finalizing' "
    "WHEN 'BatchCompleted' THEN 'completed' WHEN 'BatchCancelRequested' THEN 'cancelling' "
    "WHEN 'BatchCancelled' THEN 'cancelled' WHEN 'BatchExpired' THEN 'expired' END"
)

# name -> (query on the analytics views, the same question on the raw events view)
QUERIES: dict[str, tuple[str, str]] = {
    "batches: count by status": (
        "SELECT status, count(*) FROM batches GROUP BY 1 ORDER BY 1",
        f"""SELECT status, count(*) FROM (
                SELECT stream_id, arg_max({_STATUS_CASE}, version) AS status
                FROM events
                WHERE stream_id LIKE 'batch-%'
                  AND type NOT IN ('RequestSucceeded', 'RequestFailed')
                GROUP BY 1)
            GROUP BY 1 ORDER BY 1""",
    ),
    "requests: p50/p99 latency by model": (
        """SELECT model, count(*), quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99)
           FROM requests GROUP BY 1 ORDER BY 1""",
        """WITH m AS (
               SELECT stream_id, data ->> '$.model' AS model FROM events
               WHERE type = 'BatchValidated')
           SELECT m.model, count(*),
                  quantile_cont((e.data ->> '$.latency_ms')::DOUBLE, 0.5),
                  quantile_cont((e.data ->> '$.latency_ms')::DOUBLE, 0.99)
           FROM events e JOIN m USING (stream_id)
           WHERE e.type IN ('RequestSucceeded', 'RequestFailed')
           GROUP BY 1 ORDER BY 1""",
    ),
    "requests: errors by code": (
        "SELECT error_code, count(*) FROM requests WHERE NOT ok GROUP BY 1 ORDER BY 1",
        """SELECT coalesce(data ->> '$.error.code', data ->> '$.body.error.code',
                           data ->> '$.body.error.type', 'http_' || (data ->> '$.status_code'),
                           'error') AS code, count(*)
           FROM events WHERE type = 'RequestFailed' GROUP BY 1 ORDER BY 1""",
    ),
    "files: live files by purpose": (
        "SELECT purpose, count(*), sum(bytes) FROM files WHERE NOT deleted GROUP BY 1 ORDER BY 1",
        """WITH f AS (
               SELECT data ->> '$.file_id' AS file_id,
                      arg_max(type, position) AS last,
                      arg_max(data ->> '$.purpose', position)
                          FILTER (WHERE type = 'FileUploaded') AS purpose,
                      arg_max((data ->> '$.bytes')::BIGINT, position)
                          FILTER (WHERE type = 'FileUploaded') AS bytes
               FROM events WHERE stream_id = 'files' GROUP BY 1)
           SELECT purpose, count(*), sum(bytes) FROM f WHERE last = 'FileUploaded'
           GROUP BY 1 ORDER BY 1""",
    ),
}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def _normalise(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in rows]


def measure(data_dir: Path, repeat: int) -> dict[str, dict[str, float]]:
    log_dir = data_dir / "log"
    out: dict[str, dict[str, float]] = {}
    # One connection of each kind, opened cold: what the first query pays.
    open_v, views = _timed(lambda: Analytics(data_dir))
    build, _ = _timed(views.refresh)
    open_r, raw = _timed(lambda: EventQuery(log_dir))
    out["(open)"] = {"view_cold": open_v + build, "raw_cold": open_r, "build": build}
    for name, (view_q, raw_q) in QUERIES.items():
        row: dict[str, float] = {}
        # cold: a new connection for this query alone
        t, fresh = _timed(lambda: Analytics(data_dir))
        q, got_view = _timed(lambda: fresh.sql(view_q))  # noqa: B023
        fresh.close()
        row["view_cold"] = t + q
        t, fresh_raw = _timed(lambda: EventQuery(log_dir))
        q, got_raw = _timed(lambda: fresh_raw.sql(raw_q))  # noqa: B023
        fresh_raw.close()
        row["raw_cold"] = t + q
        if _normalise(got_view) != _normalise(got_raw):
            print(f"  !! {name}: views and raw disagree:\n  {got_view}\n  {got_raw}")
        row["view_warm"] = statistics.median(
            _timed(lambda: views.sql(view_q))[0]  # noqa: B023
            for _ in range(repeat)
        )
        row["raw_warm"] = statistics.median(
            _timed(lambda: (raw.refresh(), raw.sql(raw_q)))[0]  # noqa: B023
            for _ in range(repeat)
        )
        out[name] = row
        print(
            f"  {name:38} views cold {row['view_cold']:7.2f} s warm {row['view_warm']:7.3f} s"
            f" | raw cold {row['raw_cold']:7.2f} s warm {row['raw_warm']:7.3f} s"
        )
    out["stats()"] = {"view_warm": statistics.median(_timed(views.stats)[0] for _ in range(repeat))}
    out["refresh, nothing new"] = {
        "view_warm": statistics.median(_timed(views.refresh)[0] for _ in range(repeat))
    }
    print(f"  stats() warm {out['stats()']['view_warm']:.3f} s")
    views.close()
    raw.close()
    return out


def incremental(data_dir: Path, chunks: int = 20) -> dict[str, float]:
    """A batch running while a connection is open: refresh after each chunk of outcomes."""
    views = Analytics(data_dir)
    views.refresh()
    store = EventStore.open(data_dir / "log", fsync=False)
    batch = _Batch(store, 10**7, CHUNK * chunks, random.Random(99), fate="completed")
    next(batch.steps)  # create
    next(batch.steps)  # validate
    views.refresh()
    times = []
    for _ in range(chunks):
        next(batch.steps)
        times.append(_timed(views.refresh)[0])
    query = QUERIES["batches: count by status"][0]
    next(batch.steps)  # finalizing
    after, _ = _timed(lambda: views.sql(query))
    store.close()
    views.close()
    print(
        f"  refresh after one chunk of {CHUNK} outcomes: median {statistics.median(times):.3f} s;"
        f" a view query after a new event: {after:.3f} s"
    )
    return {"refresh": statistics.median(times), "query": after}


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    def f(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"

    lines = [
        "| query | log | views cold | views warm | raw `events` cold | raw `events` warm |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, res in results.items():
        for name, row in res.items():
            lines.append(
                f"| {name} | {label} | {f(row.get('view_cold'))} | {f(row.get('view_warm'))} "
                f"| {f(row.get('raw_cold'))} | {f(row.get('raw_warm'))} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="use the history already in --dir")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tmp = None
    if args.dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
        args.dir = tmp / "data"
    data_dir: Path = args.dir
    try:
        print(
            f"# bench_analytics {datetime.date.today()} on {platform.node()}: "
            f"{os.cpu_count()} cores, python {platform.python_version()}"
        )
        if not args.reuse:
            if (data_dir / "log").exists():
                shutil.rmtree(data_dir / "log")
            print(f"generating {args.batches} batches, {args.outcomes} outcomes (fsync=False)")
            gen = generate(data_dir / "log", args.batches, args.outcomes)
            print(
                f"  {gen['events']} events, {gen['bytes'] / 2**20:.0f} MiB of segments "
                f"in {gen['seconds']:.0f} s"
            )
        results: dict[str, dict[str, dict[str, float]]] = {}
        print("segments only (no Parquet):")
        results["segments"] = measure(data_dir, args.repeat)
        t, written = _timed(lambda: compact(data_dir / "log"))
        segs = len(list((data_dir / "log" / "segments").iterdir()))
        print(f"compaction: {len(written)} Parquet files of {segs} segments in {t:.1f} s")
        results["compacted"] = measure(data_dir, args.repeat)
        inc = incremental(data_dir)
        results["compacted"][f"refresh after {CHUNK} new outcomes"] = {"view_warm": inc["refresh"]}
        print()
        print(table(results))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
