"""SQL analytics over the event log: ``batches``, ``requests`` and ``files`` views in DuckDB.

    with Analytics(data_dir) as a:
        a.sql("SELECT status, count(*) FROM batches GROUP BY status")
        a.stats()                  # a summary dict
        a.timeline("batch_abc")    # every event of one batch, in order

Built on ``eventlog.query.EventQuery(data_dir / "log")``: one in-memory DuckDB (no file,
no lock, no extension download) whose ``events`` view is every event in the log. On top
of it this module keeps three typed tables, filled incrementally from ``events`` by
global position (each refresh parses only the JSON of events it has not seen), and
defines views over them:

* ``events``   every event, raw (the eventlog layer's view).
* ``batches``  one row per batch, folded from its events as the decider does.
* ``requests`` one row per request outcome (``RequestSucceeded`` / ``RequestFailed``).
* ``files``    one row per uploaded file, with ``deleted``.

Every query first looks at the log again (``refresh``), so it sees events committed a
moment ago, by any process; the service may be running. Columns are listed in
docs/analytics.md. No ray or fastapi here.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from batches import analytics_store
from batches.domain import events as ev
from eventlog.query import EventQuery, EventTail

__all__ = ["VIEWS", "Analytics", "connect"]

_OUTCOMES = f"('{ev.REQUEST_SUCCEEDED}', '{ev.REQUEST_FAILED}')"
_BATCH_STREAMS = f"stream_id LIKE '{ev.BATCH_STREAM_PREFIX}%'"
_PREFIX_LEN = len(ev.BATCH_STREAM_PREFIX) + 1  # substr() is 1-based

# The status a batch has after each lifecycle event (decider.evolve).
_STATUS_AFTER = {
    ev.BATCH_CREATED: "validating",
    ev.BATCH_VALIDATED: "in_progress",
    ev.BATCH_VALIDATION_FAILED: "failed",
    ev.BATCH_FAILED: "failed",
    ev.BATCH_FINALIZING: "finalizing",
    ev.BATCH_COMPLETED: "completed",
    ev.BATCH_CANCEL_REQUESTED: "cancelling",
    ev.BATCH_CANCELLED: "cancelled",
    ev.BATCH_EXPIRED: "expired",
}
_STATUS_CASE = (
    "CASE type " + " ".join(f"WHEN '{t}' THEN '{s}'" for t, s in _STATUS_AFTER.items()) + " END"
)

_TABLES = """
CREATE TABLE _lifecycle (
    batch_id VARCHAR, version BIGINT, position BIGINT, type VARCHAR, status VARCHAR,
    recorded_at TIMESTAMPTZ, ts BIGINT, tenant VARCHAR, endpoint VARCHAR,
    input_file_id VARCHAR, completion_window VARCHAR, idempotency_key VARCHAR,
    metadata JSON, created_at BIGINT, expires_at BIGINT, model VARCHAR, total BIGINT,
    unfinished BIGINT, output_file_id VARCHAR, error_file_id VARCHAR, errors JSON
);
CREATE TABLE _requests (
    batch_id VARCHAR, tenant VARCHAR, endpoint VARCHAR, model VARCHAR,
    custom_id VARCHAR, line BIGINT, request_id VARCHAR, ok BOOLEAN,
    status_code INTEGER, error_code VARCHAR, error_message VARCHAR,
    attempts INTEGER, latency_ms DOUBLE, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    input_tokens BIGINT, output_tokens BIGINT, total_tokens BIGINT,
    cached_tokens BIGINT, reasoning_tokens BIGINT,
    version BIGINT, position BIGINT, recorded_at TIMESTAMPTZ
);
CREATE TABLE _file_events (
    position BIGINT, type VARCHAR, recorded_at TIMESTAMPTZ, file_id VARCHAR,
    tenant VARCHAR, filename VARCHAR, purpose VARCHAR, bytes BIGINT, lines BIGINT,
    sha256 VARCHAR, created_at BIGINT, expires_at BIGINT, ts BIGINT
);
"""

_LIFECYCLE_SHAPE = orjson.dumps(
    {
        "at": "BIGINT",
        "batch_id": "VARCHAR",
        "tenant": "VARCHAR",
        "endpoint": "VARCHAR",
        "input_file_id": "VARCHAR",
        "completion_window": "VARCHAR",
        "idempotency_key": "VARCHAR",
        "created_at": "BIGINT",
        "expires_at": "BIGINT",
        "model": "VARCHAR",
        "total": "BIGINT",
        "unfinished": "BIGINT",
        "output_file_id": "VARCHAR",
        "error_file_id": "VARCHAR",
    }
).decode()

# __SRC__: the table of events to fold; __LIFECYCLE__, __REQUESTS__, __FILES__: the
# tables they go into (the lookups of _lifecycle and _requests see every row folded so far)
_INSERT_LIFECYCLE = f"""
INSERT INTO __LIFECYCLE__
SELECT substr(stream_id, {_PREFIX_LEN}), version, position, type, {_STATUS_CASE},
       recorded_at, coalesce(d.at, d.created_at), d.tenant, d.endpoint, d.input_file_id,
       d.completion_window, d.idempotency_key, data -> '$.metadata', d.created_at,
       d.expires_at, d.model, d.total, d.unfinished, d.output_file_id, d.error_file_id,
       data -> '$.errors'
