"""`batchlog demo`: the main job on the embedded default, end to end, with the openai SDK.

Starts `batchlog serve` with no upstream (the embedded models serve), runs a chat batch
and an embeddings batch through the official `openai` client with progress bars,
prints a few results and the chat batch's event timeline, then stops the service.
The data directory stays, so `batchlog serve` on it shows the same history.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batches.domain.decider import is_terminal
from batches.testing import Service, free_port

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
    "What is 12 times 12?",
    "Give one tip for writing clear code.",
    "What does a batch API do?",
]
TEXTS = ["event sourcing", "append-only log", "Ray actors", "DuckDB analytics"]


def _jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def chat_requests() -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"chat-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 32,
                "temperature": 0,
                "seed": 7,
            },
        }
        for i, prompt in enumerate(PROMPTS)
    ]


def embedding_requests() -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"embed-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": text},
        }
        for i, text in enumerate(TEXTS)
    ]


def run_demo(data_dir: Path, port: int | None = None) -> int:
    """The demo; returns the process exit status (non-zero when its batches did not succeed)."""
    console = Console()
    data_dir = data_dir.resolve()
    port = port or free_port()
    console.print(f"[bold]batchlog demo[/] (embedded models, data in {data_dir})")
    service = Service(data_dir, port=port)
    with console.status(
        "Starting batchlog serve: a local Ray, the coordinator, the model actors..."
    ):
        service.start(timeout=300)
    try:
        with console.status("Loading the embedded models (and checking they run on this CPU)..."):
            broken = _broken_models(service)
        if broken:
            for model, reason in broken.items():
                console.print(f"[bold red]The embedded model {model} cannot run here:[/] {reason}")
            return 1
        client = service.client()
        console.print(f"Serving on {service.url}; models: {[m.id for m in client.models.list()]}")
        batches = {}
        for name, endpoint, rows in (
            ("chat", "/v1/chat/completions", chat_requests()),
            ("embeddings", "/v1/embeddings", embedding_requests()),
        ):
            source = client.files.create(file=(f"{name}.jsonl", _jsonl(rows)), purpose="batch")
            batch = client.batches.create(
                input_file_id=source.id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata={"demo": name},
            )
            batches[name] = batch.id
            console.print(
                f"Created {name} batch {batch.id} from {source.id} ({len(rows)} requests)"
            )
        done = _watch(console, client, batches)
        _show_results(console, client, done)
        _show_timeline(console, service, done["chat"].id)
    finally:
        service.stop()
    failed = {
        name: b for name, b in done.items() if b.status != "completed" or b.request_counts.failed
    }
    console.print(f"\nThe event log and files are in [bold]{data_dir}[/].")
    console.print(
        f"Start the service again on them with:  [bold]batchlog serve --data-dir {data_dir}[/]"
    )
    console.print(
        f"Ask the history:  [bold]batchlog stats --data-dir {data_dir}[/]   "
        f"[bold]batchlog history {done['chat'].id} --data-dir {data_dir}[/]"
    )
    if failed:
        names = ", ".join(
            f"{n} ({b.status}, {b.request_counts.failed} failed)" for n, b in failed.items()
        )
        console.print(
            f"[bold red]The demo did not succeed:[/] {names}; the error lines above say why, "
            f"and `batchlog history BATCH_ID --data-dir {data_dir}` shows each batch's events."
        )
        return 1
    return 0


def _broken_models(service: Service, timeout_s: float = 300.0) -> dict[str, str]:
    """Wait until every embedded model has loaded or failed; the failed ones, with why."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(f"{service.url.removesuffix('/v1')}/health", timeout=30).json()
        models = health.get("models", {})
        if all(m["status"] != "starting" for m in models.values()) or time.monotonic() > deadline:
            return {
                name: m["reason"] or m["status"]
                for name, m in models.items()
                if m["status"] != "ready"
            }
        time.sleep(0.5)


def _watch(console: Console, client: Any, batches: dict[str, str]) -> dict[str, Any]:
    done: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {name: progress.add_task(name, total=None) for name in batches}
        while len(done) < len(batches):
            for name, batch_id in batches.items():
                if name in done:
                    continue
                batch = client.batches.retrieve(batch_id)
                counts = batch.request_counts
                progress.update(
                    tasks[name],
                    description=f"{name:<10} {batch.status}",
                    total=counts.total or None,
                    completed=counts.completed + counts.failed,
                )
                if is_terminal(batch.status):
                    done[name] = batch
            time.sleep(0.5)
    return done


def _show_results(console: Console, client: Any, done: dict[str, Any]) -> None:
    for name, batch in done.items():
        counts = batch.request_counts
        console.print(
            f"{name}: {batch.status}, {counts.completed} completed, {counts.failed} failed, "
            f"{batch.usage.total_tokens if batch.usage else 0} tokens"
        )
    chat = done["chat"]
    if chat.output_file_id:
        table = Table("custom_id", "reply", title="A few chat results")
        lines = client.files.content(chat.output_file_id).content.splitlines()
        for raw in lines[:3]:
            line = orjson.loads(raw)
            reply = line["response"]["body"]["choices"][0]["message"]["content"]
            table.add_row(line["custom_id"], reply.strip()[:100])
        console.print(table)
    embed = done["embeddings"]
    if embed.output_file_id:
        first = orjson.loads(client.files.content(embed.output_file_id).content.splitlines()[0])
        vector = first["response"]["body"]["data"][0]["embedding"]
        console.print(
            f"{first['custom_id']}: a {len(vector)}-dimensional embedding {vector[:3]}..."
        )
    for batch in done.values():
        if batch.error_file_id:
            errors = client.files.content(batch.error_file_id).content.splitlines()
            console.print(f"[red]{len(errors)} failed lines[/], first: {errors[0][:300]!r}")


def _show_timeline(console: Console, service: Service, batch_id: str) -> None:
    events = httpx.get(
        f"{service.url}/batches/{batch_id}/events", params={"limit": 1000}, timeout=30
    ).json()["data"]
    start = events[0]["recorded_at"] if events else 0.0
    table = Table("version", "+seconds", "event", "detail", title=f"Timeline of {batch_id}")
    for event in events:
        data = event["data"]
        detail = data.get("custom_id") or data.get("model") or data.get("status") or ""
        table.add_row(
            str(event["version"]), f"{event['recorded_at'] - start:.2f}", event["type"], str(detail)
        )
    console.print(table)
