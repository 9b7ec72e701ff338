"""The server's scheduler: one thread owns N slots and advances every busy slot one step per round.

A slot is a Context (its own KV cache and position) plus the state of the request it serves. A round:
  1. admit queued requests into free slots (so requests join between steps, never inside one);
  2. every busy slot whose logits are ready samples its next token and emits its text (stop token, stop string,
     max_tokens and a full context end the request and free the slot);
  3. one forward step for every busy slot: the token just sampled (decode), or the next chunk of a prompt
     (prefill). A long prompt is therefore prefilled a chunk per round, interleaved with everyone else's decode
     steps, and concurrent streams advance one token per round each: they interleave fairly.
Step 3 is `_forward`: one batched step (Model.forward_batch) for all the busy slots' rows, so the weights are
read once per round however many slots are busy (attention stays per slot, over each slot's own cache).

Prefix reuse: a slot keeps its cache after its request ends. A new request goes to the free slot whose cached
tokens share the longest reusable prefix with its prompt (the same system prompt, the previous prompt of a chat),
rewinds that context to the shared prefix and prefills only the rest. Reusable means written by a prefill: the
K/V rows of generated tokens come from one-token decode calls, whose sums run in another order than a prefill's
(measured: the logits after them differ in the last bits), so a previous reply is recomputed, not reused.

So results do not depend on the company a request keeps, nor on what a slot (or another replica) served before:
each request computes exactly what a lone `llama_cx.generate` computes, and greedy output is identical token for
token (see _prefill_chunks for the other half of that). Cancelling (a client that went away) frees the slot
before the next round.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from .. import _openai
from ..errors import ContextLengthError
from ..generate import _common_prefix, _held_back
from ..model import _memory_limit
from ..sampling import Sampler, SamplingParams

Event = tuple  # ("text", str) | ("done", finish_reason, usage dict) | ("error", message)


class Job:
    """One request: the prompt ids and settings in; events out through `on_event` (called on the scheduler
    thread, so it must only hand the event over, e.g. loop.call_soon_threadsafe)."""

    def __init__(self, prompt_ids: Sequence[int], params: SamplingParams, max_tokens: int, stop: Sequence[str],
                 stop_ids, on_event: Callable[[Event], None], continues: bool = False):
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.stop_ids = frozenset(stop_ids)
        self.on_event = on_event
        self.continues = continues        # the text continues the prompt's (a completion), or stands alone (chat)
        self.tokens: List[int] = []       # sampled so far (a final stop token included)
        self.cached_tokens = 0            # prompt tokens the slot's cache already held
        self.finish_reason: Optional[str] = None
        self.t_submit = time.perf_counter()
        self.t_first: Optional[float] = None
        self.cancelled = False            # set from any thread; read by the scheduler between steps

    def cancel(self) -> None:
        self.cancelled = True

    def usage(self) -> dict:
        return _openai.usage(len(self.prompt_ids), _openai.completion_tokens(self.tokens, self.stop_ids))


class _Slot:
    def __init__(self, index: int, ctx):
        self.index = index
        self.ctx = ctx
        self.job: Optional[Job] = None
        self.chunks: Deque[Tuple[int, int]] = collections.deque()  # prompt positions still to prefill
        self.logits = None       # (vocab,) f32 of the last position fed, when the next token is due
        self.sampler: Optional[Sampler] = None
        self.decoder = None
        self.history: List[int] = []  # prompt + sampled ids, for the repeat penalty
        self.pending = ""             # text held back: it may be the start of a stop string
        self.last_used = 0.0
        self.exact = 0  # leading cached tokens whose K/V rows a prefill wrote (calls of >= 2 tokens): reusable


def _prefill_chunks(keep: int, n: int, block: int) -> List[Tuple[int, int]]:
    """Forward calls [(start, end), ...] that prefill positions [keep', n), keep' <= keep, with logits bit-identical
    to one fresh ctx.forward(prompt) (= `llama_cx.generate`).

    Context.forward computes each row the same way in any call of >= 2 tokens, but a call of one token takes the
    decode kernels, whose sums run in another order (measured on SmolLM2: identical logits for every split into
    calls of >= 2 tokens, different ones for a 1-token call). A fresh forward makes calls of `block` tokens from
    0, so it has a one-token call only at the very end, when n % block == 1. We make the same one-token tail in
    that case and no other one-token call, moving keep back a token where the rest would be a single token.
    """
    if n <= 1 or block < 3:
        return [(s, min(s + block, n)) for s in range(keep, n, block)] or [(n - 1, n)]
    tail = 1 if n % block == 1 else 0
    end = n - tail
    keep = min(keep, end)
    if end - keep == 1:
        keep -= 1
    chunks = []
    s = keep
    while s < end:
        size = min(block, end - s)
        if end - (s + size) == 1:  # never leave a single token for the last body call
            size -= 1
        chunks.append((s, s + size))
        s += size
    if tail:
        chunks.append((n - 1, n))
    return chunks


class Scheduler:
    """N slots over one model, driven by one thread. submit() a Job; stop() ends the thread."""

    def __init__(self, model, n_slots: int, n_ctx: int, metrics=None):
        self.model = model
        self.tokenizer = model.require_tokenizer()
        self.n_ctx = n_ctx
        first = model.new_context(n_ctx)  # checks n_ctx, and one context against the machine's memory
        limit = _memory_limit()
        if limit is not None and first.state_bytes * n_slots > limit:
            raise ContextLengthError(
                f"{n_slots} slots of {n_ctx} tokens need {first.state_bytes * n_slots / 2**30:.1f} GiB (KV caches + "
                f"activations), more than this machine's {limit / 2**30:.1f} GiB; use fewer slots or a smaller context")
        self.slots = [_Slot(0, first)] + [_Slot(i, model.new_context(n_ctx)) for i in range(1, n_slots)]
        self.metrics = metrics
        self._queue: Deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llama-cx-scheduler", daemon=True)
        self.error: Optional[str] = None  # set if the thread died (then /health says so)

    # ---- outside the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread after its current round; requests still running or queued get an error event."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._queue.append(job)
            self._cv.notify_all()
        self._gauges()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return sum(s.job is not None for s in self.slots)

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.set_gauges(queue_depth=len(self._queue), slots_busy=self.busy, slots_total=len(self.slots))

    # ---- the thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stopping and not self._queue and not any(s.job for s in self.slots):
                        self._cv.wait()
                    if self._stopping:
                        break
                    self._admit()
                self._gauges()
                self._round()
        except BaseException as e:  # a bug, not bad input (inputs are checked before submit): say so on /health
            self.error = f"scheduler stopped: {type(e).__name__}: {e}"
            raise
        finally:
            with self._cv:
                self._stopping = True
                queued, self._queue = list(self._queue), collections.deque()
            for job in queued:
                self._emit(job, ("error", "the server is shutting down"))
            for slot in self.slots:
                if slot.job is not None:
                    self._emit(slot.job, ("error", "the server is shutting down"))
                    slot.job = None
            self._gauges()

    def _admit(self) -> None:
        """Queued jobs into free slots, oldest first; each to the free slot with the longest shared prefix
        (ties: the least recently used)."""
        while self._queue:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self._queue.popleft()
            if job.cancelled:
                continue
            slot = max(free, key=lambda s: (self._reusable(s, job.prompt_ids), -s.last_used))
            self._begin(slot, job)

    @staticmethod
    def _reusable(slot: _Slot, ids: Sequence[int]) -> int:
        return min(_common_prefix(slot.ctx.tokens, ids), slot.exact)

    def _begin(self, slot: _Slot, job: Job) -> None:
        ctx, ids = slot.ctx, job.prompt_ids
        chunks = _prefill_chunks(min(self._reusable(slot, ids), len(ids) - 1), len(ids), ctx.max_batch)
        keep = chunks[0][0]
        ctx.rewind(keep)
        slot.exact = keep
        job.cached_tokens = keep
        slot.job, slot.chunks, slot.logits = job, collections.deque(chunks), None
        slot.sampler = Sampler(job.params, self.model.config.vocab_size)
        tok = self.tokenizer
        slot.decoder = tok.stream_decoder(continues=job.continues and any(i != tok.bos_id for i in ids))
        slot.history = list(ids)
        slot.pending = ""
        if self.metrics is not None:
            self.metrics.prompt(len(ids), keep)
        if job.max_tokens <= 0:
            self._finish(slot, "length")

    def _round(self) -> None:
        t0 = time.perf_counter()
        work = []     # (slot, ids to feed this round)
        decoded = 0
        for slot in self.slots:
            job = slot.job
            if job is None:
                continue
            if job.cancelled:
                self._release(slot)
                continue
            if slot.logits is not None:
                tok = self._sample(slot)
                if tok is None:
                    continue
                work.append((slot, [tok]))
                decoded += 1
            else:
                s, e = slot.chunks.popleft()
                work.append((slot, job.prompt_ids[s:e]))
        self._forward(work)
        if self.metrics is not None and work:
            self.metrics.round(decoded, time.perf_counter() - t0)

    def _forward(self, work) -> None:
        """Feed each slot its ids in ONE batched step (Model.forward_batch: every weight matrix is read once for
        all the busy slots, each slot's attention over its own cache); keep the logits where the next token is
        due. Each slot gets the bits of running alone (tests/test_batch.py), so answers do not depend on who
        else is being served."""
        if not work:
            return
        starts = [slot.ctx.pos for slot, _ in work]
        try:
            outs = self.model.forward_batch([slot.ctx for slot, _ in work], [ids for _, ids in work])
        except Exception:  # checked inputs make this a bug: find the slot at fault one by one, the others go on
            outs = None
        for k, (slot, ids) in enumerate(work):
            if outs is None:
                try:
                    logits = slot.ctx.forward(ids)
                except Exception as e:  # the request fails, the server stays up
                    self._emit(slot.job, ("error", f"forward failed: {type(e).__name__}: {e}"))
                    self._release(slot)
                    continue
            else:
                logits = outs[k]
            if len(ids) >= 2 and slot.exact == starts[k]:
                slot.exact = starts[k] + len(ids)
            slot.logits = None if slot.chunks else logits

    def _sample(self, slot: _Slot) -> Optional[int]:
        """Sample the slot's next token and emit its text, as generate.Generation does; the token to feed
        next, or None when the request ended."""
        job, ctx = slot.job, slot.ctx
        tok = slot.sampler.sample(slot.logits, slot.history)
        slot.logits = None
        job.tokens.append(tok)
        slot.history.append(tok)
        if job.t_first is None:
            job.t_first = time.perf_counter()
            if self.metrics is not None:
                self.metrics.first_token(job.t_first - job.t_submit)
        if tok in job.stop_ids:
            self._finish(slot, "stop")
            return None
        text = slot.pending + slot.decoder.feed(tok)
        if job.stop:
            cut = min((i for i in (text.find(s) for s in job.stop) if i >= 0), default=-1)
            if cut >= 0:
                if cut:
                    self._emit(job, ("text", text[:cut]))
                slot.pending = ""
                self._finish(slot, "stop", flush=False)
                return None
            hold = _held_back(text, job.stop)
            text, slot.pending = text[: len(text) - hold], text[len(text) - hold:]
        if text:
            self._emit(job, ("text", text))
        if len(job.tokens) >= job.max_tokens or ctx.pos >= ctx.n_ctx:
            self._finish(slot, "length")
            return None
        return tok

    def _finish(self, slot: _Slot, reason: str, flush: bool = True) -> None:
        job = slot.job
        if flush:
            rest = slot.pending + slot.decoder.flush()  # an incomplete UTF-8 tail becomes U+FFFD, as in generate
            if rest:
                self._emit(job, ("text", rest))
        job.finish_reason = reason
        use = job.usage()
        if self.metrics is not None:
            self.metrics.completion(use["completion_tokens"])
        self._emit(job, ("done", reason, use))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        slot.job, slot.logits, slot.sampler, slot.decoder = None, None, None, None
        slot.chunks.clear()
        slot.last_used = time.perf_counter()
        self._gauges()

    @staticmethod
    def _emit(job: Job, event: Event) -> None:
        try:
            job.on_event(event)
        except Exception:  # the receiving side is gone (event loop closed): nothing to tell
            job.cancelled = True