FROM (
    SELECT *, json_transform(data, '{_LIFECYCLE_SHAPE}') AS d
    FROM __SRC__
    WHERE position > $lo AND position <= $hi AND {_BATCH_STREAMS} AND type NOT IN {_OUTCOMES}
)
"""

_OUTCOME_SHAPE = orjson.dumps(
    {
        "line": "BIGINT",
        "custom_id": "VARCHAR",
        "request_id": "VARCHAR",
        "status_code": "INTEGER",
        "error": {"code": "VARCHAR", "message": "VARCHAR"},
        "body": {"error": {"code": "VARCHAR", "type": "VARCHAR", "message": "VARCHAR"}},
        "attempts": "INTEGER",
        "latency_ms": "DOUBLE",
        "started_at": "DOUBLE",
        "finished_at": "DOUBLE",
        "usage": {
            "input_tokens": "BIGINT",
            "output_tokens": "BIGINT",
            "total_tokens": "BIGINT",
            "cached_tokens": "BIGINT",
            "reasoning_tokens": "BIGINT",
        },
    }
).decode()

# One row per (batch, line): a redelivered outcome that reached the log is dropped, as
# decider.evolve ignores it. {dedupe} also drops lines already in _requests.
_INSERT_REQUESTS = f"""
INSERT INTO __REQUESTS__
WITH n AS (
    SELECT substr(stream_id, {_PREFIX_LEN}) AS batch_id, version, position, recorded_at,
           type = '{ev.REQUEST_SUCCEEDED}' AS ok,
           json_transform(data, '{_OUTCOME_SHAPE}') AS d
    FROM __SRC__
    WHERE position > $lo AND position <= $hi AND {_BATCH_STREAMS} AND type IN {_OUTCOMES}
), info AS (
    SELECT batch_id,
           any_value(tenant) FILTER (WHERE type = '{ev.BATCH_CREATED}') AS tenant,
           any_value(endpoint) FILTER (WHERE type = '{ev.BATCH_CREATED}') AS endpoint,
           any_value(model) FILTER (WHERE type = '{ev.BATCH_VALIDATED}') AS model
    FROM _lifecycle
    WHERE batch_id IN (SELECT DISTINCT batch_id FROM n)
    GROUP BY batch_id
)
SELECT n.batch_id, info.tenant, info.endpoint, info.model,
       d.custom_id, d.line, d.request_id, ok, d.status_code,
       CASE WHEN NOT ok THEN coalesce(
           d.error.code, d.body.error.code, d.body.error.type,
           'http_' || d.status_code::VARCHAR, 'error') END,
       CASE WHEN NOT ok THEN coalesce(d.error.message, d.body.error.message) END,
       coalesce(d.attempts, 0), coalesce(d.latency_ms, 0),
       to_timestamp(d.started_at), to_timestamp(d.finished_at),
       coalesce(d.usage.input_tokens, 0), coalesce(d.usage.output_tokens, 0),
       coalesce(d.usage.total_tokens, 0), coalesce(d.usage.cached_tokens, 0),
       coalesce(d.usage.reasoning_tokens, 0),
       n.version, n.position, n.recorded_at
