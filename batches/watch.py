"""Follow a batch live over HTTP: the SSE stream of its events (docs/live.md), no polling.

    from batches.watch import watch
    batch = watch("http://127.0.0.1:8080/v1", batch_id)   # a progress bar until terminal

The client folds the events with the batch's own ``evolve`` (the decider), so the counts
it shows are the batch's state after each event, and the value returned is the Batch at
its terminal event. A dropped connection (a restarted server) is resumed with
``Last-Event-ID``: no event is seen twice or missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
from httpx_sse import SSEError, connect_sse

from batches.domain import decider
from batches.domain import events as ev


def stream_events(
    base_url: str,
    batch_id: str,
    *,
    api_key: str | None = None,
    after: int = 0,
    reconnect_delay_s: float = 0.5,
    timeout_s: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Every event of the batch from version ``after + 1`` until its terminal event,
    across reconnects. Raises TimeoutError after ``timeout_s``; a 4xx is raised at once."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{base_url.rstrip('/')}/batches/{batch_id}/events"
    last = after
    # No read timeout: the server sends a heartbeat while idle, and a dead one is a
    # transport error that ends in a reconnect.
    with httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client:
        while True:
            try:
                with connect_sse(
                    client,
                    "GET",
                    url,
                    params={"stream": "true"},
                    headers={**headers, "Last-Event-ID": str(last)},
                ) as source:
                    if 400 <= source.response.status_code < 500:
                        source.response.read()
                        source.response.raise_for_status()
                    for sse in source.iter_sse():
                        if not sse.data:
                            continue
                        item = orjson.loads(sse.data)
                        last = int(sse.id or item["version"])
                        yield item
                        if item["type"] in ev.TERMINAL_EVENT_TYPES:
                            return
            except (httpx.TransportError, SSEError, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    raise
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} did not end within {timeout_s} s")
            time.sleep(reconnect_delay_s)  # the stream ended early: reconnect and resume


def watch(
    base_url: str,
    batch_id: str,
    *,
    api_key: str | None = None,
    progress: bool = True,
    timeout_s: float | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Show a progress bar fed by the batch's event stream; return the terminal Batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    state: decider.BatchState | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task(batch_id, total=None)
        for item in stream_events(base_url, batch_id, api_key=api_key, timeout_s=timeout_s):
            state = decider.evolve(state, item["type"], item["data"])
            if on_event is not None:
                on_event(item)
            bar.update(
                task,
                description=f"{batch_id} {state.status}",
                total=state.total or None,
                completed=state.completed + state.failed,
            )
    if state is None:
        raise RuntimeError(f"batch {batch_id} sent no events")
    return decider.to_wire(state).model_dump(mode="json")
