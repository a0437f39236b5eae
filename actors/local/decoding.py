"""Continuous batching on llama.cpp: many sequences decoded together, one context.

A batch product should not decode one request at a time. ``BatchDecoder`` keeps up to
``parallel`` sequences in one llama.cpp context (one KV cache shared by all of them,
``kv_unified``) and advances them together: each ``step()`` is one ``llama_decode`` over
a batch holding the next token of every running sequence plus as much of the waiting
prompts as fits (chunked prefill). A sequence that finishes frees its KV cells and its
slot, and the next waiting request takes the slot at the next step (continuous batching,
as llama.cpp's own server and vLLM do).

Per request, OpenAI's semantics hold: its own ``max_tokens``, ``stop`` strings,
temperature/top_p/penalties and ``seed`` (each sequence has its own sampler chain and
random stream), usage counts and ``finish_reason``. What batching changes is documented
in docs/embedded-engine.md: with several sequences in one decode the floating-point
order of the matrix products differs between a step of one token and a step of several,
so a greedy (or seeded) request decoded alone reproduces, and decoded beside others its
text may differ from the lone one in a near-tie.

Thread model: ``step()`` runs on one thread (``DecoderLoop``'s); ``submit_many`` and
``cancel`` may be called from any thread. ctypes releases the GIL during ``llama_decode``,
so the caller's event loop keeps running while a step computes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actors.local.requests import RequestError
from batches.domain import request_errors

# Tokens that one decode call may carry (decode tokens + prompt pieces).
BATCH_TOKENS = 512


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """The result of one sequence."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    finished_at: float  # unix seconds


@dataclass(eq=False)
class _Seq:
    prompt: list[int]
    sampling: Sampling
    future: Future[Generation]
    limit: int  # the most tokens (prompt + completion) this sequence may hold
    seq_id: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache
    next_token: int | None = None  # sampled, not yet in the KV cache
    generated: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    sampler: Any = None