FROM n LEFT JOIN info USING (batch_id)
{{dedupe}}
QUALIFY row_number() OVER (PARTITION BY n.batch_id, d.line ORDER BY n.position) = 1
"""
_DEDUPE_EXISTING = """
WHERE NOT EXISTS (
    SELECT 1 FROM _requests r WHERE r.batch_id = n.batch_id AND r.line = n.d.line
)
"""

_FILE_SHAPE = orjson.dumps(
    {
        "file_id": "VARCHAR",
        "tenant": "VARCHAR",
        "filename": "VARCHAR",
        "purpose": "VARCHAR",
        "bytes": "BIGINT",
        "lines": "BIGINT",
        "sha256": "VARCHAR",
        "created_at": "BIGINT",
        "expires_at": "BIGINT",
        "at": "BIGINT",
    }
).decode()

_INSERT_FILES = f"""
INSERT INTO __FILES__
SELECT position, type, recorded_at, d.file_id, d.tenant, d.filename, d.purpose, d.bytes,
       d.lines, d.sha256, d.created_at, d.expires_at, d.at
FROM (
    SELECT *, json_transform(data, '{_FILE_SHAPE}') AS d
    FROM __SRC__
    WHERE position > $lo AND position <= $hi AND stream_id = '{ev.FILES_STREAM}'
      AND type IN ('{ev.FILE_UPLOADED}', '{ev.FILE_DELETED}', '{ev.FILE_EXPIRED}')
)
"""


_TABLE_NAMES = ("_lifecycle", "_requests", "_file_events")

# The log is folded this many bytes at a time (one transaction each; eventlog.query.EventTail):
# parsing the events' JSON costs DuckDB ~20x the bytes, so this bounds a refresh's memory
# whatever the backlog (issue 14: a 10,000-request segment at once peaked at 300 MiB).
CHUNK_BYTES = 1 << 19
# a checksum of the fold: a persisted file folded by other SQL is rebuilt
_SCHEMA = zlib.crc32(
    (_TABLES + _INSERT_LIFECYCLE + _INSERT_REQUESTS + _DEDUPE_EXISTING + _INSERT_FILES).encode()
)


def _fold(
    con: duckdb.DuckDBPyConnection, src: str, lo: int, hi: int, into: tuple[str, ...]
) -> None:
    """Fold the events of table ``src`` (positions lo < p <= hi) into the tables ``into``
    (lifecycle, requests, file events). The caller runs it in a transaction."""
    params = {"lo": lo, "hi": hi}

    def sql(template: str) -> str:
        return (
            template.replace("__SRC__", src)
            .replace("__LIFECYCLE__", into[0])
            .replace("__REQUESTS__", into[1])
            .replace("__FILES__", into[2])
        )

    con.execute(sql(_INSERT_LIFECYCLE), params)
    dedupe = _DEDUPE_EXISTING if lo > 0 else ""
    con.execute(sql(_INSERT_REQUESTS).replace("{dedupe}", dedupe), params)
    con.execute(sql(_INSERT_FILES), params)


def _first(type_: str, column: str = "ts") -> str:
    return f"max({column}) FILTER (WHERE type = '{type_}')"


_VIEWS = f"""
CREATE OR REPLACE VIEW requests AS
SELECT batch_id, tenant, endpoint, model, custom_id, line, request_id, ok, status_code,
       error_code, error_message, attempts, greatest(attempts - 1, 0) AS retries,
       latency_ms, started_at, finished_at, input_tokens, output_tokens, total_tokens,
       cached_tokens, reasoning_tokens, version, position, recorded_at
FROM _requests;

