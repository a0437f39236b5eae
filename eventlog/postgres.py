"""PostgresEventStore: the event log in PostgreSQL, for services that span machines.

Same contract as the file store (``EventLog``, tests/eventlog/test_eventlog_contract.py).

Global order without gaps: every commit takes the row lock on ``<schema>.head`` first,
reads the next position from it and writes the new head in the same transaction. The
next committer waits on that lock until the previous one has committed (or rolled back,
leaving the head as it was), so positions are handed out in commit order, contiguously:
a reader that sees position p has already been able to see every position below it.
A sequence (``bigserial``) would not give this: transaction A takes 5, B takes 6, B
commits first, a reader reads up to 6 and moves on, and then 5 appears behind it.

That lock serializes commits, so appends are gathered: the first appending thread of a
process becomes the leader and commits everything queued meanwhile in one transaction
(one WAL flush), like the file store's group commit. Each commit notifies the channel
``<schema>_appended`` with the new head; ``wait`` listens on it (catch-up without polling).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg.types.json import set_json_loads

from .errors import EventLogError, SerializationError, StoreUnavailable, WrongExpectedVersion
from .frames import dumps, new_event_id
from .groupcommit import GroupCommit, Pending
from .model import NewEvent, RecordedEvent, Snapshot, check_stream_id, make_recorded

log = logging.getLogger("eventlog")

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,40}")
_COLUMNS = "stream_id, version, type, data, recorded_at, position, event_id, metadata"
MAX_GROUP_BYTES = 256 * 2**20
T = TypeVar("T")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.head (
    id int PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
INSERT INTO {s}.head VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.streams (
    stream_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.events (
    position bigint PRIMARY KEY,
    stream_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL,
    data json NOT NULL,
    metadata json NOT NULL,
    recorded_at double precision NOT NULL,
    event_id text NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS {s}.snapshots (
    stream_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    state json NOT NULL
);
-- One call commits a whole group commit: request i appends counts[i] events (their rows
-- follow on in types/datas/metas/eids) to sids[i] if the stream is at expected[i].
-- Returns, per request, the new version, or -1 - actual version if it was refused; and
-- last, the head after the call.
CREATE OR REPLACE FUNCTION {s}.append_groups(
    sids text[], expected bigint[], counts int[],
    types text[], datas text[], metas text[], eids text[], channel text
) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    pos bigint;
    start bigint;
    at float8;
    cur bigint;
    j int := 0;
    result bigint[] := '{{}}';
BEGIN
    -- the row lock that orders commits: the next caller waits here until we commit
    SELECT position INTO pos FROM {s}.head WHERE id = 1 FOR UPDATE;
    start := pos;
    at := extract(epoch FROM clock_timestamp());
    FOR i IN 1 .. coalesce(array_length(sids, 1), 0) LOOP
        SELECT version INTO cur FROM {s}.streams WHERE stream_id = sids[i];
        cur := coalesce(cur, 0);
        IF cur <> expected[i] THEN
            result := result || (-1 - cur);
        ELSE
            INSERT INTO {s}.events
                (position, stream_id, version, type, data, metadata, recorded_at, event_id)
            SELECT pos + g, sids[i], cur + g, types[j + g], datas[j + g]::json,
                   metas[j + g]::json, at, eids[j + g]
            FROM generate_series(1, counts[i]) AS g;
            pos := pos + counts[i];
            cur := cur + counts[i];
            INSERT INTO {s}.streams (stream_id, version) VALUES (sids[i], cur)
                ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;
            result := result || cur;
        END IF;
        j := j + counts[i];
    END LOOP;
    IF pos > start THEN
        UPDATE {s}.head SET position = pos WHERE id = 1;
        PERFORM pg_notify(channel, pos::text);
    END IF;
    RETURN result || pos;
END
$$;
"""


