"""`batchlog sql`, `batchlog history`, `batchlog stats`: the event log from the command line.

They read the data directory directly (the service may be running: the log is safe for
concurrent readers) and never write to it. Mounted into `batchlog/cli.py` with
``app.add_typer(analytics_app)``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from batches.analytics import Analytics

analytics_app = typer.Typer(help="SQL over the event log: sql, history, stats.")

READ_ONLY_KEYWORDS = ("SELECT", "WITH", "DESCRIBE", "SHOW", "EXPLAIN", "PRAGMA")
_COMMENTS = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)", re.S)
_PRAGMA_TABLE_INFO = re.compile(r"PRAGMA\s+table_info\s*\(", re.I)


class ReadOnlyViolation(ValueError):
    """A statement other than the read-only ones `batchlog sql` accepts."""


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _strip_comments(query: str) -> str:
    text = query
    while True:
        m = _COMMENTS.match(text)
        if m is None or m.end() == 0:
            return text.strip()
        text = text[m.end() :]


def check_read_only(query: str) -> None:
    """Raise ReadOnlyViolation unless ``query`` is one SELECT / WITH / DESCRIBE / SHOW /
    EXPLAIN (of one of those) / ``PRAGMA table_info(...)`` statement."""
    import duckdb

    allowed = "SELECT, WITH, DESCRIBE, SHOW, EXPLAIN and PRAGMA table_info"
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise ReadOnlyViolation(f"cannot parse the query: {e}") from e
    if len(statements) != 1:
        raise ReadOnlyViolation(
            f"one statement at a time, got {len(statements)}; allowed: {allowed}"
        )
    text = _strip_comments(query)
    first = (text.split(None, 1) or [""])[0].upper().rstrip(";(")
    if first not in READ_ONLY_KEYWORDS:
        raise ReadOnlyViolation(
            f"`batchlog sql` is read-only: {first or 'this statement'} is refused; allowed: {allowed}"
        )
    kind = statements[0].type
    if first == "EXPLAIN":
        rest = re.sub(r"^EXPLAIN\s+(ANALYZE\s+|ANALYSE\s+)?", "", text, flags=re.I)
        check_read_only(rest)
    elif first == "PRAGMA":
        if _PRAGMA_TABLE_INFO.match(text) is None:
            raise ReadOnlyViolation(f"only PRAGMA table_info(...) is allowed; allowed: {allowed}")
    elif kind != duckdb.StatementType.SELECT:
        raise ReadOnlyViolation(
            f"`batchlog sql` is read-only: a {kind.name} statement is refused; allowed: {allowed}"
        )


def _data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    from batches.settings import Settings

    return Settings().data_dir


def _open(data_dir: Path | None) -> Analytics:
    from batches.analytics import connect

    path = _data_dir(data_dir)
    try:
        # BATCHLOG_DATABASE_URL: the log is in PostgreSQL (docs/scaling.md)
        return connect(path)
    except FileNotFoundError:
        typer.echo(
            f"error: no event log under {path} (set --data-dir or BATCHLOG_DATA_DIR)", err=True
        )
        raise typer.Exit(1) from None


def _console() -> Console:
    """Rich output; 160 columns when not writing to a terminal (pipes, files, tests)."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


def _micros(seconds: float) -> int:
    """Timeline times come through DuckDB as microsecond timestamps (rounded), so "as of"
    compares at that resolution: an event is included at its own printed time."""
    return round(seconds * 1_000_000)


def _iso(ts: float | datetime | None) -> str:
    if ts is None:
        return ""
    when = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, tz=UTC)
    when = when.astimezone(UTC)
    spec = "milliseconds" if when.microsecond else "seconds"
    return when.replace(tzinfo=None).isoformat(sep=" ", timespec=spec) + "Z"


def cell(value: Any) -> str:
    """A value as text in a table or CSV cell."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):
        return str(round(value, 6))
    return str(value)


def _table(
    title: str | None, columns: list[str], rows: list[tuple[Any, ...]] | list[list[Any]]
) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    return table


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The service's data directory [env BATCHLOG_DATA_DIR].",
        show_default=False,
    ),
]


@analytics_app.command("sql")
def sql_command(
    query: Annotated[str, typer.Argument(help="One SELECT / WITH / DESCRIBE / SHOW / EXPLAIN.")],
    data_dir: DataDir = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Run a read-only SQL query over the views events, batches, requests, files."""
    import duckdb
    import orjson

    try:
        check_read_only(query)
    except ReadOnlyViolation as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    with _open(data_dir) as analytics:
        try:
            columns, rows = analytics.query(query)
        except duckdb.Error as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
    if format is Format.json:
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        typer.echo(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode())
    elif format is Format.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([cell(v) for v in row] for row in rows)
        typer.echo(out.getvalue(), nl=False)
    else:
        console = _console()
        console.print(_table(None, columns, rows))
        console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="dim")


