"""DuckDB over the log, and compaction (catalogue item 13; compaction exactly once)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import snapshot_files

from eventlog import CorruptLog, EventStore, NewEvent
from eventlog import frames as fr
from eventlog.compaction import compact
from eventlog.query import EventQuery

CHILD = str(Path(__file__).with_name("eventlog_child.py"))


def fill(s: EventStore, n: int, streams: int = 3) -> None:
    versions = {}
    for i in range(n):
        sid = f"s-{i % streams}"
        v = versions[sid] if sid in versions else s.version(sid)
        events = [NewEvent(["Created", "Done", "Failed"][i % 3], {"i": i, "k": [i, "x"]})]
        if i % 4 == 0:
            events.append(NewEvent("Extra", {"i": i}, {"why": "group"}))
        versions[sid] = s.append(sid, events, v)


def count_exactly_once(q: EventQuery, head: int) -> None:
    assert q.sql(
        "SELECT count(*), count(DISTINCT position), min(position), max(position) FROM events"
    ) == [(head, head, 1 if head else None, head if head else None)]


def test_events_view_matches_the_store(open_store, log_dir):
    s = open_store(segment_bytes=600)
    fill(s, 30)
    with EventQuery(log_dir) as q:
        rows = q.sql(
            "SELECT stream_id, version, type, epoch(recorded_at), data, position, event_id, "
            "metadata FROM events ORDER BY position"
        )
        described = dict((r[0], r[1]) for r in q.sql("DESCRIBE SELECT * FROM events"))
    expect = s.read_all()
    assert len(rows) == len(expect) == s.head()
    import orjson

    for row, e in zip(rows, expect, strict=True):
        assert row[:3] == (e.stream_id, e.version, e.type)
        assert abs(row[3] - e.recorded_at) < 1e-5
        assert orjson.loads(row[4]) == e.data and orjson.loads(row[7]) == e.metadata
        assert (row[5], row[6]) == (e.position, e.event_id)
    assert described == {
        "stream_id": "VARCHAR",
        "version": "BIGINT",
        "type": "VARCHAR",
        "recorded_at": "TIMESTAMP WITH TIME ZONE",
        "data": "JSON",
        "position": "BIGINT",
        "event_id": "VARCHAR",
        "metadata": "JSON",
    }


def test_sql_params_arrow_and_json(open_store, log_dir):
    s = open_store()
    fill(s, 9)
    q = EventQuery(log_dir)
    assert q.sql("SELECT count(*) FROM events WHERE type = ?", ["Done"]) == [(3,)]
    assert q.sql("SELECT data->>'$.i' FROM events WHERE position = 1") == [("0",)]
    t = q.arrow("SELECT position, stream_id FROM events ORDER BY position")
    assert t.column("position").to_pylist() == list(range(1, s.head() + 1))
    assert q.connection.execute("SELECT 1").fetchall() == [(1,)]


def test_refresh_sees_new_events_and_segments(open_store, log_dir):
    s = open_store(segment_bytes=400)
    q = EventQuery(log_dir)
    count_exactly_once(q, 0)
    fill(s, 5)
    count_exactly_once(q, 0)  # a snapshot in time until refreshed
    q.refresh()
    count_exactly_once(q, s.head())
    s.append("late", [NewEvent("Late", {})], 0)
    q.refresh()
    q.refresh()  # idempotent
    count_exactly_once(q, s.head())


def test_half_written_tail_is_invisible(open_store, log_dir):
    s = open_store()
    fill(s, 6)
    head = s.head()
    seg = log_dir / "segments" / f"{1:020d}.seg"
    payload = fr.encode_payload([NewEvent("Half", {"x": "y" * 100})])
    frame = fr.encode_frame(b"s-9", head + 1, 1, time.time(), 1, payload)
    q = EventQuery(log_dir)
    with open(seg, "ab") as f:
        for cut in range(1, len(frame)):
            f.write(frame[cut - 1 : cut])  # the writer is part way through the frame
            f.flush()
            if cut % 17 == 0 or cut == len(frame) - 1:
                q.refresh()
                count_exactly_once(q, head)
                assert q.sql("SELECT count(*) FROM events WHERE type = 'Half'") == [(0,)]
        f.write(frame[-1:])
    q.refresh()  # now whole
    count_exactly_once(q, head + 1)
    assert s.version("s-9") == 1


def test_queries_do_not_block_the_writer_and_write_nothing(open_store, log_dir):
    s = open_store(segment_bytes=20_000)
    fill(s, 300)
    q = EventQuery(log_dir)
    stop = threading.Event()
    queries = []

    def reader() -> None:
        qq = EventQuery(log_dir)
        while not stop.is_set():
            qq.refresh()
            queries.append(qq.sql("SELECT type, count(*) FROM events GROUP BY type"))

    t = threading.Thread(target=reader)
    t.start()
    # a query result held open, unfetched, while the writer goes on
    cursor = q.connection.cursor()
    pending = cursor.execute("SELECT * FROM events, range(100)")
    worst = 0.0
    v = 0
    deadline = time.monotonic() + 30
    while (len(queries) < 3 or v < 60) and time.monotonic() < deadline:
        t0 = time.perf_counter()
        v = s.append("writer", [NewEvent("W", {"i": v})], v)
        worst = max(worst, time.perf_counter() - t0)
    stop.set()
    t.join()
    assert pending.fetchone() is not None
    cursor.close()
    assert worst < 2.0 and len(queries) > 0
    before = snapshot_files(log_dir)
    q.refresh()
    q.sql("SELECT count(*) FROM events")
    assert snapshot_files(log_dir) == before  # a query writes nothing
    count_exactly_once(q, s.head())


def test_compaction_exactly_once_with_an_open_query(open_store, log_dir):
    s = open_store(segment_bytes=800)
    fill(s, 60)
    q = EventQuery(log_dir)  # parsed every segment from the frames
    by_type = q.sql("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
    written = compact(log_dir)
    segs = sorted((log_dir / "segments").iterdir())
    assert [p.name for p in written] == [p.stem + ".parquet" for p in segs[:-1]]
    assert compact(log_dir) == []  # already done
    q.refresh()  # now reads the Parquet files and drops its own copies
    count_exactly_once(q, s.head())
    assert q.sql("SELECT type, count(*) FROM events GROUP BY type ORDER BY type") == by_type
    fill(s, 10)
    q.refresh()
    count_exactly_once(q, s.head())
    q2 = EventQuery(log_dir)
    count_exactly_once(q2, s.head())
    rows = q2.sql("SELECT position, data FROM events ORDER BY position")
    assert [r[0] for r in rows] == list(range(1, s.head() + 1))
    # the segment files are kept: stream reads still work
    assert len(s.read_all()) == s.head()


def test_leftover_tmp_is_ignored_then_cleaned(open_store, log_dir):
    s = open_store(segment_bytes=500)
    fill(s, 20)
    pq = log_dir / "parquet"
    pq.mkdir()
    first = sorted((log_dir / "segments").iterdir())[0]
    tmp = pq / (first.stem + ".parquet.tmp")
    tmp.write_bytes(b"PAR1 half written")
    q = EventQuery(log_dir)
    count_exactly_once(q, s.head())
    compact(log_dir)
    assert not tmp.exists()
    q.refresh()
    count_exactly_once(q, s.head())


def test_compaction_killed_midway_leaves_each_event_once(log_dir):
    with EventStore.open(log_dir, segment_bytes=1_500, fsync=False) as s:
        fill(s, 400)
        head = s.head()
    n_sealed = len(list((log_dir / "segments").iterdir())) - 1
    assert n_sealed > 20
    rng = random.Random(5)
    states = []
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, CHILD, "compact", str(log_dir)], stdout=subprocess.PIPE, text=True
        )
        # wait until it is writing Parquet files (a .tmp or a first file), then kill it soon
        deadline = time.monotonic() + 30
        pq = log_dir / "parquet"
        while child.poll() is None and time.monotonic() < deadline:
            if pq.exists() and any(pq.glob("*.parquet*")):
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.communicate()
        done = len(list((log_dir / "parquet").glob("*.parquet")))
        states.append(done)
        with EventQuery(log_dir) as q:  # whatever was left: every event exactly once
            count_exactly_once(q, head)
        if 0 < done < n_sealed:
            break  # killed midway (a .tmp may be left too)
    assert any(0 < d < n_sealed for d in states), states
    compact(log_dir)  # finishes what the killed run left, and removes its .tmp
    done_files = sorted(p.name for p in (log_dir / "parquet").glob("*.parquet"))
    assert len(done_files) == n_sealed and not list((log_dir / "parquet").glob("*.tmp"))
    with EventQuery(log_dir) as q:
        count_exactly_once(q, head)


def test_a_corrupt_sealed_segment_stops_the_query(open_store, log_dir):
    s = open_store(segment_bytes=300)
    fill(s, 10)
    first = sorted((log_dir / "segments").iterdir())[0]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0x08
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog):
        EventQuery(log_dir)


def test_eventlog_modules_import_no_duckdb_ray_or_fastapi():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, eventlog; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('duckdb', 'ray', 'fastapi')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_refresh_with_a_half_fetched_result_on_the_connection(open_store, log_dir):
    s = open_store(segment_bytes=300)
    fill(s, 10)
    q = EventQuery(log_dir)
    q.connection.execute(
        "CREATE VIEW per_type AS SELECT type, count(*) AS n FROM events GROUP BY 1"
    )
    q.connection.execute("SELECT position FROM events ORDER BY position").fetchone()  # left open
    fill(s, 5)
    q.refresh()
    count_exactly_once(q, s.head())
    assert sum(n for _, n in q.sql("SELECT * FROM per_type")) == s.head()  # views on top stay
    compact(log_dir)
    q.refresh()
    assert sum(n for _, n in q.sql("SELECT * FROM per_type")) == s.head()