class BatchDecoder:
    """Sequences of one llama.cpp model decoded together (see the module docstring).

    ``llm`` is a loaded ``llama_cpp.Llama`` (used for its model, tokenizer and vocab);
    the decoder makes its own context with ``parallel`` sequences over a unified KV
    cache of ``kv_tokens`` cells, of which one request may use at most ``n_ctx``.
    """

    def __init__(self, llm: Any, *, parallel: int, kv_tokens: int, n_ctx: int, threads: int):
        import llama_cpp
        from llama_cpp import _internals

        self._lc = llama_cpp
        self.llm = llm
        self.parallel = max(1, parallel)
        self.n_ctx = min(n_ctx, kv_tokens)
        self.kv_tokens = kv_tokens
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = BATCH_TOKENS
        params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = self.parallel
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.ctx = self._ctx.ctx
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self._lock = threading.Lock()
        self._waiting: deque[_Seq] = deque()
        self._cancelled: set[int] = set()  # id() of futures cancelled by their caller
        self._running: list[_Seq] = []
        self._free_ids = list(range(self.parallel - 1, -1, -1))
        self.reserved = 0  # KV cells promised to running sequences
        self.steps = 0
        self.max_running = 0

    # -- the caller's side (any thread)

    def submit_many(
        self, sequences: list[tuple[list[int], Sampling]]
    ) -> list[Future[Generation] | RequestError]:
        """Queue sequences at once (the decoding thread never sees half of them), so the
        same chunk on an idle replica is admitted the same way every time. A sequence
        that cannot be decoded gets its RequestError in its place instead."""
        out: list[Future[Generation] | RequestError] = []
        queued: list[_Seq] = []
        for prompt, sampling in sequences:
            try:
                self._check(prompt)
            except RequestError as e:
                out.append(e)
                continue
            fut: Future[Generation] = Future()
            queued.append(
                _Seq(
                    prompt=list(prompt),
                    sampling=sampling,
                    future=fut,
                    limit=self._limit(prompt, sampling),
                )
            )
            out.append(fut)
        with self._lock:
            self._waiting.extend(queued)
        return out

    def _check(self, prompt: list[int]) -> None:
        if not prompt:
            raise request_errors.empty_prompt()
        if len(prompt) >= self.n_ctx:
            raise request_errors.context_length_exceeded(self.n_ctx, len(prompt))
        if any(t < 0 or t >= self.n_vocab for t in prompt):
            raise request_errors.token_out_of_vocabulary(self.n_vocab)

    def cancel(self, fut: Future[Generation]) -> None:
        """Stop a sequence: it leaves the batch at the next step, its slot is refilled."""
        with self._lock:
            self._cancelled.add(id(fut))
        fut.cancel()

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._waiting or self._running)

    def _limit(self, prompt: list[int], sampling: Sampling) -> int:
        wanted = len(prompt) + (sampling.max_tokens if sampling.max_tokens else self.n_ctx)
        return min(wanted, self.n_ctx)

    # -- the decoding thread

    def step(self) -> None:
        """Admit waiting sequences, decode one batch, sample one token per sequence."""
        self._drop_cancelled()
        self._admit()
        if not self._running:
            return
        before = [(seq, seq.n_past, seq.next_token) for seq in self._running]
        entries = self._fill_batch()
        rc = self._lc.llama_decode(self.ctx, self.batch)
        self.steps += 1
        if rc != 0:
            # Nothing of the batch was stored: undo what filling it advanced.
            for seq, n_past, next_token in before:
                seq.n_past, seq.next_token = n_past, next_token
            if rc == 1 and len(self._running) > 1:
                # No room in the KV cache (fragmentation): the newest starts over later.
                self._requeue(self._running[-1])
            else:
                self._fail_all(RuntimeError(f"llama_decode failed with status {rc}"))
            return
        for idx, seq in entries:
            self._advance(seq, idx)
        if not self._running:
            # Idle: every sequence starts from an empty cache again, in the same cells
            # (where a sequence's cells sit changes the order of its sums).
            self._lc.llama_memory_clear(self.mem, False)

    def _drop_cancelled(self) -> None:
        with self._lock:
            if not self._cancelled:
                return
            gone = self._cancelled
            self._cancelled = set()
            self._waiting = deque(s for s in self._waiting if id(s.future) not in gone)
        for seq in [s for s in self._running if id(s.future) in gone]:
            self._release(seq)

    def _admit(self) -> None:
        with self._lock:
            while self._waiting and self._free_ids:
                seq = self._waiting[0]
                if self._running and self.reserved + seq.limit > self.kv_tokens:
                    break  # waits for a running sequence to finish and free its cells
                self._waiting.popleft()
                seq.seq_id = self._free_ids.pop()
                seq.sampler = self._sampler(seq.sampling)
                self.reserved += seq.limit
                self._running.append(seq)
        self.max_running = max(self.max_running, len(self._running))

    def _fill_batch(self) -> list[tuple[int, _Seq]]:
        """Decode tokens of running sequences first, then prompt pieces; returns
        (batch index, sequence) of the entries whose logits are sampled."""
        b = self.batch
        n = 0
        entries: list[tuple[int, _Seq]] = []

        def put(token: int, seq: _Seq, logits: bool) -> None:
            nonlocal n
            b.token[n] = token
            b.pos[n] = seq.n_past
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = seq.seq_id
            b.logits[n] = logits
            if logits:
                entries.append((n, seq))
            seq.n_past += 1
            n += 1

        for seq in self._running:
            if seq.next_token is not None:
                put(seq.next_token, seq, True)
                seq.next_token = None
        for seq in self._running:
            remaining = len(seq.prompt) - seq.n_past
            if remaining <= 0 or seq.generated:
                continue
            take = min(remaining, BATCH_TOKENS - n)
            for i in range(take):
                pos = seq.n_past
                put(seq.prompt[pos], seq, i == take - 1 and pos == len(seq.prompt) - 1)
            if n >= BATCH_TOKENS:
                break
        b.n_tokens = n
        return entries

    def _advance(self, seq: _Seq, idx: int) -> None:
        token = int(self._lc.llama_sampler_sample(seq.sampler, self.ctx, idx))
        if self._lc.llama_vocab_is_eog(self.vocab, token):
            self._finish(seq, "stop")
            return
        seq.generated.append(token)
        seq.text += self.llm.detokenize([token])
        if seq.sampling.stop and self._cut_at_stop(seq):
            self._finish(seq, "stop")
        elif (
            seq.sampling.max_tokens is not None and len(seq.generated) >= seq.sampling.max_tokens
        ) or seq.n_past + 1 >= seq.limit:
            self._finish(seq, "length")
        else:
            seq.next_token = token

    @staticmethod
    def _cut_at_stop(seq: _Seq) -> bool:
        text = seq.text.decode("utf-8", errors="ignore")
        hits = [i for i in (text.find(s) for s in seq.sampling.stop) if i >= 0]
        if not hits:
            return False
        seq.text = bytearray(text[: min(hits)].encode("utf-8"))
        return True

    def _finish(self, seq: _Seq, reason: str) -> None:
        result = Generation(
            text=bytes(seq.text).decode("utf-8", errors="replace"),
            prompt_tokens=len(seq.prompt),
            completion_tokens=len(seq.generated),
            finish_reason=reason,
            finished_at=time.time(),
        )
        self._release(seq)
        if not seq.future.done():
            seq.future.set_result(result)

    def _release(self, seq: _Seq) -> None:
        self._lc.llama_memory_seq_rm(self.mem, seq.seq_id, -1, -1)
        self._lc.llama_sampler_free(seq.sampler)
        self._running.remove(seq)
        self.reserved -= seq.limit
        with self._lock:
            self._free_ids.append(seq.seq_id)
        seq.seq_id, seq.sampler = -1, None

    def _requeue(self, seq: _Seq) -> None:
        self._release(seq)
        seq.n_past, seq.next_token = 0, None
        seq.generated, seq.text = [], bytearray()
        with self._lock:
            self._waiting.appendleft(seq)

    def _fail_all(self, error: BaseException) -> None:
        for seq in list(self._running):
            self._release(seq)
            if not seq.future.done():
                seq.future.set_exception(error)

    def _sampler(self, s: Sampling) -> Any:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if s.presence_penalty or s.frequency_penalty:
            lc.llama_sampler_chain_add(
                chain,
                lc.llama_sampler_init_penalties(64, 1.0, s.frequency_penalty, s.presence_penalty),
            )
        if s.temperature <= 0.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed % 0xFFFFFFFF))
        return chain

    def close(self) -> None:
        self._fail_all(RuntimeError("the decoder was closed"))
        self._lc.llama_batch_free(self.batch)
        self._ctx.close()


class DecoderLoop:
    """Runs ``BatchDecoder.step`` on a thread of its own while there is work."""

    def __init__(self, decoder: BatchDecoder, on_error: Callable[[BaseException], None]) -> None:
        self.decoder = decoder
        self._on_error = on_error
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="batch-decoder", daemon=True)
        self._thread.start()

    def submit_many(
        self, sequences: list[tuple[list[int], Sampling]]
    ) -> list[Future[Generation] | RequestError]:
        futs = self.decoder.submit_many(sequences)
        self._wake.set()
        return futs

    def cancel(self, fut: Future[Generation]) -> None:
        self.decoder.cancel(fut)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            try:
                while self.decoder.has_work() and not self._stop:
                    self.decoder.step()
            except BaseException as e:  # the engine itself broke: every sequence fails
                self.decoder._fail_all(e)
                self._on_error(e)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)
