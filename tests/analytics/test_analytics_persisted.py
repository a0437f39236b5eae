"""The persisted analytics tables (data_dir/analytics/tables.duckdb): always a fold of the
log up to their recorded position, caught up at connect, rebuilt when lost or damaged, and
a connection over them answers exactly as one that folds the whole log in memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batches import analytics, analytics_store
from batches.analytics import Analytics
from batches.domain import decider
from batches.domain import events as ev
from eventlog import EventStore, NewEvent
from eventlog.compaction import compact
from tests.analytics.synth import Writer, delete, outcome, upload

ROOT = Path(__file__).resolve().parents[2]
QUERIES = {
    "batches": "SELECT * FROM batches ORDER BY batch_id",
    "requests": "SELECT * FROM requests ORDER BY batch_id, line",
    "files": "SELECT * FROM files ORDER BY file_id",
}
TABLES = {
    "_lifecycle": "ORDER BY position",
    "_requests": "ORDER BY position, line",
    "_file_events": "ORDER BY position",
}


def write_history(store: EventStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        upload(store, f"file-{i}")
        w = Writer(store, f"b{i:03d}", tenant=f"t{i % 3}").create().validate(4)
        w.outcomes([outcome(1, tokens=(i, 2)), outcome(2, attempts=2, latency_ms=float(i))])
        if i % 4 == 0:
            w.cancel()
        elif i % 4 == 1:
            w.outcomes([outcome(3, ok=False, status=500), outcome(4)]).finish()
        elif i % 4 == 2:
            delete(store, f"file-{i}")
            w.outcomes([outcome(3)])


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore.open(tmp_path / "log", fsync=False, segment_bytes=6_000)
    yield s  # type: ignore[misc]
    s.close()


def views(a: Analytics) -> dict[str, Any]:
    out: dict[str, Any] = {name: a.sql(q) for name, q in QUERIES.items()}
    stats = a.stats()
    out["stats"] = stats
    return out


def in_memory(data_dir: Path) -> dict[str, Any]:
    with Analytics(data_dir, persist=False) as a:
        return views(a)


def file_meta(data_dir: Path) -> tuple[int, ...]:
    con = duckdb.connect(str(analytics_store.db_path(data_dir)), read_only=True)
    try:
        meta = analytics_store._meta(con)
    finally:
        con.close()
    assert meta is not None
    return meta


def file_tables(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(analytics_store.db_path(data_dir)), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} {o}").fetchall() for t, o in TABLES.items()}
    finally:
        con.close()


def folded_up_to(data_dir: Path, position: int) -> dict[str, list[tuple[Any, ...]]]:
    """The rows an in-memory fold of the whole log has at or before ``position``."""
    with Analytics(data_dir, persist=False) as a:
        a.refresh()
        return {
            t: a.sql(f"SELECT * FROM {t} WHERE position <= ? {o}", [position])
            for t, o in TABLES.items()
        }


def test_persisted_tables_answer_as_a_fold_of_the_log(store, tmp_path):
    write_history(store, 20)
    expected = in_memory(tmp_path)
    assert not analytics_store.db_path(tmp_path).exists()
    with Analytics(tmp_path) as a:
        assert views(a) == expected
        assert a.position == store.head()
    assert file_meta(tmp_path)[1] == store.head()
    assert file_tables(tmp_path) == folded_up_to(tmp_path, store.head())
    # more events: the next connection catches the file up from where it was
    write_history(store, 5, start=20)
    compact(tmp_path / "log")  # some of it now read from Parquet
    with Analytics(tmp_path) as a:
        caught_up = a.position
        assert caught_up == store.head() == file_meta(tmp_path)[1]
        assert views(a) == in_memory(tmp_path)
        write_history(store, 2, start=25)  # and an open connection folds new events too
        assert views(a) == in_memory(tmp_path)
    assert file_meta(tmp_path)[1] == caught_up < store.head()  # (in its memory only)


def test_a_connection_in_another_process_while_one_is_attached(store, tmp_path):
    """An attached file cannot be written: the other process's connection folds the rest of
    the log in memory and answers the same; the file catches up later."""
    write_history(store, 8)
    with Analytics(tmp_path) as a:
        at = a.position
        write_history(store, 6, start=8)
        code = (
            "import json, sys\n"
            "from batches.analytics import Analytics\n"
            "from tests.analytics.test_analytics_persisted import QUERIES\n"
            "with Analytics(sys.argv[1]) as a:\n"
            "    print(json.dumps({n: a.sql(q) for n, q in QUERIES.items()}, default=str))\n"
        )
        child = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.returncode == 0, child.stderr
        assert file_meta(tmp_path)[1] == at  # the child could not write the file
        expected = in_memory(tmp_path)
        got = json.loads(child.stdout)
        assert got == json.loads(json.dumps({n: expected[n] for n in QUERIES}, default=str))
        assert views(a) == expected
    with Analytics(tmp_path) as b:
        assert b.position == store.head()
    assert file_meta(tmp_path)[1] == store.head()


CRASH_CHILD = """
import os, signal, sys
from batches import analytics
calls = [0]
real = analytics._fold
def fold(con, src, lo, hi, into):
    real(con, src, lo, hi, into)  # rows inserted, the transaction not committed
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
analytics._fold = fold
analytics.Analytics(sys.argv[1])
"""


@pytest.mark.parametrize("die_at", [1, 2, 4])
def test_a_crash_mid_update_leaves_a_fold_of_the_log_up_to_its_position(store, tmp_path, die_at):
    write_history(store, 30)
    assert len(list((tmp_path / "log" / "segments").glob("*.seg"))) > 5  # several steps
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD, str(tmp_path), str(die_at)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    position = file_meta(tmp_path)[1]
    assert 0 <= position < store.head()
    assert (position > 0) == (die_at > 1)  # the steps before the kill were committed
    assert file_tables(tmp_path) == folded_up_to(tmp_path, position)
    with Analytics(tmp_path) as a:  # the next connection carries on from there
        assert views(a) == in_memory(tmp_path)
    assert file_tables(tmp_path) == folded_up_to(tmp_path, store.head())


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(5000))


def _other_schema(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("UPDATE _meta SET schema = schema + 1")
    con.close()


def _ahead_of_the_log(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute('UPDATE _meta SET "offset" = "offset" + 10000000')
    con.close()


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.unlink(), _garbage, _other_schema, _ahead_of_the_log],
    ids=["deleted", "garbage", "other-schema", "ahead-of-the-log"],
)
def test_a_lost_or_unusable_file_is_rebuilt(store, tmp_path, damage, caplog):
    write_history(store, 10)
    expected = in_memory(tmp_path)
    Analytics(tmp_path).close()
    damage(analytics_store.db_path(tmp_path))
    with Analytics(tmp_path) as a:
        assert views(a) == expected
    assert file_meta(tmp_path)[1] == store.head()
    assert file_tables(tmp_path) == folded_up_to(tmp_path, store.head())


def test_an_unwritable_data_dir_folds_in_memory(store, tmp_path):
    write_history(store, 4)
    (tmp_path / analytics_store.DB_DIR).write_text("not a directory")
    with Analytics(tmp_path) as a:
        assert views(a) == in_memory(tmp_path)


def test_files_view_marks_expired_files(store, tmp_path):
    upload(store, "file-keep")
    upload(store, "file-old")
    upload(store, "file-del")
    delete(store, "file-del")
    store.append(
        "files",
        [NewEvent("FileExpired", {"file_id": "file-old", "at": 1_700_000_100, "expires_at": 1})],
        store.version("files"),
    )
    with Analytics(tmp_path) as a:
        rows = a.sql("SELECT file_id, deleted, expired, epoch(deleted_at) FROM files ORDER BY 1")
    assert rows == [
        ("file-del", True, False, 1_700_000_009),
        ("file-keep", False, False, None),
        ("file-old", True, True, 1_700_000_100),
    ]


def test_the_persisted_tables_are_owner_only(store, tmp_path):
    write_history(store, 2)
    (tmp_path / analytics_store.DB_DIR).mkdir(mode=0o755)  # made before, too open
    with Analytics(tmp_path):
        pass
    d = tmp_path / analytics_store.DB_DIR
    assert d.stat().st_mode & 0o777 == 0o700
    assert analytics_store.db_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert (d / analytics_store.LOCK_NAME).stat().st_mode & 0o077 == 0


def _redeliver(store: EventStore, w: Writer, line: int) -> None:
    """The same line's outcome again, bypassing the decider (as a redelivery can)."""
    kind, data = ev.outcome_event("/v1/chat/completions", outcome(line, tokens=(77, 1)))
    store.append(w.stream, [NewEvent(kind, data)], w.state.version)  # type: ignore[union-attr]
    w.state = decider.evolve(w.state, kind, data)