def _summary(type_: str, data: dict[str, Any]) -> str:
    if type_ in ("RequestSucceeded", "RequestFailed"):
        error = data.get("error") or {}
        body = data.get("body") or {}
        code = error.get("code") or (
            (body.get("error") or {}).get("code") if type_ == "RequestFailed" else None
        )
        parts = [
            f"line {data.get('line')} {data.get('custom_id')}",
            f"status {data.get('status_code')}",
            f"attempts {data.get('attempts')}",
            f"{data.get('latency_ms')} ms",
        ]
        if code:
            parts.append(f"error {code}")
        return ", ".join(parts)
    if type_ == "BatchCreated":
        return f"tenant {data.get('tenant')}, {data.get('endpoint')}, input {data.get('input_file_id')}"
    if type_ == "BatchValidated":
        return f"model {data.get('model')}, {data.get('total')} requests"
    if type_ == "BatchValidationFailed":
        errors = data.get("errors") or []
        codes = ", ".join(f"{e.get('code')}@{e.get('line')}" for e in errors[:3])
        return f"{len(errors)} error(s): {codes}"
    keys = ("output_file_id", "error_file_id", "unfinished")
    return ", ".join(f"{k} {data[k]}" for k in keys if data.get(k) is not None)


@analytics_app.command("history")
def history_command(
    batch_id: Annotated[str, typer.Argument(help="The batch id (batch_...).")],
    data_dir: DataDir = None,
    as_of_version: Annotated[
        int | None, typer.Option("--as-of-version", help="Show the batch as of this version.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Show the batch as of this time: unix seconds or ISO 8601 (UTC)."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Show at most this many events (first and last halves); 0: all.")
    ] = 200,
) -> None:
    """The batch's events as a table; with --as-of*, the batch as it was then."""
    from batches.domain import decider
    from batches.timetravel import parse_time, state_at

    at = None
    if as_of is not None:
        try:
            at = parse_time(as_of)
        except ValueError:
            typer.echo(f"error: --as-of {as_of!r} is neither unix seconds nor ISO 8601", err=True)
            raise typer.Exit(2) from None
    with _open(data_dir) as analytics:
        events = analytics.timeline(batch_id)
    if not events:
        typer.echo(f"error: no events for batch {batch_id}", err=True)
        raise typer.Exit(1)
    rows: list[list[Any]] = []
    state: decider.BatchState | None = None
    for event in events:
        if (as_of_version is not None and event["version"] > as_of_version) or (
            at is not None and _micros(event["recorded_at"]) > _micros(at)
        ):
            break
        state = state_at([event], state=state)
        assert state is not None
        rows.append(
            [
                event["version"],
                _iso(event["recorded_at"]),
                event["type"],
                state.status,
                f"{decider.done_count(state)}/{state.total}",
                _summary(event["type"], event["data"]),
            ]
        )
    shown = rows
    if limit and len(rows) > limit:
        half = max(limit // 2, 1)
        gap = ["…", "", f"{len(rows) - 2 * half} more", "", "", ""]
        shown = [*rows[:half], gap, *rows[-half:]]
    console = _console()
    if rows:
        title = f"{batch_id}: {len(rows)} of {len(events)} events"
        columns = ["version", "recorded_at", "type", "status", "done", "event"]
        console.print(_table(title, columns, shown))
    if as_of_version is None and at is None:
        return
    if state is None:
        console.print(f"{batch_id} did not exist yet at that point.")
        return
    wire = decider.to_wire(state).model_dump(mode="json")
    fields: list[tuple[str, Any]] = [("version", state.version)]
    for key, value in wire.items():
        if isinstance(value, dict) and key in ("request_counts", "usage"):
            fields.extend((f"{key}.{k}", v) for k, v in value.items() if not isinstance(v, dict))
        elif key.endswith("_at") and isinstance(value, int):
            fields.append((key, f"{value} ({_iso(float(value))})"))
        else:
            fields.append((key, value))
    console.print(_table(f"{batch_id} as of version {state.version}", ["field", "value"], fields))


@analytics_app.command("stats")
def stats_command(
    data_dir: DataDir = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json.")] = Format.table,
) -> None:
    """A summary: batches by status, requests/s, latency percentiles, errors, tokens."""
    import orjson

    with _open(data_dir) as analytics:
        stats = analytics.stats()
    if format is not Format.table:
        typer.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        return
    console = _console()
    req = stats["requests"]
    console.print(
        _table(
            f"{stats['events']} events, {stats['batches']} batches",
            ["status", "batches"],
            list(stats["batches_by_status"].items()),
        )
    )
    console.print(
        _table(
            "Requests",
            ["outcomes", "succeeded", "failed", "retries", "span_s", "requests/s"],
            [
                [
                    req["total"],
                    req["succeeded"],
                    req["failed"],
                    req["retries"],
                    req["span_s"],
                    req["per_s"],
                ]
            ],
        )
    )
    latency_rows = [["(all)", *_latency(stats["latency_ms"])]]
    latency_rows += [[m, *_latency(v)] for m, v in stats["latency_ms_by_model"].items()]
    console.print(
        _table("Latency (ms)", ["model", "requests", "p50", "p90", "p99", "mean"], latency_rows)
    )
    console.print(
        _table("Errors by code", ["code", "requests"], list(stats["errors_by_code"].items()))
    )
    console.print(
        _table(
            "Tokens by model",
            ["model", "requests", "input", "output", "total"],
            [
                [m, t["requests"], t["input"], t["output"], t["total"]]
                for m, t in stats["tokens_by_model"].items()
            ],
        )
    )


def _latency(v: dict[str, Any]) -> list[Any]:
    return [v["requests"], v["p50"], v["p90"], v["p99"], v["mean"]]