CREATE OR REPLACE VIEW batches AS
WITH l AS (
    SELECT batch_id,
           arg_max(status, version) FILTER (WHERE status IS NOT NULL) AS status,
           {_first(ev.BATCH_CREATED, "tenant")} AS tenant,
           {_first(ev.BATCH_CREATED, "endpoint")} AS endpoint,
           {_first(ev.BATCH_VALIDATED, "model")} AS model,
           {_first(ev.BATCH_CREATED, "input_file_id")} AS input_file_id,
           max(output_file_id) AS output_file_id,
           max(error_file_id) AS error_file_id,
           {_first(ev.BATCH_CREATED, "completion_window")} AS completion_window,
           {_first(ev.BATCH_CREATED, "idempotency_key")} AS idempotency_key,
           {_first(ev.BATCH_CREATED, "metadata")} AS metadata,
           {_first(ev.BATCH_CREATED, "created_at")} AS created_at,
           {_first(ev.BATCH_VALIDATED)} AS in_progress_at,
           {_first(ev.BATCH_FINALIZING)} AS finalizing_at,
           {_first(ev.BATCH_COMPLETED)} AS completed_at,
           {_first(ev.BATCH_VALIDATION_FAILED)} AS failed_at,
           {_first(ev.BATCH_EXPIRED)} AS expired_at,
           {_first(ev.BATCH_CANCEL_REQUESTED)} AS cancelling_at,
           {_first(ev.BATCH_CANCELLED)} AS cancelled_at,
           {_first(ev.BATCH_CREATED, "expires_at")} AS expires_at,
           coalesce({_first(ev.BATCH_VALIDATED, "total")}, 0) AS total,
           coalesce(sum(unfinished), 0) AS unfinished,
           {_first(ev.BATCH_VALIDATION_FAILED, "errors")} AS errors,
           {_first(ev.BATCH_CREATED, "epoch(recorded_at)")} AS t_created,
           {_first(ev.BATCH_VALIDATED, "epoch(recorded_at)")} AS t_validated,
           {_first(ev.BATCH_VALIDATION_FAILED, "epoch(recorded_at)")} AS t_invalid,
           {_first(ev.BATCH_FINALIZING, "epoch(recorded_at)")} AS t_finalizing,
           {_first(ev.BATCH_COMPLETED, "epoch(recorded_at)")} AS t_completed,
           {_first(ev.BATCH_CANCEL_REQUESTED, "epoch(recorded_at)")} AS t_cancelling,
           {_first(ev.BATCH_CANCELLED, "epoch(recorded_at)")} AS t_cancelled,
           {_first(ev.BATCH_EXPIRED, "epoch(recorded_at)")} AS t_expired,
           max(version) AS version,
           max(recorded_at) AS last_event_at
    FROM _lifecycle
    GROUP BY batch_id
), r AS (
    SELECT batch_id,
           count(*) AS outcomes,
           count(*) FILTER (WHERE ok) AS succeeded,
           count(*) FILTER (WHERE NOT ok) AS failed,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(total_tokens) AS total_tokens,
           sum(cached_tokens) AS cached_tokens,
           sum(reasoning_tokens) AS reasoning_tokens,
           sum(greatest(attempts - 1, 0)) AS retries,
           max(version) AS version,
           max(recorded_at) AS last_event_at
    FROM _requests
    GROUP BY batch_id
)
SELECT l.batch_id, l.tenant, l.endpoint, l.model, l.status,
       l.input_file_id, l.output_file_id, l.error_file_id, l.completion_window,
       l.idempotency_key, l.metadata, l.errors,
       to_timestamp(l.created_at) AS created_at,
       to_timestamp(l.in_progress_at) AS in_progress_at,
       to_timestamp(l.finalizing_at) AS finalizing_at,
       to_timestamp(l.completed_at) AS completed_at,
       to_timestamp(l.failed_at) AS failed_at,
       to_timestamp(l.expired_at) AS expired_at,
       to_timestamp(l.cancelling_at) AS cancelling_at,
       to_timestamp(l.cancelled_at) AS cancelled_at,
       to_timestamp(l.expires_at) AS expires_at,
       l.total AS requests_total,
       coalesce(r.succeeded, 0) AS requests_completed,
       coalesce(r.failed, 0) + l.unfinished AS requests_failed,
       coalesce(r.outcomes, 0) AS outcomes,
       l.unfinished,
       coalesce(r.input_tokens, 0)::BIGINT AS input_tokens,
       coalesce(r.output_tokens, 0)::BIGINT AS output_tokens,
       coalesce(r.total_tokens, 0)::BIGINT AS total_tokens,
       coalesce(r.cached_tokens, 0)::BIGINT AS cached_tokens,
       coalesce(r.reasoning_tokens, 0)::BIGINT AS reasoning_tokens,
       coalesce(r.retries, 0)::BIGINT AS retries,
       coalesce(l.t_validated, l.t_invalid, l.t_cancelling, l.t_expired) - l.t_created
           AS validating_s,
       coalesce(l.t_finalizing, l.t_cancelling, l.t_expired) - l.t_validated AS in_progress_s,
       l.t_completed - l.t_finalizing AS finalizing_s,
       l.t_cancelled - l.t_cancelling AS cancelling_s,
       coalesce(l.t_completed, l.t_invalid, l.t_cancelled, l.t_expired) - l.t_created
           AS duration_s,
       greatest(l.version, coalesce(r.version, 0)) AS version,
       greatest(l.last_event_at, r.last_event_at) AS last_event_at
