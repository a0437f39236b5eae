"""The analytics views over a synthetic log written through the decider (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batches.analytics import Analytics
from batches.analytics_cli import ReadOnlyViolation, check_read_only
from batches.domain import decider
from batches.domain import events as ev
from eventlog import EventStore, NewEvent
from eventlog.compaction import compact
from tests.analytics.checks import TIMESTAMPS, assert_counts_and_usage_match
from tests.analytics.synth import T0, Writer, delete, outcome, upload


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore.open(tmp_path / "log", fsync=False, segment_bytes=4_000)
    yield s  # type: ignore[misc]
    s.close()


def history(store: EventStore) -> dict[str, Writer]:
    upload(store, "file-a")
    upload(store, "file-b", tenant="bob")
    delete(store, "file-b")
    w: dict[str, Writer] = {}
    w["ok"] = (
        Writer(store, "b-ok")
        .create()
        .validate(4)
        .outcomes([outcome(1, tokens=(5, 7)), outcome(2, attempts=3, latency_ms=30.0)])
        .outcomes([outcome(3), outcome(4, ok=False, status=503, attempts=3)])
        .finish()
    )
    w["invalid"] = Writer(store, "b-invalid").create().invalid()
    w["cancel"] = (
        Writer(store, "b-cancel", tenant="bob")
        .create()
        .validate(6, model="m-embed")
        .outcomes([outcome(1, error={"code": "upstream_timeout", "message": "slow"}, attempts=2)])
        .outcomes([outcome(2, model="m-embed")])
        .cancel()
    )
    w["expire"] = Writer(store, "b-expire").create().validate(3).outcomes([outcome(1)]).expire()
    w["running"] = Writer(store, "b-running").create().validate(2).outcomes([outcome(1)])
    return w


def wire(w: Writer) -> dict:
    assert w.state is not None
    return decider.to_wire(w.state).model_dump(mode="json")


def test_batches_view_agrees_with_the_decider(store: EventStore, tmp_path: Path) -> None:
    writers = history(store)
    with Analytics(tmp_path) as a:
        rows = {r["batch_id"]: r for r in a.dicts("SELECT * FROM batches")}
        assert set(rows) == {w.batch_id for w in writers.values()}
        for w in writers.values():
            row, batch = rows[w.batch_id], wire(w)
            assert row["status"] == batch["status"]
            assert row["tenant"] == w.tenant
            assert row["model"] == batch["model"]
            assert_counts_and_usage_match(row, batch)
            for name in TIMESTAMPS:
                got = row[name].timestamp() if row[name] is not None else None
                assert got == batch[name], name
            assert row["output_file_id"] == batch["output_file_id"]
            assert row["error_file_id"] == batch["error_file_id"]
            assert row["version"] == w.state.version  # type: ignore[union-attr]
        assert rows["b-ok"]["retries"] == 4
        assert rows["b-cancel"]["retries"] == 1
        assert rows["b-cancel"]["unfinished"] == 4
        assert rows["b-expire"]["unfinished"] == 2
        assert rows["b-ok"]["finalizing_s"] is not None and rows["b-ok"]["duration_s"] >= 0
        assert rows["b-invalid"]["in_progress_s"] is None
        assert rows["b-running"]["duration_s"] is None
        assert "invalid_json_line" in rows["b-invalid"]["errors"]


def test_requests_and_files_views(store: EventStore, tmp_path: Path) -> None:
    history(store)
    with Analytics(tmp_path) as a:
        assert a.sql("SELECT count(*) FROM requests") == [(8,)]
        assert a.sql(
            "SELECT line, ok, status_code, error_code, attempts, retries FROM requests "
            "WHERE batch_id = 'b-ok' ORDER BY line"
        ) == [
            (1, True, 200, None, 1, 0),
            (2, True, 200, None, 3, 2),
            (3, True, 200, None, 1, 0),
            (4, False, 503, "e503", 3, 2),
        ]
        assert a.sql(
            "SELECT error_code, status_code, tenant, model FROM requests "
            "WHERE batch_id = 'b-cancel' AND NOT ok"
        ) == [("upstream_timeout", None, "bob", "m-embed")]
        row = a.dicts("SELECT * FROM requests WHERE batch_id = 'b-ok' AND line = 1")[0]
        assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (5, 7, 12)
        assert row["started_at"].timestamp() == T0 + 1.0
        assert row["custom_id"] == "req-1" and row["endpoint"] == "/v1/chat/completions"
        assert a.sql(
            "SELECT file_id, tenant, deleted, deleted_at IS NULL FROM files ORDER BY 1"
        ) == [
            ("file-a", "default", False, True),
            ("file-b", "bob", True, False),
        ]


def test_http_failure_without_an_error_code_is_named_by_its_status(
    store: EventStore, tmp_path: Path
) -> None:
    w = Writer(store, "b").create().validate(1)
    bad = outcome(1, ok=False, status=502)
    bad["body"] = {"detail": "bad gateway"}
    w.outcomes([bad])
    with Analytics(tmp_path) as a:
        assert a.sql("SELECT error_code FROM requests") == [("http_502",)]


def test_queries_see_new_events_and_compaction_changes_nothing(
    store: EventStore, tmp_path: Path
) -> None:
    writers = history(store)
    with Analytics(tmp_path) as a:
        query = "SELECT * FROM batches ORDER BY batch_id"
        before = a.sql(query)
        running = writers["running"]
        running.outcomes([outcome(2)]).finish()
        after = a.sql(query)  # the same connection sees the new events
        assert after != before
        assert a.sql(
            "SELECT status, requests_completed FROM batches WHERE batch_id = 'b-running'"
        ) == [("completed", 2)]
        assert a.position == store.head()
        assert compact(tmp_path / "log")
        requests = a.sql("SELECT * FROM requests ORDER BY position")
        assert a.sql(query) == after
        with Analytics(tmp_path) as cold:  # a new connection, over Parquet this time
            assert cold.sql(query) == after
            assert cold.sql("SELECT * FROM requests ORDER BY position") == requests


def test_a_redelivered_outcome_in_the_log_counts_once(store: EventStore, tmp_path: Path) -> None:
    w = Writer(store, "b").create().validate(2).outcomes([outcome(1)])
    with Analytics(tmp_path) as a:
        assert a.sql("SELECT count(*) FROM requests") == [(1,)]
        # Bypass the decider: the same line again, then the real second line.
        kind, data = ev.outcome_event("/v1/chat/completions", outcome(1, tokens=(50, 50)))
        store.append(w.stream, [NewEvent(kind, data)], w.state.version)  # type: ignore[union-attr]
        dup = decider.evolve(w.state, kind, data)
        w.state = dup
        w.outcomes([outcome(2)])
        assert a.sql("SELECT line, input_tokens FROM requests ORDER BY line") == [(1, 3), (2, 3)]
        row = a.batch("b")
        assert row is not None
        assert (row["requests_completed"], row["input_tokens"]) == (2, w.state.input_tokens)


def test_stats_and_timeline(store: EventStore, tmp_path: Path) -> None:
    writers = history(store)
    with Analytics(tmp_path) as a:
        stats = a.stats()
        assert stats["events"] == store.head()
        assert stats["batches_by_status"] == {
            "completed": 1,
            "failed": 1,
            "cancelled": 1,
            "expired": 1,
            "in_progress": 1,
        }
        assert stats["requests"]["total"] == 8 and stats["requests"]["failed"] == 2
        assert stats["errors_by_code"] == {
            "batch_cancelled": 4,
            "batch_expired": 2,
            "e503": 1,
            "upstream_timeout": 1,
        }
        assert set(stats["latency_ms_by_model"]) == {"m-chat", "m-embed"}
        assert stats["latency_ms"]["requests"] == 8
        assert stats["latency_ms"]["p99"] >= stats["latency_ms"]["p50"]
        assert stats["tokens_by_model"]["m-chat"]["total"] == sum(
            w.state.total_tokens  # type: ignore[union-attr]
            for w in writers.values()
            if w.state.model == "m-chat"  # type: ignore[union-attr]
        )
        timeline = a.timeline("b-ok")
        assert [e["version"] for e in timeline] == list(range(1, 9))
        assert (
            timeline[0]["type"] == ev.BATCH_CREATED and timeline[-1]["type"] == ev.BATCH_COMPLETED
        )
        assert timeline[2]["data"]["custom_id"] == "req-1"
        assert [e["version"] for e in a.timeline("b-ok", after=3, limit=2)] == [4, 5]
        assert a.timeline("nope") == []


def test_empty_log_and_missing_log(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Analytics(tmp_path / "nothing")
    EventStore.open(tmp_path / "log", fsync=False).close()
    with Analytics(tmp_path) as a:
        stats = a.stats()
        assert stats["batches"] == 0 and stats["requests"]["per_s"] is None
        assert stats["latency_ms"]["p50"] is None
        assert a.sql("SELECT count(*) FROM batches") == [(0,)]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "  select * from batches;",
        "-- a comment\nWITH x AS (SELECT 1) SELECT * FROM x",
        "/* hi */ DESCRIBE batches",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM requests",
        "EXPLAIN ANALYZE SELECT 1",
        "PRAGMA table_info('batches')",
    ],
)
def test_read_only_accepts(query: str) -> None:
    check_read_only(query)


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM events",
        "INSERT INTO _requests VALUES (1)",
        "DROP VIEW batches",
        "COPY batches TO '/tmp/x.csv'",
        "ATTACH '/tmp/x.duckdb'",
        "SELECT 1; DROP VIEW batches",
        "EXPLAIN ANALYZE DELETE FROM _requests",
        "WITH x AS (SELECT 1) DELETE FROM _requests",
        "PRAGMA enable_profiling",
        "CALL pragma_table_info('batches')",
        "SET threads = 1",
        "CREATE TABLE t AS SELECT 1",
        "",
    ],
)
def test_read_only_refuses(query: str) -> None:
    with pytest.raises(ReadOnlyViolation):
        check_read_only(query)


def test_a_query_of_raw_events_alone_does_not_build_the_views(
    store: EventStore, tmp_path: Path
) -> None:
    history(store)
    with Analytics(tmp_path, persist=False) as a:  # (persisted tables catch up at connect)
        assert a.sql("SELECT count(*) FROM EVENTS") == [(store.head(),)]
        assert a.position == 0  # nothing parsed into the typed tables yet
        assert a.sql("SELECT count(*) FROM requests WHERE batch_id = ?", ["b-ok"]) == [(4,)]
        assert a.position == store.head()
        Writer(store, "b-new").create()
        assert a.sql("SELECT count(*) FROM events") == [(store.head(),)]  # fresh anyway
        assert a.arrow("SELECT batch_id FROM batches WHERE batch_id = 'b-new'").num_rows == 1


def test_arrow_after_other_queries(store: EventStore, tmp_path: Path) -> None:
    history(store)
    with Analytics(tmp_path) as a:
        a.sql("SELECT * FROM batches")
        a.stats()
        a.timeline("b-ok")
        Writer(store, "b-new").create()
        table = a.arrow("SELECT batch_id, status FROM batches ORDER BY 1")
        assert table.num_rows == 6 and table.column_names == ["batch_id", "status"]
        assert a.arrow("SELECT count(*) AS n FROM events").column("n").to_pylist() == [store.head()]
