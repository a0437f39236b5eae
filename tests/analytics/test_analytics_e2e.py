"""Analytics over a real history: `batchlog serve` + a fake upstream, driven by the openai SDK.

One history for the whole module (module-scoped fixture), checked against what the API
says: the views, the summary, time travel, the timeline endpoint and the CLI.

History: service A (API keys ka:alice, kb:bob; chunks of 2, one in flight) runs, one after
another, a chat batch, an embeddings batch, a batch that fails validation, a batch whose
requests fail twice then succeed (3 attempts allowed), a batch whose requests always fail,
and a batch cancelled mid-way (upstream latency); an input file is deleted. Service B
(a 4 s completion window) runs a slow batch that expires. B runs first and is stopped, so
two Rays never share the 2 cores; A stays up for the tests (analytics read its live log).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from batches.analytics import Analytics
from batches.domain import decider
from batches.domain import events as ev
from batches.testing import FakeUpstream, Service
from batches.timetravel import batch_as_of, state_at
from batchlog.cli import app
from eventlog import EventStore, RecordedEvent
from tests.analytics.checks import TIMESTAMPS, assert_counts_and_usage_match
from tests.e2e.conftest import FAST_RETRIES, chat_lines, upload, wait_for

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def embed_lines(n: int) -> bytes:
    lines = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "fake-embed", "input": f"some words number {i}"},
        }
        for i in range(n)
    ]
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


@dataclass
class History:
    svc: Service
    expired_dir: Path
    batches: dict[str, Any] = field(default_factory=dict)  # name -> final SDK Batch
    lines: dict[str, int] = field(default_factory=dict)  # name -> input lines
    deleted_file: str = ""

    @property
    def data_dir(self) -> Path:
        return self.svc.data_dir

    def get(self, path: str, api_key: str = "ka", **params: Any) -> httpx.Response:
        return httpx.get(
            self.svc.url + path,
            params=params,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )


def run(client: Any, content: bytes, endpoint: str = "/v1/chat/completions") -> Any:
    source = upload(client, content)
    batch = client.batches.create(
        input_file_id=source.id, endpoint=endpoint, completion_window="24h"
    )
    return wait_for(client, batch.id, TERMINAL, timeout=120)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def history(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("analytics")
    # B: the expiry, in a service of its own with a short completion window.
    env_b = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_COMPLETION_WINDOW_S": "4",
        "BATCHLOG_CHUNK_SIZE": "1",
        "BATCHLOG_CHUNKS_IN_FLIGHT": "1",
        **FAST_RETRIES,
    }
    upstream.configure(latency_ms=300)
    try:
        with Service(root / "expiring", env_b) as svc_b:
            expired = run(svc_b.client(), chat_lines(20, prefix="exp"))
    finally:
        upstream.reset()
    env_a = {
        "BATCHLOG_UPSTREAM": upstream.url,
        "BATCHLOG_API_KEYS": "ka:alice,kb:bob",
        "BATCHLOG_CHUNK_SIZE": "2",
        "BATCHLOG_CHUNKS_IN_FLIGHT": "1",
        **FAST_RETRIES,
    }
    with Service(root / "data", env_a, api_key="ka") as svc:
        h = History(svc=svc, expired_dir=root / "expiring")
        h.batches["expired"] = expired
        h.lines["expired"] = 20
        client = svc.client()
        h.batches["chat"], h.lines["chat"] = run(client, chat_lines(12, prefix="chat")), 12
        h.batches["embed"] = run(client, embed_lines(5), endpoint="/v1/embeddings")
        h.lines["embed"] = 5
        bad = upload(client, chat_lines(1, prefix="bad") + b"{not json\n")
        invalid = client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        h.batches["invalid"], h.lines["invalid"] = wait_for(client, invalid.id, TERMINAL), 0
        client.files.delete(bad.id)
        h.deleted_file = bad.id
        try:
            upstream.configure(fail_first_n=2, fail_status=500)  # within the 3 attempts
            h.batches["retried"], h.lines["retried"] = run(client, chat_lines(4, prefix="r")), 4
            upstream.configure(fail_first_n=5, fail_status=500)  # beyond them
            h.batches["failing"], h.lines["failing"] = run(client, chat_lines(3, prefix="f")), 3
            upstream.reset()
            upstream.configure(latency_ms=250)
            source = upload(client, chat_lines(30, prefix="c"))
            batch = client.batches.create(
                input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            deadline = time.monotonic() + 60
            while client.batches.retrieve(batch.id).request_counts.completed < 2:
                assert time.monotonic() < deadline, "the batch to cancel never started"
                time.sleep(0.1)
            client.batches.cancel(batch.id)
            h.batches["cancelled"] = wait_for(client, batch.id, TERMINAL)
            h.lines["cancelled"] = 30
        finally:
            upstream.reset()
        yield h


def api_rows(h: History) -> dict[str, dict[str, Any]]:
    return {name: b.model_dump() for name, b in h.batches.items() if name != "expired"}


def test_the_history_went_as_planned(history: History) -> None:
    status = {name: b.status for name, b in history.batches.items()}
    assert status == {
        "expired": "expired",
        "chat": "completed",
        "embed": "completed",
        "invalid": "failed",
        "retried": "completed",
        "failing": "completed",
        "cancelled": "cancelled",
    }
    assert history.batches["retried"].request_counts.completed == 4
    assert history.batches["failing"].request_counts.failed == 3
    cancelled = history.batches["cancelled"].request_counts
    assert 2 <= cancelled.completed < 30 and cancelled.failed == 30 - cancelled.completed
    expired = history.batches["expired"].request_counts
    assert expired.completed < 20 and expired.failed == 20 - expired.completed


def assert_row_is_the_batch(row: dict[str, Any], batch: dict[str, Any]) -> None:
    assert row["status"] == batch["status"]
    assert row["endpoint"] == batch["endpoint"]
    assert row["model"] == batch["model"]
    assert row["input_file_id"] == batch["input_file_id"]
    assert row["output_file_id"] == batch["output_file_id"]
    assert row["error_file_id"] == batch["error_file_id"]
    assert_counts_and_usage_match(row, batch)
    for name in TIMESTAMPS:
        got = int(row[name].timestamp()) if row[name] is not None else None
        assert got == batch[name], name


def test_batches_view_matches_the_api(history: History) -> None:
    with Analytics(history.data_dir) as a:
        rows = {r["batch_id"]: r for r in a.dicts("SELECT * FROM batches")}
        by_status = dict(a.sql("SELECT status, count(*) FROM batches GROUP BY 1"))
        assert a.sql("SELECT DISTINCT tenant FROM batches") == [("alice",)]
    api = api_rows(history)
    assert set(rows) == {b["id"] for b in api.values()}
    assert by_status == {"completed": 4, "failed": 1, "cancelled": 1}
    for batch in api.values():
        assert_row_is_the_batch(rows[batch["id"]], batch)
    by_name = {name: rows[b["id"]] for name, b in api.items()}
    assert by_name["retried"]["retries"] == 4 * 2
    assert by_name["failing"]["retries"] == 3 * 2
    assert by_name["chat"]["retries"] == 0
    assert by_name["embed"]["model"] == "fake-embed" and by_name["chat"]["model"] == "fake-chat"
    assert by_name["cancelled"]["unfinished"] == api["cancelled"]["request_counts"]["failed"]
    assert by_name["invalid"]["errors"] is not None and by_name["invalid"]["failed_at"]
    for name, row in by_name.items():
        assert row["validating_s"] is not None and row["validating_s"] >= 0
        assert row["duration_s"] >= row["validating_s"]
        if name not in ("invalid",):
            assert row["in_progress_s"] >= 0
    assert by_name["cancelled"]["cancelling_s"] >= 0
    assert by_name["chat"]["finalizing_s"] >= 0


def test_the_expired_batch(history: History) -> None:
    batch = history.batches["expired"].model_dump()
    with Analytics(history.expired_dir) as a:  # its service is stopped: an offline read
        (row,) = a.dicts("SELECT * FROM batches")
        stats = a.stats()
        outcomes = a.sql("SELECT count(*) FROM requests")[0][0]
    assert_row_is_the_batch(row, batch)
    assert row["status"] == "expired" and row["tenant"] == "default"
    assert row["unfinished"] == 20 - outcomes > 0
    assert row["duration_s"] >= 3  # the 4 s window (created_at is whole seconds)
    assert row["validating_s"] + row["in_progress_s"] == pytest.approx(row["duration_s"])
    assert stats["errors_by_code"]["batch_expired"] == row["unfinished"]
    assert stats["batches_by_status"] == {"expired": 1}


def test_requests_view_matches_what_was_sent(history: History) -> None:
    api = api_rows(history)
    with Analytics(history.data_dir) as a:
        per_batch = {
            b: (n, ids)
            for b, n, ids in a.sql(
                "SELECT batch_id, count(*), list(custom_id ORDER BY line) FROM requests GROUP BY 1"
            )
        }
        attempts = {
            name: a.sql(
                "SELECT ok, status_code, error_code, attempts, retries FROM requests "
                "WHERE batch_id = ? ORDER BY line",
                [api[name]["id"]],
            )
            for name in ("retried", "failing", "chat")
        }
        tokens = {
            b: (i, o, t)
            for b, i, o, t in a.sql(
                "SELECT batch_id, sum(input_tokens), sum(output_tokens), sum(total_tokens) "
                "FROM requests GROUP BY 1"
            )
        }
        bad_times = a.sql(
            "SELECT count(*) FROM requests WHERE finished_at < started_at OR latency_ms < 0 "
            "OR tenant <> 'alice' OR model IS NULL"
        )
    for name in ("chat", "embed", "retried", "failing"):
        n, ids = per_batch[api[name]["id"]]
        assert n == history.lines[name]  # one row per input line
        prefix = {"chat": "chat", "embed": "emb", "retried": "r", "failing": "f"}[name]
        assert ids == [f"{prefix}-{i}" for i in range(n)]
    cancelled = api["cancelled"]
    assert per_batch[cancelled["id"]][0] == cancelled["request_counts"]["completed"]
    assert api["invalid"]["id"] not in per_batch
    assert attempts["retried"] == [(True, 200, None, 3, 2)] * 4
    assert attempts["failing"] == [(False, 500, "fake_500", 3, 2)] * 3
    assert attempts["chat"] == [(True, 200, None, 1, 0)] * 12
    for name, batch in api.items():
        if batch["id"] in tokens:
            usage = batch["usage"]
            expect = (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"])
            assert tokens[batch["id"]] == expect, name
    assert api["chat"]["usage"]["total_tokens"] > 0 and api["embed"]["usage"]["input_tokens"] > 0
    assert bad_times == [(0,)]


def test_files_view_matches_the_api(history: History) -> None:
    listed = {f.id: f for f in history.svc.client().files.list()}
    with Analytics(history.data_dir) as a:
        rows = {r["file_id"]: r for r in a.dicts("SELECT * FROM files")}
    assert set(rows) == set(listed) | {history.deleted_file}
    assert rows[history.deleted_file]["deleted"] and rows[history.deleted_file]["deleted_at"]
    for file_id, f in listed.items():
        row = rows[file_id]
        assert not row["deleted"] and row["tenant"] == "alice"
        assert (row["bytes"], row["purpose"], row["filename"]) == (f.bytes, f.purpose, f.filename)
        assert int(row["created_at"].timestamp()) == f.created_at
    outputs = {b.output_file_id for b in history.batches.values() if b.output_file_id}
    assert outputs and all(rows[o]["purpose"] == "batch_output" for o in outputs if o in rows)


def test_stats_summarise_the_history(history: History) -> None:
    api = api_rows(history)
    with Analytics(history.data_dir) as a:
        stats = a.stats()
    assert stats["batches_by_status"] == {"completed": 4, "failed": 1, "cancelled": 1}
    unfinished = api["cancelled"]["request_counts"]["failed"]
    assert stats["errors_by_code"] == {"fake_500": 3, "batch_cancelled": unfinished}
    assert set(stats["latency_ms_by_model"]) == {"fake-chat", "fake-embed"}
    assert stats["latency_ms_by_model"]["fake-embed"]["requests"] == 5
    latency = stats["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    tokens = stats["tokens_by_model"]
    assert tokens["fake-embed"]["input"] == api["embed"]["usage"]["input_tokens"]
    chat_total = sum(
        b["usage"]["total_tokens"] for n, b in api.items() if b["model"] == "fake-chat"
    )
    assert tokens["fake-chat"]["total"] == chat_total
    assert stats["requests"]["retries"] == 8 + 6
    assert stats["requests"]["per_s"] > 0


def test_queries_see_events_written_seconds_ago(history: History) -> None:
    client = history.svc.client()
    with Analytics(history.data_dir) as a:
        before = a.sql("SELECT count(*) FROM batches")[0][0]
        done = run(client, chat_lines(2, prefix="fresh"))
        assert done.status == "completed"
        row = a.batch(done.id)  # the same connection, no reopening
        assert row is not None
        assert row["status"] == "completed" and row["requests_completed"] == 2
        assert a.sql("SELECT count(*) FROM batches")[0][0] == before + 1
        assert a.sql("SELECT count(*) FROM requests WHERE batch_id = ?", [done.id]) == [(2,)]


def read_stream(history: History, batch_id: str) -> list[RecordedEvent]:
    with EventStore.open(history.data_dir / "log") as store:  # beside the running service
        return store.read(ev.batch_stream(batch_id))


def test_time_travel_matches_the_live_state(history: History) -> None:
    log_dir = history.data_dir / "log"
    for name, batch in api_rows(history).items():
        events = read_stream(history, batch["id"])
        assert events and [e.version for e in events] == list(range(1, len(events) + 1))
        state = None
        for k, event in enumerate(events, start=1):
            state = decider.evolve(state, event.type, event.data)
            assert state_at(events, version=k) == state, (name, k)
        assert state is not None
        live = history.get(f"/batches/{batch['id']}")
        assert live.status_code == 200
        assert decider.to_wire(state).model_dump(mode="json") == live.json(), name
        # through the log, a few versions and moments
        for k in sorted({1, 2, len(events) // 2, len(events)}):
            expect = decider.to_wire(state_at(events, version=k))  # type: ignore[arg-type]
            assert batch_as_of(log_dir, batch["id"], version=k) == expect, (name, k)
        moment = events[len(events) // 2].recorded_at
        expect_at = state_at(events, at=moment)
        assert expect_at is not None
        assert batch_as_of(log_dir, batch["id"], at=moment) == decider.to_wire(expect_at)
        assert batch_as_of(log_dir, batch["id"], at=events[0].recorded_at - 1) is None


def test_timeline_endpoint_pages_through_the_stream(history: History) -> None:
    batch_id = history.batches["retried"].id
    events = read_stream(history, batch_id)
    pages, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if after is not None:
            params["after"] = after
        r = history.get(f"/batches/{batch_id}/events", **params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "list" and len(page["data"]) <= 3
        pages.append(page)
        if not page["has_more"]:
            break
        after = page["data"][-1]["version"]
    got = [e for p in pages for e in p["data"]]
    assert len(pages) == -(-len(events) // 3)
    assert [(e["version"], e["type"], e["data"], e["recorded_at"]) for e in got] == [
        (e.version, e.type, e.data, e.recorded_at) for e in events
    ]
    assert got[0]["id"] == f"{batch_id}:1" and got[0]["object"] == "batch.event"
    with Analytics(history.data_dir) as a:
        timeline = a.timeline(batch_id)
    assert [(e["version"], e["type"], e["data"]) for e in timeline] == [
        (e["version"], e["type"], e["data"]) for e in got
    ]
    # the timeline folds to the batch as the API shows it
    final = state_at(got)
    assert final is not None
    assert (
        decider.to_wire(final).model_dump(mode="json") == history.get(f"/batches/{batch_id}").json()
    )
    assert history.get("/batches/batch_nope/events").status_code == 404
    assert history.get(f"/batches/{batch_id}/events", api_key="kb").status_code == 404
    assert history.get(f"/batches/{batch_id}/events", api_key="wrong").status_code == 401
    assert history.get(f"/batches/{batch_id}/events", limit=0).status_code in (400, 422)


def test_cli_sql_history_stats(history: History) -> None:
    runner = CliRunner()
    d = str(history.data_dir)
    r = runner.invoke(
        app,
        [
            "sql",
            "SELECT status, count(*) AS n FROM batches GROUP BY 1 ORDER BY 1",
            "--data-dir",
            d,
            "-f",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    counts = {row["status"]: row["n"] for row in orjson.loads(r.stdout)}
    assert counts["failed"] == 1 and counts["cancelled"] == 1 and counts["completed"] >= 4
    r = runner.invoke(app, ["sql", "SELECT batch_id, status FROM batches", "--data-dir", d])
    assert r.exit_code == 0 and "status" in r.stdout and "cancelled" in r.stdout
    r = runner.invoke(
        app,
        [
            "sql",
            "SELECT error_code, count(*) FROM requests GROUP BY 1",
            "--data-dir",
            d,
            "-f",
            "csv",
        ],
    )
    assert r.exit_code == 0 and "fake_500,3" in r.stdout.splitlines()
    for refused in ("DELETE FROM events", "DROP VIEW batches", "SELECT 1; SELECT 2"):
        r = runner.invoke(app, ["sql", refused, "--data-dir", d])
        assert r.exit_code == 2, refused
        assert "read-only" in r.output or "one statement" in r.output, refused
    r = runner.invoke(app, ["sql", "SELECT nope FROM batches", "--data-dir", d])
    assert r.exit_code == 1 and "error" in r.output
    r = runner.invoke(app, ["sql", "SELECT 1", "--data-dir", str(history.data_dir / "nope")])
    assert r.exit_code == 1 and "no event log" in r.output
    # the data dir from the environment
    r = runner.invoke(
        app, ["sql", "SELECT count(*) FROM files", "-f", "csv"], env={"BATCHLOG_DATA_DIR": d}
    )
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "count_star()"

    batch = history.batches["retried"]
    r = runner.invoke(app, ["history", batch.id, "--data-dir", d], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "BatchCreated" in r.stdout and "BatchCompleted" in r.stdout and "completed" in r.stdout
    r = runner.invoke(
        app, ["history", batch.id, "--data-dir", d, "--as-of-version", "2"], terminal_width=200
    )
    assert r.exit_code == 0, r.output
    assert "as of version 2" in r.stdout and "BatchCompleted" not in r.stdout
    assert "in_progress" in r.stdout and "RequestSucceeded" not in r.stdout
    events = read_stream(history, batch.id)
    r = runner.invoke(
        app,
        ["history", batch.id, "--data-dir", d, "--as-of", str(events[0].recorded_at)],
        terminal_width=200,
    )
    assert r.exit_code == 0 and "validating" in r.stdout
    r = runner.invoke(app, ["history", "batch_nope", "--data-dir", d])
    assert r.exit_code == 1 and "no events" in r.output

    r = runner.invoke(app, ["stats", "--data-dir", d], terminal_width=200)
    assert r.exit_code == 0, r.output
    for title in ("Latency (ms)", "Errors by code", "Tokens by model", "fake-embed", "fake_500"):
        assert title in r.stdout
    r = runner.invoke(app, ["stats", "--data-dir", d, "-f", "json"])
    assert r.exit_code == 0 and orjson.loads(r.stdout)["errors_by_code"]["fake_500"] == 3
