"""The model: weights (views into the mapped file) + config, and contexts (run state: activations + KV cache).

    model = llama_cx.load("Llama3.2-1B/")          # config, zero-copy weights, tokenizer
    ctx = model.new_context(n_ctx=2048)            # its own KV cache; many contexts may share one model
    logits = ctx.forward(prompt_ids)               # prefill in blocks, logits of the last position
    logits = ctx.forward([next_id])                # one decode step at position ctx.pos

The arithmetic is one compiled call per block of tokens (csrc/model/forward.c); this file decides what the
C side sees: pointers to weight matrices of a type a kernel reads (llama_cx.dtypes), f32 copies of the (tiny)
norm vectors, RoPE frequencies.
"""
from __future__ import annotations

import math
import operator
import os
import struct
import threading
import time
from array import array
from typing import Iterable, List, Optional, Sequence

from . import _kernels, dtypes
from .config import ModelConfig
from .errors import ContextLengthError, FormatError, InvalidArgumentError, LlamaCxError, TokenizerMissingError
from ._threads import DecodeThreads
from .formats import Checkpoint, open_checkpoint
from .runtime import adaptive_threads, available_cpus, check_environment, set_num_threads
from .tensor import copy_to_weight_buffer

# Prompt tokens per compiled forward call: large enough that each pass over the weights is shared by
# many tokens (matrix-matrix products), small enough that activations stay in cache.
PREFILL_BLOCK = 128
# Element types of a KV cache (Model.new_context(kv_dtype=...)). bf16 / f16 halve its bytes: rows are rounded
# when written and widened to f32 when attention reads them. Accuracy and speed measured in tests/test_batch.py
# and the commit that added them; f32 stays the default.
KV_DTYPES = ("f32", "bf16", "f16")
# Tokens in one forward_batch step, all contexts together (a long prompt goes in chunks between decode steps).
MAX_BATCH_TOKENS = 4096
_SIZE_MAX = 2**64 - 1  # what the C side says of a state that cannot exist

_MATRICES = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
             "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
_NORMS = ("attention_norm", "ffn_norm")


def _f32(v: float) -> float:
    """Round a Python float to float32, to mirror torch's float32 arithmetic step by step."""
    return struct.unpack("f", struct.pack("f", v))[0]