def test_a_refresh_in_small_chunks_gives_the_same_tables_as_one_pass(tmp_path, monkeypatch):
    """Folding the log a few hundred bytes at a time (several transactions per segment,
    from compacted Parquet, sealed frames and the active segment) persists exactly the
    rows one pass over each whole segment does, redelivered outcomes across chunks too."""
    store = EventStore.open(tmp_path / "log", fsync=False, segment_bytes=40_000)
    try:
        write_history(store, 24)
        w = Writer(store, "bdup").create().validate(3).outcomes([outcome(1)])
        write_history(store, 2, start=24)  # the duplicate lands chunks after the original
        _redeliver(store, w, 1)
        compact(tmp_path / "log")  # sealed segments now read from Parquet
        write_history(store, 10, start=26)  # a sealed segment without Parquet, and the tail
        w.outcomes([outcome(2)])
        _redeliver(store, w, 2)
        segments = sorted((tmp_path / "log" / "segments").glob("*.seg"))
        parquet = list((tmp_path / "log" / "parquet").glob("*.parquet"))
        assert len(segments) >= 3 and parquet, (segments, parquet)

        folds: list[tuple[int, int]] = []
        real = analytics._fold

        def counting(con, src, lo, hi, into):  # type: ignore[no-untyped-def]
            folds.append((lo, hi))
            real(con, src, lo, hi, into)

        monkeypatch.setattr(analytics, "_fold", counting)
        monkeypatch.setattr(analytics, "CHUNK_BYTES", None)  # one pass: a segment at a time
        one_pass = in_memory(tmp_path)
        one_pass_tables = folded_up_to(tmp_path, store.head())
        whole = len(folds)
        folds.clear()

        monkeypatch.setattr(analytics, "CHUNK_BYTES", 600)
        assert analytics.update_persisted(tmp_path)  # what the coordinator's child runs
        assert len(folds) > 3 * whole  # it did go in pieces
        assert [hi for _, hi in folds] == sorted({hi for _, hi in folds})  # each once, in order
        assert all(lo == prev for (lo, _), (_, prev) in zip(folds[1:], folds, strict=False))
        assert file_meta(tmp_path)[1] == store.head()
        assert file_tables(tmp_path) == one_pass_tables
        with Analytics(tmp_path, persist=False) as a:  # in memory, in chunks too
            assert views(a) == one_pass
        dups = [r for r in one_pass_tables["_requests"] if r[0] == "bdup"]
        assert [(r[5], r[15]) for r in dups] == [(1, 3), (2, 3)]  # (line, input_tokens)

        # more appended: the file carries on in chunks from its recorded position
        write_history(store, 6, start=36)
        monkeypatch.setattr(analytics, "CHUNK_BYTES", None)
        expected = folded_up_to(tmp_path, store.head())
        monkeypatch.setattr(analytics, "CHUNK_BYTES", 600)
        assert analytics.update_persisted(tmp_path)
        assert file_tables(tmp_path) == expected
    finally:
        store.close()


def test_the_refresh_child_brings_the_file_up_to_date(store, tmp_path):
    """`python -m batches.analytics DATA_DIR`, as the coordinator runs it."""
    write_history(store, 12)
    for i in range(2):  # a first build, then a catch-up
        child = subprocess.run(
            [sys.executable, "-m", "batches.analytics", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.returncode == 0, child.stderr
        assert file_meta(tmp_path)[1] == store.head()
        assert file_tables(tmp_path) == folded_up_to(tmp_path, store.head())
        write_history(store, 3, start=12 + 3 * i)
    d = tmp_path / analytics_store.DB_DIR
    assert d.stat().st_mode & 0o777 == 0o700
    assert analytics_store.db_path(tmp_path).stat().st_mode & 0o777 == 0o600
