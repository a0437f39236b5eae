"""The PostgreSQL backend beyond the shared contract: gap-free global order under
concurrent writers, catch-up by LISTEN/NOTIFY, and a server that goes away and comes back.

(The contract itself runs on this backend through ``open_log`` in test_eventlog_contract.py.)
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator

import psycopg
import pytest

from batches.testing.pgserver import PgServer
from eventlog import NewEvent, StoreUnavailable, WrongExpectedVersion
from eventlog.postgres import PostgresEventStore

_n = itertools.count()


@pytest.fixture
def schema(pg_server: PgServer) -> Iterator[str]:
    name = f"pgt{os.getpid()}_{next(_n)}"
    yield name
    with psycopg.connect(pg_server.url, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def first_gap(seen_up_to: int, positions: list[int]) -> int | None:
    """The first position a reader that had read everything up to ``seen_up_to`` skipped."""
    expected = seen_up_to + 1
    for p in positions:
        if p != expected:
            return expected
        expected += 1
    return None


def test_read_all_never_sees_a_gap_with_concurrent_writers(pg_server, schema):
    writers, groups = 4, 40
    stores = [PostgresEventStore.open(pg_server.url, schema=schema) for _ in range(writers + 1)]
    reader = stores[-1]
    done = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, str]] = []
    gaps: list[tuple[int, list[int]]] = []

    def write(k: int) -> None:
        try:
            v = 0
            for j in range(groups):
                n = 1 + (j % 3)  # groups of 1, 2 and 3 events
                v = stores[k].append(f"w{k}", [NewEvent("T", {"k": k, "j": j})] * n, v)
        except BaseException as e:
            errors.append(e)

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()
            got = reader.read_all(after=last)
            positions = [e.position for e in got]
            if first_gap(last, positions) is not None:
                gaps.append((last, positions))
            seen.extend((e.position, e.event_id) for e in got)
            if got:
                last = got[-1].position
            if finished and not got:
                return

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    rt = threading.Thread(target=read)
    rt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    rt.join()
    try:
        assert errors == [] and gaps == []
        everything = [(e.position, e.event_id) for e in reader.read_all()]
        assert len(everything) == writers * sum(1 + (j % 3) for j in range(groups))
        assert seen == everything  # what the reader saw as it went is the final log
        assert [p for p, _ in everything] == list(range(1, len(everything) + 1))
    finally:
        for s in stores:
            s.close()


def test_a_sequence_would_leave_the_gap_the_checker_finds(pg_server, schema):
    """Why a bigserial is not enough, shown on PostgreSQL itself: B takes a later position,
    commits first, a reader moves past, and A's earlier position appears behind it. The
    same checker as above flags it (so that test can fail)."""
    with psycopg.connect(pg_server.url, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
        c.execute(f"CREATE TABLE {schema}.naive (position bigserial PRIMARY KEY, v text)")
    a = psycopg.connect(pg_server.url)
    b = psycopg.connect(pg_server.url)
    r = psycopg.connect(pg_server.url, autocommit=True)
    try:
        a.execute(f"INSERT INTO {schema}.naive (v) VALUES ('a')")  # takes position 1
        b.execute(f"INSERT INTO {schema}.naive (v) VALUES ('b')")  # takes position 2
        b.commit()
        q = f"SELECT position FROM {schema}.naive WHERE position > %s ORDER BY position"
        first = [row[0] for row in r.execute(q, [0]).fetchall()]
        assert first == [2] and first_gap(0, first) == 1
        a.commit()
        assert [row[0] for row in r.execute(q, [0]).fetchall()] == [1, 2]  # filled in later
    finally:
        for c in (a, b, r):
            c.close()


def test_wait_is_woken_by_another_handles_commit(pg_server, schema):
    waiter = PostgresEventStore.open(pg_server.url, schema=schema)
    writer = PostgresEventStore.open(pg_server.url, schema=schema)
    try:
        writer.append("x", [NewEvent("T", {})], 0)
        assert waiter.wait(after=0, timeout=30) == 1  # already there: no wait
        got: list[int] = []
        listening = threading.Event()

        def wait() -> None:
            waiter._ensure_listener()
            listening.set()
            got.append(waiter.wait(after=1, timeout=120))

        t = threading.Thread(target=wait)
        t.start()
        listening.wait()
        writer.append("x", [NewEvent("T", {})] * 2, 1)
        t.join()
        assert got == [3]
        assert waiter.wait(after=3, timeout=0.2) == 3  # nothing new: returns at the timeout
    finally:
        waiter.close()
        writer.close()


def test_groups_from_one_handle_share_transactions_but_stay_whole(pg_server, schema):
    store = PostgresEventStore.open(pg_server.url, schema=schema)
    results: list[object] = []
    barrier = threading.Barrier(12)

    def go(k: int) -> None:
        barrier.wait()
        try:
            results.append(store.append("shared", [NewEvent("T", {"k": k})] * 3, 0))
        except WrongExpectedVersion:
            results.append("refused")

    threads = [threading.Thread(target=go, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(results, key=str) == [3] + ["refused"] * 11
        assert [e.version for e in store.read("shared")] == [1, 2, 3]
        assert len({e.data["k"] for e in store.read("shared")}) == 1
    finally:
        store.close()


def test_server_restart_clear_error_then_carries_on():
    with PgServer() as server:
        store = PostgresEventStore.open(server.url, schema="restart")
        waiter = PostgresEventStore.open(server.url, schema="restart")
        try:
            store.append("s", [NewEvent("T", {"i": 1})], 0)
            assert waiter.wait(after=0, timeout=30) == 1
            server.stop()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                store.append("s", [NewEvent("T", {"i": 2})], 1)
            with pytest.raises(StoreUnavailable):
                store.read("s")
            server.start()
            # the broken connections are replaced on the next call; nothing was lost
            assert store.append("s", [NewEvent("T", {"i": 2})], 1) == 2
            assert [e.data["i"] for e in store.read("s")] == [1, 2]
            assert waiter.wait(after=1, timeout=120) == 2  # the listener reconnected too
        finally:
            store.close()
            waiter.close()


def test_a_broken_call_is_resolved_by_looking_the_events_up(pg_server, schema):
    """After a connection broke mid-call the leader looks its first events up: committed
    (answer from the log, never append twice) or not (call again)."""
    from eventlog.postgres import _encode, _Request

    store = PostgresEventStore.open(pg_server.url, schema=schema)
    try:
        store.append("other", [NewEvent("T", {})], 0)
        committed = _Request("s", _encode([NewEvent("T", {"i": 1})] * 2), 0)
        refused = _Request("other", _encode([NewEvent("T", {})]), 0)
        store._commit([committed, refused])  # as if the answer had been lost
        assert (committed.version, type(refused.error)) == (2, WrongExpectedVersion)
        lost = [_Request("s", committed.rows, 0), _Request("other", refused.rows, 0)]
        assert store._resolve(store._writer(), lost) is True
        assert lost[0].version == 2 and lost[0].error is None
        assert isinstance(lost[1].error, WrongExpectedVersion) and lost[1].error.actual == 1
        never = [_Request("s", _encode([NewEvent("T", {})]), 2)]
        assert store._resolve(store._writer(), never) is False
        assert [e.data for e in store.read("s")] == [{"i": 1}, {"i": 1}]
    finally:
        store.close()
