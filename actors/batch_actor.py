"""One actor per running batch: the only writer of its stream while it lives.

It rebuilds its state from the log (snapshot + tail), validates the input file,
sends the unfinished lines to an executor in chunks, records outcomes in groups,
and writes the output and error files at the end. Every step is decided by the pure
decider; this class only loads, appends and performs effects. Killed at any point, a
new incarnation continues from the log, and a line whose outcome is in the log is
never sent again. When the batch is terminal `run` returns and the coordinator lets
the actor go (passivation).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import ray

from actors import names
from actors.dbpassword import actor_settings
from actors.dispatch import Dispatcher
from actors.priority import lower_priority
from actors.results import ERROR_KEY, error_result, is_error, raise_if_error
from batches.backends import ACTOR_RETRY_S, open_event_log, open_file_store
from batches.domain import decider, line_errors
from batches.domain import messages as msg
from batches.domain.errors import DomainError
from batches.domain.events import batch_stream
from batches.domain.executor import Outcome, WorkItem, make_outcome
from batches.domain.outputs import encode_line, unfinished_line
from batches.domain.progress import Step, next_step
from batches.domain.validation import ValidationLimits, iter_requests, validate_input
from batches.filestore import FileStore
from batches.results import recorded_lines
from batches.settings import Settings
from eventlog import EventLog, NewEvent

log = logging.getLogger("batchlog.batch")

Events = list[tuple[str, dict[str, Any]]]


def result_file_id(batch_id: str, kind: str) -> str:
    """Deterministic, so writing the files again after a crash replaces, not duplicates."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