class _Retry:
    """When a call failed for want of the server: may it try again (after a pause)?

    At least three tries (a stale connection after a server restart costs one), then
    as many as fit in ``seconds``, with backoff from 0.1 s to 2 s.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.tries = 0
        self.pause = 0.1

    def again(self) -> bool:
        self.tries += 1
        if self.tries < 3:
            return True
        if time.monotonic() + self.pause > self.deadline:
            return False
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 2.0)
        return True


class _Request(Pending):
    __slots__ = ("expected", "rows", "stream_id")

    def __init__(self, stream_id: str, rows: list[tuple[str, str, str, str]], expected: int):
        super().__init__()
        self.stream_id = stream_id
        self.rows = rows  # (event_id, type, data json, metadata json)
        self.expected = expected


def _encode(events: Sequence[NewEvent]) -> list[tuple[str, str, str, str]]:
    """Check and encode a group (the file store's rules); raises SerializationError."""
    rows = []
    size = 0
    for i, ev in enumerate(events):
        if not isinstance(ev, NewEvent):
            raise SerializationError(f"event {i} is {type(ev).__name__}, not NewEvent")
        if not isinstance(ev.type, str) or not ev.type:
            raise SerializationError(f"event {i}: type must be a non-empty str")
        if not isinstance(ev.data, dict):
            raise SerializationError(f"event {i} ({ev.type}): data must be a dict")
        meta = {} if ev.metadata is None else ev.metadata
        if not isinstance(meta, dict):
            raise SerializationError(f"event {i} ({ev.type}): metadata must be a dict or None")
        data = dumps(ev.data, "event data").decode()
        metadata = dumps(meta, "event metadata").decode()
        size += len(data) + len(metadata)
        rows.append((new_event_id(), ev.type, data, metadata))
    if size > MAX_GROUP_BYTES:
        raise SerializationError(f"event group of {size} bytes is too large")
    return rows


class PostgresEventStore:
    """An append-only store of event streams in one PostgreSQL schema. Thread-safe; any
    number of processes on any number of machines may open the same schema."""

    def __init__(self, url: str, schema: str, connect_timeout: float, retry_for: float) -> None:
        self._url = url
        self._retry_for = retry_for
        self._schema = schema
        self._channel = f"{schema}_appended"
        self._connect_timeout = connect_timeout
        self._wconn: psycopg.Connection[Any] | None = None  # the leader's, under _group.turn
        self._rconn: psycopg.Connection[Any] | None = None  # readers', under _read_lock
        self._read_lock = threading.Lock()
        self._group: GroupCommit[_Request] = GroupCommit(self._commit)
        self._closed = False
        self._seen_head = 0  # the highest head a notification or a read reported
        self._head_changed = threading.Condition()
        self._listener: threading.Thread | None = None
        s = schema
        self._q_append = f"SELECT {s}.append_groups(%s, %s, %s, %s, %s, %s, %s, %s)"
        self._q_resolve = (
            f"SELECT stream_id, version, event_id FROM {s}.events "
            "WHERE (stream_id, version) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
        )

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(
        cls,
        url: str,
        *,
        schema: str = "eventlog",
        connect_timeout: float = 10.0,
        retry_for: float = 0.0,
    ) -> PostgresEventStore:
        """Connect, creating the schema and its tables if needed.

        ``retry_for``: while the server cannot be reached, calls keep reconnecting (with
        backoff) for up to this many seconds before raising StoreUnavailable: a writer
        that should pause through a database restart (a batch actor) sets it high, one
        that should answer "unavailable" quickly (the API's) leaves it low.
        """
        if _SCHEMA.fullmatch(schema) is None:
            raise ValueError(f"invalid schema name {schema!r}: want [a-z_][a-z0-9_]{{0,40}}")
        store = cls(url, schema, connect_timeout, retry_for)
        try:
            conn = store._connect()
            with conn.transaction():
                # concurrent CREATE ... IF NOT EXISTS can still collide: one at a time
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"eventlog:{schema}"])
                conn.execute(_DDL.format(s=schema))  # type: ignore[arg-type]
            conn.autocommit = True  # the writer's: each append call is its own transaction
            store._wconn = conn
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"cannot reach the event log database: {e}") from e
        return store

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self._url,
            connect_timeout=max(1, int(self._connect_timeout)),
            application_name="batchlog-eventlog",
        )
        set_json_loads(orjson.loads, conn)
        return conn

    def close(self) -> None:
        """Close the store's connections; later calls raise EventLogError. Idempotent."""
        with self._group.turn:
            if self._closed:
                return
            self._closed = True
            with self._read_lock:
                for c in (self._wconn, self._rconn):
                    if c is not None:
                        c.close()
                self._wconn = self._rconn = None
            with self._head_changed:
                self._head_changed.notify_all()

    def __enter__(self) -> PostgresEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise EventLogError("the event store is closed")

    # ------------------------------------------------------------------ reads

    def _read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run a read on the read connection; one retry on a fresh one if it had broken."""
        with self._read_lock:
            retry = _Retry(self._retry_for)
            while True:
                self._check_usable()
                try:
                    if self._rconn is None or self._rconn.closed:
                        self._rconn = self._connect()
                        self._rconn.autocommit = True
                    return fn(self._rconn)
                except psycopg.OperationalError as e:
                    if self._rconn is not None:
                        self._rconn.close()
                    self._rconn = None
                    if not retry.again():
                        raise StoreUnavailable(f"event log database unavailable: {e}") from e

    def version(self, stream_id: str) -> int:
        """The stream's current version; 0 for an unknown stream."""
        check_stream_id(stream_id)
        q = f"SELECT version FROM {self._schema}.streams WHERE stream_id = %s"
        row = self._read(lambda c: c.execute(q, [stream_id]).fetchone())  # type: ignore[arg-type]
        return 0 if row is None else int(row[0])

    def head(self) -> int:
        """The highest global position committed."""
        q = f"SELECT position FROM {self._schema}.head WHERE id = 1"
        row = self._read(lambda c: c.execute(q).fetchone())  # type: ignore[arg-type]
        return int(row[0]) if row else 0

    def streams(self, prefix: str = "") -> list[str]:
        """The ids of all streams that start with ``prefix``, sorted."""
        q = (
            f"SELECT stream_id FROM {self._schema}.streams "
            "WHERE starts_with(stream_id, %s) ORDER BY stream_id"
        )
        rows = self._read(lambda c: c.execute(q, [prefix]).fetchall())  # type: ignore[arg-type]
        return sorted(r[0] for r in rows)

    def read(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with from_version <= version <= to_version, at most ``limit``."""
        check_stream_id(stream_id)
        lo = max(from_version, 1)
        if (to_version is not None and to_version < lo) or (limit is not None and limit <= 0):
            return []
        hi = to_version if to_version is not None else 2**62
        q = (
            f"SELECT {_COLUMNS} FROM {self._schema}.events WHERE stream_id = %s "
            "AND version BETWEEN %s AND %s ORDER BY version LIMIT %s"
        )
        rows = self._read(lambda c: c.execute(q, [stream_id, lo, hi, limit]).fetchall())  # type: ignore[arg-type]
        return [make_recorded(*r) for r in rows]

    def read_all(self, after: int = 0, limit: int | None = None) -> list[RecordedEvent]:
        """Events of all streams with position > ``after``, ascending, at most ``limit``."""
        if limit is not None and limit <= 0:
            return []
        q = (
            f"SELECT {_COLUMNS} FROM {self._schema}.events WHERE position > %s "
            "ORDER BY position LIMIT %s"
        )
        rows = self._read(lambda c: c.execute(q, [max(after, 0), limit]).fetchall())  # type: ignore[arg-type]
        out = [make_recorded(*r) for r in rows]
        if out:
            self._saw_head(out[-1].position)
        return out

    # ------------------------------------------------------------------ catch-up

    def wait(self, after: int, timeout: float | None = None) -> int:
        """Block until the head is beyond ``after`` (or ``timeout`` seconds); returns the head.

        Woken by NOTIFY from any process's commit, never by polling the table.
        """
        self._check_usable()
        self._ensure_listener()
        deadline = None if timeout is None else time.monotonic() + timeout
        head = self.head()  # anything committed before the listener started
        with self._head_changed:
            self._seen_head = max(self._seen_head, head)
            while self._seen_head <= after and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._head_changed.wait(left)
            return self._seen_head

    def _saw_head(self, head: int) -> None:
        with self._head_changed:
            if head > self._seen_head:
                self._seen_head = head
                self._head_changed.notify_all()

    def _ensure_listener(self) -> None:
        with self._head_changed:
            if self._listener is None or not self._listener.is_alive():
                ready = threading.Event()
                self._listener = threading.Thread(
                    target=self._listen, args=(ready,), name="eventlog-listen", daemon=True
                )
                self._listener.start()
            else:
                return
        ready.wait(self._connect_timeout)

    def _listen(self, ready: threading.Event) -> None:
        """LISTEN on the channel and wake waiters; reconnects when the server goes away."""
        backoff = 0.1
        while not self._closed:
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
                ) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    row = conn.execute(f"SELECT position FROM {self._schema}.head").fetchone()
                    ready.set()
                    backoff = 0.1
                    if row:
                        self._saw_head(int(row[0]))  # commits missed while reconnecting
                    while not self._closed:
                        for n in conn.notifies(timeout=1.0):  # a timeout only to see close()
                            self._saw_head(int(n.payload))
            except psycopg.OperationalError as e:
                ready.set()
                log.warning("event log listener: %s; reconnecting", e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # ------------------------------------------------------------------ append

    def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        """Append ``events`` as one atomic group; returns the stream's new version.

        ``expected_version`` must be the stream's current version (0 for a new stream), else
        WrongExpectedVersion and nothing is written. Returns once the transaction committed.
        """
        check_stream_id(stream_id)
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise TypeError("expected_version must be an int")
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if not events:
            actual = self.version(stream_id)
            if actual != expected_version:
                raise WrongExpectedVersion(stream_id, expected_version, actual)
            return actual
        rows = _encode(events)
        self._check_usable()
        req = _Request(stream_id, rows, expected_version)
        return self._group.submit(req)

    def _commit(self, batch: list[_Request]) -> None:
        """Commit a batch of appends: one function call, one transaction, one round trip.

        If the connection breaks during the call, the outcome is unknown: the leader
        reconnects and looks its first events up by (stream, version) and event id, so a
        server restart costs a retry, never a lost or doubled append.
        """
        try:
            self._check_usable()
            args = self._call_args(batch)
            retry = _Retry(self._retry_for)
            unsure = False  # a call was sent on a connection that then broke
            while True:
                self._check_usable()
                try:
                    conn = self._writer()
                    if unsure and self._resolve(conn, batch):  # did the broken call commit?
                        return
                    unsure = True
                    row = conn.execute(self._q_append, args).fetchone()  # type: ignore[arg-type]
                except psycopg.OperationalError as e:
                    if self._wconn is not None:
                        self._wconn.close()
                    self._wconn = None
                    if not retry.again():
                        raise StoreUnavailable(
                            f"event log database unavailable: {e}; the append may or may "
                            "not have been stored (retrying with the same expected version "
                            "is safe)"
                        ) from e
                    continue
                assert row is not None
                self._answer(batch, [int(x) for x in row[0]])
                return
        except BaseException as e:
            for r in batch:
                if r.error is None and r.version == 0:
                    r.error = e
        finally:
            for r in batch:
                r.done = True
                r.wake.release()

    def _writer(self) -> psycopg.Connection[Any]:
        if self._wconn is None or self._wconn.closed:
            self._wconn = self._connect()
            self._wconn.autocommit = True  # each call is its own transaction
        return self._wconn

    def _call_args(self, batch: list[_Request]) -> list[Any]:
        types, datas, metas, eids = [], [], [], []
        for r in batch:
            for eid, typ, data, meta in r.rows:
                eids.append(eid)
                types.append(typ)
                datas.append(data)
                metas.append(meta)
        return [
            [r.stream_id for r in batch],
            [r.expected for r in batch],
            [len(r.rows) for r in batch],
            types,
            datas,
            metas,
            eids,
            self._channel,
        ]

    def _answer(self, batch: list[_Request], result: list[int]) -> None:
        for r, v in zip(batch, result[:-1], strict=True):
            if v < 0:
                r.error = WrongExpectedVersion(r.stream_id, r.expected, -1 - v)
            else:
                r.version = v
        self._saw_head(result[-1])

    def _resolve(self, conn: psycopg.Connection[Any], batch: list[_Request]) -> bool:
        """After a call whose outcome is unknown: answer the batch if it committed."""
        keys = [(r.stream_id, r.expected + 1) for r in batch]
        rows = conn.execute(
            self._q_resolve,  # type: ignore[arg-type]
            [[k[0] for k in keys], [k[1] for k in keys]],
        ).fetchall()
        found = {(sid, int(v)): eid for sid, v, eid in rows}
        mine = [found.get(k) == r.rows[0][0] for k, r in zip(keys, batch, strict=True)]
        if not any(mine):
            return False  # the transaction did not commit: call again
        for r, ok in zip(batch, mine, strict=True):
            if ok:
                r.version = r.expected + len(r.rows)
            else:  # refused in that transaction (it is all or nothing)
                r.error = WrongExpectedVersion(r.stream_id, r.expected, self.version(r.stream_id))
        return True

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, stream_id: str, version: int, state: dict[str, Any]) -> None:
        """Store ``state`` as the fold of the stream's events 1..version (replaces the old)."""
        check_stream_id(stream_id)
        current = self.version(stream_id)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= current:
            raise ValueError(
                f"snapshot version {version!r} for stream {stream_id!r} must be in 1..{current}"
            )
        if not isinstance(state, dict):
            raise TypeError("snapshot state must be a dict")
        body = dumps(state, "snapshot state").decode()
        q = (
            f"INSERT INTO {self._schema}.snapshots (stream_id, version, state) "
            "VALUES (%s, %s, %s::json) ON CONFLICT (stream_id) DO UPDATE "
            "SET version = excluded.version, state = excluded.state"
        )
        self._read(lambda c: c.execute(q, [stream_id, version, body]))

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's latest snapshot; None if there is none."""
        check_stream_id(stream_id)
        q = (
            f"SELECT s.version, s.state, coalesce(t.version, 0) FROM {self._schema}.snapshots s "
            f"LEFT JOIN {self._schema}.streams t USING (stream_id) WHERE s.stream_id = %s"
        )
        row = self._read(lambda c: c.execute(q, [stream_id]).fetchone())  # type: ignore[arg-type]
        if row is None:
            return None
        version, state, current = int(row[0]), row[1], int(row[2])
        if version > current or not isinstance(state, dict):
            log.warning(
                "ignoring snapshot of %r at version %d: the stream has only %d events",
                stream_id,
                version,
                current,
            )
            return None
        return Snapshot(stream_id, version, state)