FROM l LEFT JOIN r USING (batch_id);

CREATE OR REPLACE VIEW files AS
WITH u AS (
    SELECT * FROM _file_events WHERE type = '{ev.FILE_UPLOADED}'
    QUALIFY row_number() OVER (PARTITION BY file_id ORDER BY position DESC) = 1
), d AS (
    SELECT file_id, max(position) AS position, arg_max(ts, position) AS ts,
           arg_max(type, position) AS how
    FROM _file_events WHERE type IN ('{ev.FILE_DELETED}', '{ev.FILE_EXPIRED}')
    GROUP BY file_id
)
SELECT u.file_id, u.tenant, u.filename, u.purpose, u.bytes, u.lines, u.sha256,
       to_timestamp(u.created_at) AS created_at, to_timestamp(u.expires_at) AS expires_at,
       coalesce(d.position > u.position, false) AS deleted,
       CASE WHEN d.position > u.position THEN to_timestamp(d.ts) END AS deleted_at,
       coalesce(d.position > u.position AND d.how = '{ev.FILE_EXPIRED}', false) AS expired
FROM u LEFT JOIN d USING (file_id);
"""

# name -> one line, for docs and the CLI.
VIEWS: dict[str, str] = {
    "events": "every event, raw: stream_id, version, type, recorded_at, data, position, ...",
    "batches": "one row per batch: status, timestamps, request counts, tokens, phases, retries",
    "requests": "one row per request outcome: ok, status_code, error_code, attempts, latency",
    "files": "one row per uploaded file: file_id, tenant, purpose, bytes, deleted",
}


class Analytics:
    """An in-memory DuckDB with the ``events``, ``batches``, ``requests`` and ``files``
    views over the log in ``data_dir/log``. Read-only towards the log; takes no lock on it.

    The typed tables come from ``data_dir/analytics/tables.duckdb`` (analytics_store.py),
    caught up and attached read-only at connect, plus what the log has beyond it, folded
    in memory; ``persist=False`` (or a data dir it cannot write) folds the whole log in
    memory instead. ``events`` is read from the log on first use.
    """

    def __init__(
        self, data_dir: str | Path, *, log_dir: str | Path | None = None, persist: bool = True
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir / "log"
        if not (self.log_dir / "segments").is_dir():
            hint = ""
            if os.environ.get("BATCHLOG_DATABASE_URL"):
                hint = (
                    " (BATCHLOG_DATABASE_URL is set: the log is in PostgreSQL; use "
                    "batches.analytics.connect() or PgAnalytics(url))"
                )
            raise FileNotFoundError(f"no event log at {self.log_dir}{hint}")
        self._query = EventQuery(self.log_dir, lazy=True)
        self._con = self._query.connection
        self._tail = EventTail(self.log_dir, chunk_bytes=CHUNK_BYTES)
        self._seen = 0  # the highest global position folded into the tables
        base = None
        if persist:
            base = analytics_store.open_persisted(
                self.data_dir,
                self.log_dir,
                self._con,
                EventTail(self.log_dir, chunk_bytes=CHUNK_BYTES),
                lambda con, src, lo, hi: _fold(con, src, lo, hi, _TABLE_NAMES),
                _TABLES,
                _SCHEMA,
            )
        self._into: tuple[str, ...] = _TABLE_NAMES
        if base is None:
            self._con.execute(_TABLES)
        else:
            self._seen, segment, offset = base
            self._tail.seed(segment, offset)
            self._into = tuple(f"{name}_t" for name in _TABLE_NAMES)
            ddl = _TABLES
            for name, tail in zip(_TABLE_NAMES, self._into, strict=True):
                ddl = ddl.replace(f"CREATE TABLE {name} ", f"CREATE TABLE {tail} ")
                ddl += (
                    f"; CREATE VIEW {name} AS SELECT * FROM {analytics_store.ATTACHED}.{name} "
                    f"UNION ALL SELECT * FROM {tail}"
                )
            self._con.execute(ddl)
        self._con.execute(_VIEWS)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection itself (call ``refresh()`` first to see new events)."""
        return self._con

    @property
    def position(self) -> int:
        """The highest global position the views include."""
        return self._seen

    def refresh(self) -> int:
        """Look at the log again and fold new events into the typed tables (not the raw
        ``events`` view: see ``_refresh_for``); returns how many."""
        start = self._seen
        while True:
            hi = self._tail.fetch(self._con, self._seen, "_src")
            if hi <= self._seen:
                return self._seen - start
            self._con.execute("BEGIN")
            try:
                _fold(self._con, "_src", self._seen, hi, self._into)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._seen = hi

    # -- queries ---------------------------------------------------------------------

    def _refresh_for(self, query: str) -> None:
        """Refresh before ``query``; a query of the raw ``events`` view alone does not need
        the typed tables brought up to date (the first such query skips building them)."""
        try:
            names = {n.lower() for n in self._con.get_table_names(query)}
        except duckdb.Error:
            names = {"?"}
        raw = {"events", "_live"}  # the view resolves to its table
        if names & raw or "?" in names:
            self._query.refresh()
        if names - raw:
            self.refresh()

    def query(
        self, query: str, params: Any = None, *, refresh: bool = True
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of ``query``."""
        if refresh:
            self._refresh_for(query)
        cursor = self._con.execute(query, params)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()

    def sql(self, query: str, params: Any = None, *, refresh: bool = True) -> list[tuple[Any, ...]]:
        """Every row of ``query`` (with optional ``params``), after a refresh."""
        return self.query(query, params, refresh=refresh)[1]

    def dicts(
        self, query: str, params: Any = None, *, refresh: bool = True
    ) -> list[dict[str, Any]]:
        """Rows of ``query`` as dicts keyed by column name."""
        columns, rows = self.query(query, params, refresh=refresh)
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def arrow(self, query: str, params: Any = None, *, refresh: bool = True) -> pa.Table:
        """``query`` as a pyarrow Table."""
        if refresh:
            self._refresh_for(query)
        return self._con.sql(query, params=params).to_arrow_table()

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The ``batches`` row of one batch, or None."""
        rows = self.dicts("SELECT * FROM batches WHERE batch_id = ?", [batch_id])
        return rows[0] if rows else None

    def timeline(
        self, batch_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The batch's events in stream order: version, type, recorded_at (unix seconds),
        position, event_id, data (a dict). ``after``/``limit`` page by version."""
        self._query.refresh()
        query = (
            "SELECT version, type, epoch(recorded_at), position, event_id, data FROM events "
            "WHERE stream_id = ? AND version > ? ORDER BY version"
        )
        params: list[Any] = [ev.batch_stream(batch_id), after]
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [
            {
                "version": version,
                "type": type_,
                "recorded_at": recorded_at,
                "position": position,
                "event_id": event_id,
                "data": orjson.loads(data),
            }
            for version, type_, recorded_at, position, event_id, data in self._con.execute(
                query, params
            ).fetchall()
        ]

    def stats(self) -> dict[str, Any]:
        """A summary of the whole history (see docs/analytics.md for the keys)."""
        self.refresh()

        def rows(query: str) -> list[tuple[Any, ...]]:
            return self._con.execute(query).fetchall()

        events = self._seen  # positions are 1..head, no gaps
        by_status = dict(
            rows(
                "SELECT status, count(*) FROM (SELECT arg_max(status, version) "
                "FILTER (WHERE status IS NOT NULL) AS status FROM _lifecycle GROUP BY batch_id) "
                "GROUP BY 1 ORDER BY 2 DESC, 1"
            )
        )
        # One pass over the outcomes: the whole history (model NULL) and each model.
        groups = rows(
            "SELECT CASE WHEN grouping(m) = 0 THEN m END, count(*), "
            "count(*) FILTER (WHERE ok), coalesce(sum(greatest(attempts - 1, 0)), 0), "
            "epoch(min(started_at)), epoch(max(finished_at)), "
            "quantile_cont(latency_ms, [0.5, 0.9, 0.99]), avg(latency_ms), "
            "coalesce(sum(input_tokens), 0)::BIGINT, coalesce(sum(output_tokens), 0)::BIGINT, "
            "coalesce(sum(total_tokens), 0)::BIGINT "
            "FROM (SELECT *, coalesce(model, '?') AS m FROM _requests) "
            "GROUP BY GROUPING SETS ((), (m)) ORDER BY grouping(m) DESC, 1"
        )
        _, total, ok, retries, first, last, *_ = groups[0]
        span = float(last - first) if total and last is not None and first is not None else 0.0
        latency = _percentiles([(g[0], g[1], g[6], g[7]) for g in groups])
        errors: dict[str, int] = {}
        for code, n in rows(
            "SELECT error_code, count(*) FROM _requests WHERE NOT ok GROUP BY 1 "
            "UNION ALL SELECT CASE type WHEN "
            f"'{ev.BATCH_CANCELLED}' THEN 'batch_cancelled' ELSE 'batch_expired' END, "
            f"sum(unfinished) FROM _lifecycle WHERE type IN ('{ev.BATCH_CANCELLED}', "
            f"'{ev.BATCH_EXPIRED}') AND unfinished > 0 GROUP BY 1"
        ):
            errors[code] = errors.get(code, 0) + int(n)
        tokens = {
            g[0]: {"requests": g[1], "input": g[8], "output": g[9], "total": g[10]}
            for g in groups[1:]
        }
        return {
            "position": self._seen,
            "events": events,
            "batches": sum(by_status.values()),
            "batches_by_status": by_status,
            "requests": {
                "total": total,
                "succeeded": ok,
                "failed": total - ok,
                "retries": int(retries),
                "span_s": span,
                "per_s": total / span if span > 0 else None,
            },
            "latency_ms": latency.pop(None, dict(_NO_LATENCY)),
            "latency_ms_by_model": {str(k): v for k, v in latency.items()},
            "errors_by_code": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
            "tokens_by_model": tokens,
        }

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        self._query.close()

    def __enter__(self) -> Analytics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_NO_LATENCY: dict[str, Any] = {"requests": 0, "p50": None, "p90": None, "p99": None, "mean": None}


def _percentiles(rows: list[tuple[Any, ...]]) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for key, n, quantiles, mean in rows:
        if not n:
            out[key] = dict(_NO_LATENCY)
            continue
        p50, p90, p99 = quantiles
        out[key] = {"requests": n, "p50": p50, "p90": p90, "p99": p99, "mean": mean}
    return out


def connect(data_dir: str | Path | None = None, *, database_url: str | None = None) -> Analytics:
    """The views over this deployment's log, wherever it is: in PostgreSQL when
    ``database_url`` (default ``BATCHLOG_DATABASE_URL``) is set (``PgAnalytics``), else
    ``Analytics(data_dir)`` over ``data_dir/log`` (default ``BATCHLOG_DATA_DIR``)."""
    from batches.settings import Settings

    settings = Settings()
    url = database_url or settings.database_url
    if url:
        from batches.pganalytics import PgAnalytics

        return PgAnalytics(url)
    return Analytics(settings.data_dir if data_dir is None else data_dir)


def update_persisted(data_dir: str | Path, *, log_dir: str | Path | None = None) -> bool:
    """Bring ``data_dir/analytics/tables.duckdb`` up to date with the log, and nothing
    else (no connection to query; the coordinator's refresh child). False when it could
    not (the file attached by a connection, a read-only data dir)."""
    data = Path(data_dir)
    logs = Path(log_dir) if log_dir is not None else data / "log"
    if not (logs / "segments").is_dir():
        raise FileNotFoundError(f"no event log at {logs}")
    return analytics_store.update(
        data,
        logs,
        EventTail(logs, chunk_bytes=CHUNK_BYTES),
        lambda con, src, lo, hi: _fold(con, src, lo, hi, _TABLE_NAMES),
        _TABLES,
        _SCHEMA,
    )


if __name__ == "__main__":  # python -m batches.analytics DATA_DIR: bring the tables up to date
    import sys

    update_persisted(sys.argv[1])