class BatchActor:
    """Runs one batch at a time. Kept between batches (`actors/runners.py`): `run` and
    `cancel` name the batch, and an idle actor (`batch_id` None here, or its last batch
    finished) adopts it from the log; so does a new incarnation after a crash."""

    def __init__(self, batch_id: str | None, settings: dict[str, Any]) -> None:
        self.settings = actor_settings(settings)
        lower_priority(self.settings.bulk_nice)  # API answers first (actors/priority.py)
        # with PostgreSQL, appends pause (reconnecting) while the database is away
        self.store: EventLog = open_event_log(self.settings, retry_for=ACTOR_RETRY_S)
        self.files: FileStore = open_file_store(self.settings)
        self.dispatcher = Dispatcher(self.settings)
        self.batch_id = ""  # none yet
        self._task: asyncio.Task[dict[str, Any]] | None = None
        if batch_id is not None:
            self._adopt(batch_id)

    def _adopt(self, batch_id: str) -> None:
        self.batch_id = ""  # until its state is loaded: a failed load holds nothing
        self.stream = batch_stream(batch_id)
        self.state = self._load()
        self.batch_id = batch_id
        self._snapshot_version = self.state.version
        self._stop = asyncio.Event()
        self._task = None
        # one append at a time: each carries the version we hold
        self._commit_lock = asyncio.Lock()
        self._arrived: list[Outcome] = []  # back from the executor, not yet in the log
        self._recorder: asyncio.Task[None] | None = None
        self._unanswered = 0  # requests handed to an executor and not back yet
        self._answered = asyncio.Event()  # some came back: room for another chunk?

    def _hold(self, batch_id: str | None) -> None:
        """Make `batch_id` this actor's batch, unless it is running another one."""
        if batch_id is None or batch_id == self.batch_id:
            if not self.batch_id:
                raise LookupError("this batch actor holds no batch")
            return
        if self._task is not None and not self._task.done():
            raise RuntimeError(f"batch actor busy with {self.batch_id}, asked for {batch_id}")
        self._adopt(batch_id)

    def current(self) -> str | None:
        """The batch this actor holds now; None when idle (a coordinator that Ray
        restarted asks, to join running batches instead of starting them twice)."""
        if not self.batch_id or (self._task is not None and self._task.done()):
            return None
        return self.batch_id

    # -- the log -------------------------------------------------------------------

    def _load(self) -> decider.BatchState:
        snapshot = self.store.load_snapshot(self.stream)
        state = decider.state_from_dict(snapshot.state) if snapshot else None
        start = snapshot.version + 1 if snapshot else 1
        while True:
            events = self.store.read(self.stream, from_version=start, limit=5_000)
            if not events:
                break
            state = decider.fold(((e.type, e.data) for e in events), state)
            start = events[-1].version + 1
        if state is None:
            raise LookupError(f"stream {self.stream} has no events")
        return state

    def _commit(self, events: Events) -> None:
        """Append with the version we hold: a zombie incarnation is refused, not merged."""
        if not events:
            return
        self.store.append(
            self.stream,
            [NewEvent(t, d) for t, d in events],
            expected_version=self.state.version,
        )
        self.state = decider.fold(events, self.state)
        due = self.state.version - self._snapshot_version >= self.settings.snapshot_every
        if due or decider.is_terminal(self.state.status):
            self.store.save_snapshot(
                self.stream, self.state.version, decider.state_to_dict(self.state)
            )
            self._snapshot_version = self.state.version

    # -- commands from the coordinator ---------------------------------------------

    async def run(self, batch_id: str | None = None) -> dict[str, Any]:
        """Drive the batch to a terminal status. Safe to call again (Ray retries it).
        `reconstructed`: Ray restarted this actor once (then it is not kept)."""
        self._hold(batch_id)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        result = await asyncio.shield(self._task)
        reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        return {**result, "reconstructed": reconstructed}

    async def cancel(self, batch_id: str | None = None) -> dict[str, Any]:
        self._hold(batch_id)
        async with self._commit_lock:  # not beside an append of outcomes
            try:
                self._commit(decider.decide(self.state, decider.Cancel(at=int(time.time()))))
            except DomainError as err:
                return error_result(err)
        self._stop.set()
        return {"status": self.state.status}

    # -- the work ------------------------------------------------------------------

    async def _run(self) -> dict[str, Any]:
        done: set[str] = set()
        while (step := next_step(self.state, time.time(), done)) is not None:
            done.add(step)
            await self._perform(step)
        return {"batch_id": self.batch_id, "status": self.state.status}

    async def _perform(self, step: Step) -> None:
        """One step of `batches.domain.progress`: the effect, then the decided events."""
        if step == "validate":
            await self._validate()
        elif step == "process":
            await self._routes()
            await self._process()
        elif step == "finalize":
            self._commit(decider.decide(self.state, decider.StartFinalizing(at=int(time.time()))))
        elif step == "expire":
            out, err = await self._write_results("batch_expired")
            expire = decider.Expire(at=int(time.time()), output_file_id=out, error_file_id=err)
            self._commit(decider.decide(self.state, expire))
        elif step == "complete":
            out, err = await self._write_results(None)
            complete = decider.Complete(at=int(time.time()), output_file_id=out, error_file_id=err)
            self._commit(decider.decide(self.state, complete))
        elif step == "finish_cancel":
            out, err = await self._write_results("batch_cancelled")
            finish = decider.FinishCancel(
                at=int(time.time()), output_file_id=out, error_file_id=err
            )
            self._commit(decider.decide(self.state, finish))

    async def _routes(self) -> dict[str, str]:
        coordinator = ray.get_actor(names.COORDINATOR, namespace=self.settings.namespace)
        owners: dict[str, str] = await coordinator.model_owners.remote()
        self.dispatcher.use_routes(owners)
        return owners

    async def _input_readable(self) -> bool:
        """The tenant's catalog has the input file (another tenant's file has bytes too:
        its id alone must not let this batch read it) and its bytes are there."""
        coordinator = ray.get_actor(names.COORDINATOR, namespace=self.settings.namespace)
        found = await coordinator.get_file.remote(self.state.tenant, self.state.input_file_id)
        if is_error(found) and found[ERROR_KEY]["status"] == 404:
            return False
        raise_if_error(found)  # the catalog could not answer (a 503): retried, not decided
        return self.files.exists(self.state.input_file_id)

    async def _validate(self) -> None:
        owners = await self._routes()
        limits = ValidationLimits(
            max_requests=self.settings.max_requests_per_batch,
            max_bytes=self.settings.max_file_bytes,
        )
        if not await self._input_readable():
            missing = msg.input_file_not_found(self.state.input_file_id)
            command = decider.RecordValidation(at=int(time.time()), errors=(missing,))
        else:
            report = await asyncio.to_thread(
                validate_input,
                self.files.lines(self.state.input_file_id, limits.max_line_bytes),
                self.state.endpoint,
                owners.__contains__,
                limits,
            )
            command = decider.RecordValidation(
                at=int(time.time()),
                model=report.model,
                total=report.total,
                errors=tuple(report.errors),
            )
        self._commit(decider.decide(self.state, command))

    def _pending_items(self) -> Iterator[WorkItem]:
        for line, request in iter_requests(self.files.lines(self.state.input_file_id)):
            if not decider.is_done(self.state, line):
                yield {"line": line, "custom_id": request["custom_id"], "body": request["body"]}

    async def _process(self) -> None:
        """Send unfinished lines in chunks until done/cancel/expiry, with at most
        chunk_size * chunks_in_flight requests unanswered: a new chunk goes out as soon as
        that many have come back, not when a whole chunk is done (its slowest request)."""
        assert self.state.model is not None
        model, endpoint = self.state.model, self.state.endpoint
        size = self.settings.chunk_size
        budget = size * self.settings.chunks_in_flight
        self._unanswered = 0
        in_flight: set[asyncio.Task[None]] = set()
        stop = asyncio.ensure_future(self._stop.wait())
        items = self._pending_items()
        exhausted = False
        try:
            while not exhausted or in_flight:
                while not exhausted and self._unanswered + size <= budget:
                    chunk = [item for _, item in zip(range(size), items, strict=False)]
                    if not chunk:
                        exhausted = True
                        break
                    self._unanswered += len(chunk)
                    in_flight.add(asyncio.ensure_future(self._run_chunk(endpoint, model, chunk)))
                if not in_flight:
                    break
                timeout = max(0.0, self.state.expires_at - time.time())
                self._answered.clear()
                answered = asyncio.ensure_future(self._answered.wait())
                try:
                    done, _ = await asyncio.wait(
                        in_flight | {stop, answered},
                        timeout=timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    answered.cancel()
                for task in done - {stop, answered}:
                    in_flight.discard(task)
                    task.result()
                if self._recorder is not None and self._recorder.done():
                    self._recorder.result()  # a bug in recording must not pass silently
                if stop.done() or time.time() >= self.state.expires_at:
                    return  # unfinished lines are reported by cancel/expiry
        finally:
            stop.cancel()
            for task in in_flight:
                task.cancel()
            await self._flush()  # what came back is recorded before cancel/expiry/finalize

    async def _run_chunk(self, endpoint: str, model: str, chunk: list[WorkItem]) -> None:
        """Hand outcomes to the recorder as they come back, not when the chunk is done."""
        left = {item["line"]: item for item in chunk}
        try:
            stream = self.dispatcher.stream_chunk(endpoint, model, chunk, self.batch_id)
            async for group in stream:
                before = len(left)
                for outcome in group:
                    left.pop(outcome["line"], None)
                self._record(group)
                self._unanswered -= before - len(left)
                self._answered.set()
        except Exception as exc:  # the executor itself failed: the lines fail, the batch goes on
            log.exception("chunk failed in the executor")
            now = time.time()
            self._record(
                [
                    make_outcome(
                        item,
                        started_at=now,
                        finished_at=now,
                        error=line_errors.executor_error(f"{type(exc).__name__}: {exc}"),
                        request_id=self._request_id(item["line"]),
                    )
                    for item in left.values()
                ]
            )
            self._unanswered -= len(left)
            self._answered.set()

    def _record(self, outcomes: list[Outcome]) -> None:
        self._arrived.extend(outcomes)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(self._record_arrived())

    async def _record_arrived(self) -> None:
        """Group commit across every request in flight: append whatever has arrived, in a
        thread (the loop goes on receiving meanwhile), until nothing is left."""
        while self._arrived:
            started = time.monotonic()
            group, self._arrived = self._arrived, []
            async with self._commit_lock:
                if self.state.status in ("in_progress", "cancelling"):
                    events = decider.decide(self.state, decider.RecordOutcomes(tuple(group)))
                    await asyncio.to_thread(self._commit, events)
            # appends start at most every outcome_group_ms (one fdatasync per group)
            gap = self.settings.outcome_group_ms / 1000.0
            await asyncio.sleep(max(0.0, gap - (time.monotonic() - started)))

    async def _flush(self) -> None:
        """Wait until every outcome that arrived is in the log (or the recorder failed)."""
        while self._recorder is not None:
            recorder = self._recorder
            await asyncio.shield(recorder)
            if recorder is self._recorder and not self._arrived:
                return

    def _request_id(self, line: int) -> str:
        """For lines that never reached an executor: stable across re-runs."""
        return "batch_req_" + hashlib.sha256(f"{self.batch_id}:{line}".encode()).hexdigest()[:24]

    # -- results -------------------------------------------------------------------

    async def _write_results(self, unfinished_reason: str | None) -> tuple[str | None, str | None]:
        out_id = result_file_id(self.batch_id, "output")
        err_id = result_file_id(self.batch_id, "error")
        written = await asyncio.to_thread(self._write_files, out_id, err_id, unfinished_reason)
        coordinator = ray.get_actor(names.COORDINATOR, namespace=self.settings.namespace)
        ids: list[str | None] = []
        for file_id, kind, (count, size, sha256) in zip(
            (out_id, err_id), ("output", "error"), written, strict=True
        ):
            if count == 0:
                self.files.delete(file_id)
                ids.append(None)
                continue
            result = await coordinator.register_file.remote(
                self.state.tenant,
                file_id,
                f"{self.batch_id}_{kind}.jsonl",
                "batch_output",
                size,
                sha256,
                count,
                output_expires_at(self.state.output_expires_after, int(time.time())),
            )
            if is_error(result):
                raise RuntimeError(f"registering {kind} file failed: {result['__error__']}")
            ids.append(file_id)
        return ids[0], ids[1]

    def _unfinished(self) -> Iterator[tuple[int, str | None]]:
        """(line, custom_id) of every line without an outcome. The log knows the lines;
        only their custom_ids come from the input file, so a cancel or expiry still
        finishes if that file is gone (the custom_id is then null)."""
        if self.files.exists(self.state.input_file_id):
            for line, request in iter_requests(self.files.lines(self.state.input_file_id)):
                if not decider.is_done(self.state, line):
                    yield line, request["custom_id"]
            return
        log.warning("batch %s: input file gone; unfinished lines get no custom_id", self.batch_id)
        # As many as the state counts unfinished (blank input lines, numbered but not
        # requests, cannot be told apart without the file).
        left, line = decider.unfinished_count(self.state), 0
        while left > 0:
            line += 1
            if not decider.is_done(self.state, line):
                left -= 1
                yield line, None

    def _write_files(
        self, out_id: str, err_id: str, unfinished_reason: str | None
    ) -> tuple[tuple[int, int, str], tuple[int, int, str]]:
        """Stream outcomes from the log into the files: memory stays bounded by a page.
        Returns (lines, bytes, sha256) of the output file and of the error file."""
        out_n = err_n = 0
        with self.files.writer(out_id) as out, self.files.writer(err_id) as err:
            # The same reader serves partial results, so those lines match these.
            for kind, encoded in recorded_lines(self.store, self.stream):
                if kind == "output":
                    out.write(encoded)
                    out_n += 1
                else:
                    err.write(encoded)
                    err_n += 1
            if unfinished_reason is not None and self.state.total:
                for line, custom_id in self._unfinished():
                    request_id = self._request_id(line)
                    reason = unfinished_reason
                    entry = unfinished_line(custom_id, reason, request_id)  # type: ignore[arg-type]
                    err.write(encode_line(entry))
                    err_n += 1
        return (out_n, out.bytes, out.sha256), (err_n, err.bytes, err.sha256)


BatchActorRemote = ray.remote(BatchActor)


def batch_actor_options(settings: Settings, name: str) -> dict[str, Any]:
    """How the coordinator starts a batch actor (`actors/runners.py` names it)."""
    return {
        "name": name,
        "namespace": settings.namespace,
        "get_if_exists": True,
        # Not owned by the coordinator: a coordinator crash must not stop running
        # batches (owned actors die with their owner). The new coordinator finds it by
        # name (`Runners.discover`) and `run` joins its task.
        "lifetime": "detached",
        # Bounded: a batch that kills its process every time must end (failed), not
        # loop; the coordinator counts what Ray gives up on.
        "max_restarts": settings.batch_max_restarts,
        "max_task_retries": settings.batch_max_restarts,
        "num_cpus": 0,
        # on a cluster: only on the nodes that offer these (BATCHLOG_BATCH_ACTOR_RESOURCES)
        "resources": settings.batch_actor_resources or None,
    }


def let_go_of_finished(namespace: str, batches: Mapping[str, decider.BatchState]) -> None:
    """Batch actors are detached, so one whose batch ended while no coordinator was
    there to let it go is still alive: let it go now."""
    prefix = names.batch_actor("")
    try:
        found = ray.util.list_named_actors()
    except Exception:
        log.exception("cannot list named actors")
        return
    for name in found:
        batch_id = name[len(prefix) :] if name.startswith(prefix) else None
        state = batches.get(batch_id) if batch_id else None
        if state is None or not decider.is_terminal(state.status):
            continue
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


def output_expires_at(policy: dict[str, Any] | None, created_at: int) -> int | None:
    """When an output or error file expires: ``output_expires_after`` counts from the file's
    own creation (OpenAI: "the anchor is the file creation time, not the time the batch is
    created"); without it the file stays until deleted (purpose batch_output)."""
    if not policy:
        return None
    return created_at + int(policy["seconds"])