def rope_frequencies(cfg: ModelConfig) -> array:
    """Per-pair rotary frequencies (head_dim/2,) as Meta's precompute_freqs_cis computes them in float32,
    with Llama 3.1 `apply_scaling` when use_scaled_rope (factor cfg.rope_scale_factor)."""
    hd = cfg.head_dim
    freqs = [_f32(1.0 / _f32(cfg.rope_theta ** _f32(_f32(2 * i) / hd))) for i in range(hd // 2)]
    if cfg.use_scaled_rope:
        factor, low, high = cfg.rope_scale_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        old_ctx = cfg.rope_original_context
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        scaled = []
        for f in freqs:
            wavelen = _f32(2 * math.pi / f)
            new_f = _f32(f / factor) if wavelen > low_wavelen else f
            if high_wavelen <= wavelen <= low_wavelen:
                smooth = _f32(_f32(_f32(old_ctx / wavelen) - low) / (high - low))
                new_f = _f32(_f32(_f32(1 - smooth) * new_f) / factor + _f32(smooth * new_f))
            scaled.append(new_f)
        freqs = scaled
    return array("f", freqs)


def _to_f32_copy(t) -> array:
    out = array("f", bytes(4 * t.numel))
    _kernels.to_f32(t.memoryview(), t.dtype, out, t.numel)
    return out


def tokenizer_and_chat_format(checkpoint: Checkpoint):
    """(tokenizer or None, chat format or None, notes) of a checkpoint: what Model and `llama-cx info` show."""
    tokenizer, chat_format, notes = None, None, []
    if checkpoint.tokenizer is not None:
        from .tokenizers import from_spec

        tokenizer, note = from_spec(checkpoint.tokenizer)
        if note:
            notes.append(note)
    if tokenizer is not None:
        from .tokenizers.chat_format import chat_format_for

        template = checkpoint.metadata.get("tokenizer.chat_template") or tokenizer.chat_template
        chat_format = chat_format_for(tokenizer, checkpoint.metadata.get("tokenizer.chat_template"))
        if chat_format is None and template:
            notes.append("chat template not recognised (llama_cx knows Llama 3 and ChatML templates): chat is "
                         "off, text completion only")
    return tokenizer, chat_format, notes


def weight_bytes_by_type(tensors) -> dict:
    """{type the products read: bytes} a decoded token streams, largest first (a type no kernel reads is widened
    at load): every matrix once, the output projection included (of the embedding table only one row is read,
    which is neglected; tied, the output projection reads the whole table)."""
    by_type = {}

    def add(t):
        kd = dtypes.kernel_dtype(t.dtype)
        by_type[kd.name] = by_type.get(kd.name, 0) + kd.nbytes(t.numel)

    for n, t in tensors.items():
        if n != "tok_embeddings.weight" and len(t.shape) == 2:
            add(t)
    if "output.weight" not in tensors:
        add(tensors["tok_embeddings.weight"])
    return dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


class Model:
    """A loaded Llama model. Weights are read-only views shared by every context made from it.

    Threads: a Model, its tokenizer and its chat format may be shared by any number of threads (generate,
    chat_session, new_context, logits); each generation gets its own Context and Sampler. A Context is not:
    see Context.

    Continuous batching: `forward_batch(contexts, token_lists)` advances several contexts in one step, each by
    its own tokens (one for a decode step, or a chunk of its prompt), every weight matrix read once for all of
    them; contexts join and leave between steps (any subset of this model's contexts per call):

        a, b = model.new_context(), model.new_context()
        la, lb = model.forward_batch([a, b], [prompt_a, prompt_b])        # two prompts (or chunks of them)
        la, lb = model.forward_batch([a, b], [[next_a], [next_b]])        # one decode step for both
        (lb,) = model.forward_batch([b], [[next_b2]])                     # a left

    Each context gets the same bits as from its own `forward` with the same blocks (tests/test_batch.py): a
    decode token goes through the matvec kernel as alone (a block of weight rows at a time for all decode
    tokens of the step, so the weights come from memory once), a prompt chunk through the gemm tile, whose
    per-row sums do not depend on the other rows. One exception: `forward` cuts a prompt into pieces of 128
    tokens, so a chunk of 128k + 1 tokens ends alone with a one-token piece (matvec, one-query attention) and
    agrees with the batched chunk only up to summation order; chunks of at most 128 tokens avoid it.
    The bf16-activation switches (opt-in) apply to `forward` only; batched steps keep f32 activations.
    """

    def __init__(self, checkpoint: Checkpoint):
        if not checkpoint.has_weights:
            raise LlamaCxError(f"{checkpoint.path}: opened without its weights (open_checkpoint(weights=False) "
                               f"describes a model; load() runs it)")
        self.checkpoint = checkpoint
        self.config: ModelConfig = checkpoint.config
        self.notes: List[str] = list(checkpoint.notes)
        self.tokenizer, self.chat_format, notes = tokenizer_and_chat_format(checkpoint)
        self.notes.extend(notes)
        self._c = self._build_c_model()
        self.kv_dtype = "f32"  # new contexts' KV cache element type (load's kv_dtype)
        self.decode_threads = DecodeThreads()  # the thread count of one-token steps, when it adapts
        self._batch_lock = threading.Lock()
        self._batch_work = None  # _kernels.CBatch of the largest forward_batch step so far

    def _build_c_model(self):
        cfg, tensors = self.config, self.checkpoint.tensors
        self.tied_embeddings = "output.weight" not in tensors
        mats, vecs, widened = {}, {}, {}
        names = ["tok_embeddings.weight"] + [f"layers.{i}.{m}.weight" for i in range(cfg.n_layers) for m in _MATRICES]
        if not self.tied_embeddings:
            names.append("output.weight")
        for name in names:
            t = tensors[name]
            if not t.is_contiguous:
                raise LlamaCxError(f"{self.checkpoint.path}: tensor {name} is not contiguous; not supported")
            kd = dtypes.kernel_dtype(t.dtype)
            if kd.name == t.dtype:
                mats[name] = (t.buffer, t.offset, t.dtype)
            else:  # no kernel reads it: widen once at load (f16 -> f32 is exact); views of one storage share it
                key = (id(t.buffer), t.offset, t.numel)
                if key not in widened:
                    widened[key] = (t.dtype, _to_f32_copy(t))
                mats[name] = (widened[key][1], 0, kd.name)
        for src in sorted({d for d, _ in widened.values()}):
            n = sum(1 for d, _ in widened.values() if d == src)
            kd = dtypes.kernel_dtype(src).name
            self.notes.append(f"{n} {src} matrices widened to {kd} at load (no {src} kernels)")
        if self.tied_embeddings:
            mats["output.weight"] = mats["tok_embeddings.weight"]
        for name in ["norm.weight"] + [f"layers.{i}.{n}.weight" for i in range(cfg.n_layers) for n in _NORMS]:
            vecs[name] = _to_f32_copy(tensors[name])
            if not math.isfinite(sum(vecs[name])):  # cheap (the norms are tiny); the matrices: see Context.forward
                raise FormatError(f"{self.checkpoint.path}: tensor {name} holds NaN or inf")
        self._rope_freqs = rope_frequencies(cfg)
        sizes = dict(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                     head_dim=cfg.head_dim, hidden_dim=cfg.hidden_dim, vocab_size=cfg.vocab_size,
                     norm_eps=cfg.norm_eps)
        self.weight_bytes_by_type = weight_bytes_by_type(tensors)
        self.weight_bytes_per_token = sum(self.weight_bytes_by_type.values())
        return _kernels.CModel(sizes, mats, vecs, self._rope_freqs)

    # ---- contexts ------------------------------------------------------------------------------
    def new_context(self, n_ctx: Optional[int] = None, kv_dtype: Optional[str] = None) -> "Context":
        """A fresh context (KV cache + activations) of n_ctx positions (default config.default_context:
        min(max_seq_len, llama_cx.defaults.CONTEXT)).
        kv_dtype "bf16" or "f16" keeps the KV cache in half the bytes (rows rounded when written, widened to f32
        when read: see KV_DTYPES for what it costs); default self.kv_dtype (load's kv_dtype, "f32")."""
        return Context(self, n_ctx, kv_dtype=kv_dtype)

    def forward_batch(self, contexts: Sequence["Context"], token_lists: Sequence[Iterable[int]],
                      all_logits: bool = False) -> list:
        """One batched step: context i appends token_lists[i] (>= 1 tokens) to its cache. Returns a list with,
        per context, the logits (vocab,) of its last token, or (len, vocab) of all its tokens if all_logits
        (float32 memoryviews). The contexts must be distinct contexts of this model, not in use by another
        call; at most MAX_BATCH_TOKENS tokens in all."""
        contexts = list(contexts)
        token_lists = list(token_lists)
        if not contexts:
            raise LlamaCxError("forward_batch needs at least one context")
        if len(token_lists) != len(contexts):
            raise LlamaCxError(f"forward_batch: {len(contexts)} contexts but {len(token_lists)} token lists")
        seen = set()
        for i, ctx in enumerate(contexts):
            if not isinstance(ctx, Context) or ctx.model is not self:
                raise LlamaCxError(f"forward_batch: context {i} is not a context of this model")
            if id(ctx) in seen:
                raise LlamaCxError(f"forward_batch: context {i} appears twice (one step per context)")
            seen.add(id(ctx))
        blocks = []
        for i, (ctx, ids) in enumerate(zip(contexts, token_lists)):
            try:
                blocks.append(ctx._check_ids(ids))
            except LlamaCxError as e:
                raise type(e)(f"forward_batch: context {i}: {e}") from None
        total = sum(len(b) for b in blocks)
        if total > MAX_BATCH_TOKENS:
            raise LlamaCxError(f"forward_batch: {total} tokens in one step, at most {MAX_BATCH_TOKENS}; "
                               "split long prompts into chunks")
        vocab = self.config.vocab_size
        out = memoryview(bytearray(4 * vocab * (total if all_logits else len(blocks)))).cast("f")
        with self._batch_lock:
            w = self._batch_work
            n_ctx = max([ctx.n_ctx for ctx in contexts] + ([w.n_ctx] if w else []))
            conv = any(ctx.kv_dtype != "f32" for ctx in contexts) or bool(w and w.kv_conv)
            if w is None or w.n_ctx < n_ctx or w.max_tokens < total or conv > w.kv_conv:  # grow to the largest step
                n_threads = max(available_cpus(), _kernels.get_num_threads(), os.cpu_count() or 1)
                self._batch_work = w = None  # free the old one first
                w = self._batch_work = _kernels.CBatch(self._c, n_ctx, max(total, 8), n_threads, conv)
            entered = []
            try:
                for ctx in contexts:
                    ctx._enter()
                    entered.append(ctx)
                w.forward([ctx._state for ctx in contexts], blocks, [ctx.pos for ctx in contexts], out, all_logits)
                for ctx, block in zip(contexts, blocks):
                    ctx.tokens.extend(block)
            finally:
                for ctx in entered:
                    ctx._busy.release()
        result, r = [], 0  # per context: (vocab,) or (len, vocab) views of `out`
        for block in blocks:
            n = len(block) if all_logits else 1
            view = out[r * vocab:(r + n) * vocab]
            result.append(view.cast("B").cast("f", (n, vocab)) if all_logits else view)
            r += n
        return result

    def logits(self, token_ids: Sequence[int]):
        """Float32 logits for every position of `token_ids`, shape (len, vocab), from a fresh context."""
        ids = list(token_ids)
        ctx = Context(self, max(1, len(ids)))
        return ctx.forward(ids, all_logits=True)

    # ---- text --------------------------------------------------------------------------------------
    def generate(self, prompt, **kwargs):
        """Stream text for `prompt` (a string or token ids): an iterator of chunks with .stats, .text, .close().
        Keyword arguments as llama_cx.generate.generate (max_tokens, temperature, top_k, top_p, min_p,
        repeat_penalty, seed, stop, ...)."""
        from .generate import generate

        return generate(self, prompt, **kwargs)

    def chat_session(self, system=None, n_ctx=None, drop_oldest=False, **sampling):
        """A conversation that keeps its KV cache between turns (see llama_cx.generate.ChatSession)."""
        from .generate import ChatSession

        return ChatSession(self, system=system, n_ctx=n_ctx, drop_oldest=drop_oldest, **sampling)

    def require_tokenizer(self):
        if self.tokenizer is None:
            raise TokenizerMissingError(
                f"{self.checkpoint.path}: no tokenizer ({self.checkpoint.tokenizer_missing}); only token ids can be used")
        return self.tokenizer

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({self.checkpoint.path!r}, dim={c.dim}, layers={c.n_layers}, heads={c.n_heads}/"
                f"{c.n_kv_heads}, vocab={c.vocab_size})")


def _memory_limit() -> Optional[int]:
    """Physical memory (MemTotal), or None where /proc/meminfo is unavailable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _human(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class Context:
    """Run state of one sequence: KV cache, activation buffers, and the ids already in the cache.

    Threads: one thread at a time. A call to forward/rewind/reset while another thread is inside forward on the
    same context raises LlamaCxError("context is in use by another thread") instead of waiting: two callers
    would interleave their tokens in one cache, so neither result would mean anything. Make one context per
    thread (they share the model's weights).
    """

    def __init__(self, model: Model, n_ctx: Optional[int] = None, prefill_block: int = PREFILL_BLOCK,
                 kv_dtype: Optional[str] = None):
        cfg = model.config
        self.kv_dtype = check_kv_dtype(kv_dtype or model.kv_dtype)  # default: the model's (load's kv_dtype)
        n_ctx = cfg.default_context if n_ctx is None else cfg.check_context(n_ctx)
        self.model = model
        self.n_ctx = n_ctx
        self.max_batch = max(1, min(prefill_block, n_ctx))
        n_threads = max(available_cpus(), _kernels.get_num_threads(), os.cpu_count() or 1)
        # exactly what lcx_state_new allocates, known before allocating (_SIZE_MAX: it cannot exist)
        self.state_bytes = model._c.state_bytes(n_ctx, self.max_batch, n_threads, self.kv_dtype) if n_ctx < 2**63 else _SIZE_MAX
        limit = _memory_limit()
        if limit is not None and self.state_bytes > limit:
            raise ContextLengthError(
                f"a context of {n_ctx} tokens needs {_human(self.state_bytes)} (KV cache + activations), more than "
                f"this machine's {_human(limit)}; use a smaller n_ctx")
        try:
            self._state = _kernels.CState(model._c, n_ctx, self.max_batch, n_threads, self.kv_dtype)
        except MemoryError:
            raise ContextLengthError(
                f"not enough memory for a context of {n_ctx} tokens ({self.state_bytes / 2**20:.0f} MiB)") from None
        self.tokens: List[int] = []
        self._busy = threading.Lock()  # held for a whole forward or batched step; never waited on (see the class doc)

    def _enter(self) -> None:
        if not self._busy.acquire(blocking=False):
            raise LlamaCxError("context is in use by another thread (a Context serves one thread at a time; "
                               "make one context per thread)")

    @property
    def pos(self) -> int:
        """Number of tokens in the cache = position of the next token."""
        return len(self.tokens)

    def _check_ids(self, token_ids: Iterable[int]) -> List[int]:
        """token_ids as a list of ints, each in the vocabulary, >= 1 of them, fitting the free positions."""
        try:  # ints and integer-like (numpy) ids; 1.7 or "5" are refused, not truncated
            ids = [operator.index(i) for i in token_ids]
        except TypeError:
            raise LlamaCxError(f"token ids must be integers, got {list(token_ids)[:8]!r}") from None
        t = len(ids)
        if t == 0:
            raise LlamaCxError("forward needs at least one token")
        vocab = self.model.config.vocab_size
        for i in ids:
            if not 0 <= i < vocab:
                raise LlamaCxError(f"token id {i} out of range [0, {vocab})")
        if self.pos + t > self.n_ctx:
            raise ContextLengthError(
                f"{t} tokens do not fit: {self.pos} of {self.n_ctx} context positions are in use")
        return ids

    def forward(self, token_ids: Iterable[int], all_logits: bool = False):
        """Append token_ids to the cache; logits (vocab,) of the last one, or (len, vocab) if all_logits."""
        ids = self._check_ids(token_ids)
        t, vocab = len(ids), self.model.config.vocab_size
        self._enter()
        try:
            return self._forward(ids, t, vocab, all_logits)
        finally:
            self._busy.release()

    def _forward(self, ids: List[int], t: int, vocab: int, all_logits: bool):
        out = memoryview(bytearray(4 * vocab * (t if all_logits else 1))).cast("f")  # calloc: no per-token memset
        pos, B = self.pos, self.max_batch
        tuner = self.model.decode_threads if adaptive_threads() else None
        n = tuner.before(_kernels.get_num_threads()) if tuner else 0
        self._state.set_max_threads(n if t == 1 else tuner.current if tuner else 0)  # prompts: the count decode found
        if tuner is not None and t == 1:  # a decode step: timed for the tuner
            t0 = time.perf_counter()
            self._state.forward(ids, pos, out, False)
            tuner.after(time.perf_counter() - t0)
            self.tokens.extend(ids)
            return out
        for s in range(0, t, B):
            block = ids[s:s + B]
            last = s + B >= t
            if all_logits:
                view = out[s * vocab:(s + len(block)) * vocab]
                self._state.forward(block, pos + s, view, True)
            else:
                self._state.forward(block, pos + s, out if last else None, False)
            self.tokens.extend(block)
        last_row = out[(t - 1) * vocab:] if all_logits else out
        if not math.isfinite(last_row[_kernels.argmax(last_row)]):  # NaN never wins argmax: all NaN -> row[0]
            raise FormatError(f"{self.model.checkpoint.path}: the model computed no finite logit (NaN or inf in "
                              f"the weights?)")
        if all_logits:
            return out.cast("B").cast("f", (t, vocab))
        return out

    def rewind(self, n_keep: int) -> None:
        """Forget every token after the first n_keep (their cache rows are overwritten later)."""
        if not 0 <= n_keep <= self.pos:
            raise LlamaCxError(f"cannot rewind to {n_keep}: the context holds {self.pos} tokens")
        self._enter()
        del self.tokens[n_keep:]
        self._busy.release()

    def reset(self) -> None:
        self._enter()
        self.tokens.clear()
        self._busy.release()


def check_kv_dtype(kv_dtype: str) -> str:
    if kv_dtype not in KV_DTYPES:
        raise InvalidArgumentError(f"KV cache dtype {kv_dtype!r} not supported (one of {', '.join(KV_DTYPES)})")
    return kv_dtype


def load(path: str, n_threads: Optional[int] = None, rope_scale_factor: Optional[float] = None,
         huge_pages: bool = False, kv_dtype: str = "f32") -> Model:
    """Open a model: a Meta checkpoint directory (params.json, consolidated.00.pth, tokenizer.model),
    a consolidated .pth, or a .gguf file. Weights are mapped, not read.

    huge_pages=True reads the mapped weights from the file into anonymous memory backed by transparent huge
    pages (Linux): load reads the whole file and the weights take their size again in RAM, but every token
    reads them with fewer TLB misses (1.02-1.26x decode, measured in benchmarks/RESULTS.md).
    kv_dtype: the element type of the KV caches of this model's contexts unless new_context says otherwise
    ("f32", or "bf16" / "f16": half the bytes, see KV_DTYPES)."""
    check_kv_dtype(kv_dtype)
    check_environment()
    if n_threads is not None:
        set_num_threads(n_threads)
    ck = open_checkpoint(os.fsdecode(path), rope_scale_factor=rope_scale_factor)
    if huge_pages:
        mapped = {id(f.mapping) for f in ck.files}
        need = sum(t.nbytes for t in ck.tensors.values() if id(t.buffer) in mapped)
        limit = _memory_limit()
        if limit is not None and need > limit // 2:
            raise LlamaCxError(f"{ck.path}: huge pages would copy {need / 2**30:.1f} GiB of weights into memory, "
                               f"more than half of this machine's {limit / 2**30:.1f} GiB; load without huge pages")
        try:
            ck.tensors, buf = copy_to_weight_buffer(ck.tensors, ck.files)
        except OSError as e:
            raise FormatError(f"{ck.path}: cannot read the weights into memory ({e.strerror or e})") from None
        except MemoryError:
            raise LlamaCxError(f"{ck.path}: not enough memory for a copy of the weights; load without huge pages") from None
        if buf is not None:
            ck.buffers.append(buf)
            how = "bytearray: no transparent huge pages here" if isinstance(buf, bytearray) else "huge pages requested"
            ck.notes.append(f"weights read into anonymous memory ({len(buf) / 2**20:.0f} MiB, {how})")
    model = Model(ck)
    model.kv_dtype = kv_dtype
    return model
