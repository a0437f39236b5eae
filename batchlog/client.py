"""A Python client for Ray drivers (and `ray job submit`): batches without HTTP.

It talks to the deployment's coordinator actor directly. Input files are copied into
the data directory (which every node of the cluster must see, as the service needs
anyway), then registered; results are read from the same directory.

    # run with RAY_AUTH_MODE=token (a local Ray started by `batchlog serve` uses token auth)
    client = BatchlogClient.from_data_dir("./batchlog-data")   # finds the service's Ray
    f = client.upload("requests.jsonl")
    b = client.create(f["id"], "/v1/chat/completions")
    b = client.wait(b["id"])                                   # a progress bar while it runs
    for line in client.results(b["id"]): ...
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import ray

from actors import names
from actors.results import ERROR_KEY, is_error
from batches.domain.decider import is_terminal
from batches.domain.idempotency import resolve_idempotency_key
from batches.domain.ids import DEFAULT_TENANT, new_batch_id, new_file_id
from batches.domain.wire import CreateBatchRequest
from batches.filestore import FileStore, LocalFileStore

RAY_ADDRESS_FILE = "ray-address"


class BatchlogError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['status']} {error['code']}: {error['message']}")
        self.status: int = error["status"]
        self.code: str | None = error["code"]
        self.error = error


def _unwrap(result: Any) -> Any:
    if is_error(result):
        raise BatchlogError(result[ERROR_KEY])
    return result


class BatchlogClient:
    def __init__(
        self,
        address: str | None = None,
        namespace: str = "batchlog",
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """Join the Ray cluster at `address` (unless this process already is a driver)."""
        if not ray.is_initialized():
            ray.init(address=address or "auto", namespace=namespace, log_to_driver=False)
        self.tenant = tenant
        self.coordinator = ray.get_actor(names.COORDINATOR, namespace=namespace)
        data_dir = str(ray.get(self.coordinator.data_dir.remote()))
        database_url = ray.get(self.coordinator.database_url.remote())
        self.files: FileStore = LocalFileStore(Path(data_dir))
        if database_url:  # contents in PostgreSQL: readable from any node
            from actors.dbpassword import full_url
            from batches.pgfilestore import PgFileStore

            self.files = PgFileStore(full_url(database_url, namespace))

    @classmethod
    def from_data_dir(cls, data_dir: str | Path, **kwargs: Any) -> BatchlogClient:
        """Find the Ray of the `batchlog serve` that uses `data_dir`."""
        address, _, auth = (Path(data_dir) / RAY_ADDRESS_FILE).read_text().partition("\n")
        # Ray reads RAY_AUTH_MODE when it is imported, so it cannot be set from here.
        if auth.strip() and os.environ.get("RAY_AUTH_MODE") != auth.strip():
            raise RuntimeError(
                f"This batchlog's Ray uses auth mode {auth.strip()!r}: start the driver with "
                f"RAY_AUTH_MODE={auth.strip()} in its environment."
            )
        return cls(address=address.strip(), **kwargs)

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Copy a JSONL file into the data dir (durably) and register it, purpose batch."""
        source = Path(path)
        file_id = new_file_id()
        with self.files.writer(file_id) as writer, open(source, "rb") as fh:
            while chunk := fh.read(1 << 20):
                writer.write(chunk)
        return _unwrap(
            ray.get(
                self.coordinator.register_file.remote(
                    self.tenant,
                    file_id,
                    source.name,
                    "batch",
                    writer.bytes,
                    writer.sha256,
                    writer.line_count,
                )
            )
        )

    def create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        request = CreateBatchRequest(
            input_file_id=input_file_id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=completion_window,  # type: ignore[arg-type]
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        key = resolve_idempotency_key(request.idempotency_key, None, None)
        params = request.model_dump(mode="json", exclude={"idempotency_key", "idem_tok"})
        # Minted before the call: a retry after a coordinator crash finds this batch.
        call: Any = self.coordinator.create_batch.remote(self.tenant, params, key, new_batch_id())
        result = _unwrap(ray.get(call))
        batch: dict[str, Any] = result["batch"]
        return batch

    def get(self, batch_id: str) -> dict[str, Any]:
        return _unwrap(ray.get(self.coordinator.get_batch.remote(self.tenant, batch_id)))

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return _unwrap(ray.get(self.coordinator.cancel_batch.remote(self.tenant, batch_id)))

    def list(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        return _unwrap(ray.get(self.coordinator.list_batches.remote(self.tenant, after, limit)))

    def wait(
        self,
        batch_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Poll until the batch is terminal, showing a rich progress bar."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            disable=not progress,
        ) as bar:
            task = bar.add_task(batch_id, total=None)
            while True:
                batch = self.get(batch_id)
                counts = batch["request_counts"]
                bar.update(
                    task,
                    description=f"{batch_id} {batch['status']}",
                    total=counts["total"] or None,
                    completed=counts["completed"] + counts["failed"],
                )
                if is_terminal(batch["status"]):
                    return batch
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{batch_id} is still {batch['status']}")
                time.sleep(poll_s)

    def watch(
        self, batch_id: str, url: str, api_key: str | None = None, progress: bool = True
    ) -> dict[str, Any]:
        """Like ``wait``, fed by the service's event stream at ``url`` (…/v1), not by
        polling: see batches/watch.py."""
        from batches.watch import watch

        return watch(url, batch_id, api_key=api_key, progress=progress)

    def results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every output line, then every error line, streamed from the files."""
        batch = self.get(batch_id)
        for file_id in (batch["output_file_id"], batch["error_file_id"]):
            if file_id is not None:
                for line in self.files.lines(file_id):
                    yield orjson.loads(line)
