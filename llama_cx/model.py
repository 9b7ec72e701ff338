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
from array import array
from typing import Iterable, List, Optional, Sequence

from . import _kernels, dtypes
from .config import ModelConfig
from .errors import ContextLengthError, FormatError, LlamaCxError, TokenizerMissingError
from .formats import Checkpoint, open_checkpoint
from .runtime import available_cpus, set_num_threads
from .tensor import copy_to_weight_buffer

DEFAULT_CONTEXT = 4096
# Prompt tokens per compiled forward call: large enough that each pass over the weights is shared by
# many tokens (matrix-matrix products), small enough that activations stay in cache.
PREFILL_BLOCK = 128
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


class Model:
    """A loaded Llama model. Weights are read-only views shared by every context made from it."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.config: ModelConfig = checkpoint.config
        self.notes: List[str] = list(checkpoint.notes)
        self.tokenizer = None
        if checkpoint.tokenizer is not None:
            from .tokenizers import from_spec

            self.tokenizer, note = from_spec(checkpoint.tokenizer)
            if note:
                self.notes.append(note)
        self.chat_format = None
        if self.tokenizer is not None:
            from .tokenizers.chat_format import chat_format_for

            template = checkpoint.metadata.get("tokenizer.chat_template") or self.tokenizer.chat_template
            self.chat_format = chat_format_for(self.tokenizer, checkpoint.metadata.get("tokenizer.chat_template"))
            if self.chat_format is None and template:
                self.notes.append("chat template not recognised (llama_cx knows Llama 3 and ChatML templates): chat is "
                                  "off, text completion only")
        self._c = self._build_c_model()

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
        numel = {n: tensors[n].numel for n in names}
        if self.tied_embeddings:
            mats["output.weight"] = mats["tok_embeddings.weight"]
            numel["output.weight"] = numel["tok_embeddings.weight"]
        for name in ["norm.weight"] + [f"layers.{i}.{n}.weight" for i in range(cfg.n_layers) for n in _NORMS]:
            vecs[name] = _to_f32_copy(tensors[name])
        self._rope_freqs = rope_frequencies(cfg)
        sizes = dict(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                     head_dim=cfg.head_dim, hidden_dim=cfg.hidden_dim, vocab_size=cfg.vocab_size,
                     norm_eps=cfg.norm_eps)
        # bytes streamed per decoded token: every matrix once, the output projection included (of the
        # embedding table only one row is read, which we neglect)
        by_type = {}  # {dtype the products read: bytes}, for `llama-cx info`
        for n in mats:
            if n != "tok_embeddings.weight":
                kd = mats[n][2]
                by_type[kd] = by_type.get(kd, 0) + dtypes.BY_NAME[kd].nbytes(numel[n])
        self.weight_bytes_by_type = dict(sorted(by_type.items(), key=lambda kv: -kv[1]))
        self.weight_bytes_per_token = sum(by_type.values())
        return _kernels.CModel(sizes, mats, vecs, self._rope_freqs)

    # ---- contexts ------------------------------------------------------------------------------
    def new_context(self, n_ctx: Optional[int] = None) -> "Context":
        """A fresh context (KV cache + activations) of n_ctx positions (default min(max_seq_len, 4096))."""
        return Context(self, n_ctx)

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
    """Run state of one sequence: KV cache, activation buffers, and the ids already in the cache."""

    def __init__(self, model: Model, n_ctx: Optional[int] = None, prefill_block: int = PREFILL_BLOCK):
        cfg = model.config
        if n_ctx is None:
            n_ctx = min(cfg.max_seq_len, DEFAULT_CONTEXT)
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 1:
            raise ContextLengthError(f"context length must be a positive integer, got {n_ctx!r}")
        if n_ctx > cfg.max_seq_len:
            raise ContextLengthError(f"context length {n_ctx} exceeds the model's maximum {cfg.max_seq_len}")
        self.model = model
        self.n_ctx = n_ctx
        self.max_batch = max(1, min(prefill_block, n_ctx))
        n_threads = max(available_cpus(), _kernels.get_num_threads(), os.cpu_count() or 1)
        # exactly what lcx_state_new allocates, known before allocating (_SIZE_MAX: it cannot exist)
        self.state_bytes = model._c.state_bytes(n_ctx, self.max_batch, n_threads) if n_ctx < 2**63 else _SIZE_MAX
        limit = _memory_limit()
        if limit is not None and self.state_bytes > limit:
            raise ContextLengthError(
                f"a context of {n_ctx} tokens needs {_human(self.state_bytes)} (KV cache + activations), more than "
                f"this machine's {_human(limit)}; use a smaller n_ctx")
        try:
            self._state = _kernels.CState(model._c, n_ctx, self.max_batch, n_threads)
        except MemoryError:
            raise ContextLengthError(
                f"not enough memory for a context of {n_ctx} tokens ({self.state_bytes / 2**20:.0f} MiB)") from None
        self.tokens: List[int] = []

    @property
    def pos(self) -> int:
        """Number of tokens in the cache = position of the next token."""
        return len(self.tokens)

    def forward(self, token_ids: Iterable[int], all_logits: bool = False):
        """Append token_ids to the cache; logits (vocab,) of the last one, or (len, vocab) if all_logits."""
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
        out = memoryview(bytearray(4 * vocab * (t if all_logits else 1))).cast("f")  # calloc: no per-token memset
        pos, B = self.pos, self.max_batch
        for s in range(0, t, B):
            block = ids[s:s + B]
            last = s + B >= t
            if all_logits:
                view = out[s * vocab:(s + len(block)) * vocab]
                self._state.forward(block, pos + s, view, True)
            else:
                self._state.forward(block, pos + s, out if last else None, False)
            self.tokens.extend(block)
        if all_logits:
            return out.cast("B").cast("f", (t, vocab))
        return out

    def rewind(self, n_keep: int) -> None:
        """Forget every token after the first n_keep (their cache rows are overwritten later)."""
        if not 0 <= n_keep <= self.pos:
            raise LlamaCxError(f"cannot rewind to {n_keep}: the context holds {self.pos} tokens")
        del self.tokens[n_keep:]

    def reset(self) -> None:
        self.tokens.clear()


def load(path: str, n_threads: Optional[int] = None, rope_scale_factor: Optional[float] = None,
         huge_pages: bool = False) -> Model:
    """Open a model: a Meta checkpoint directory (params.json, consolidated.00.pth, tokenizer.model),
    a consolidated .pth, or a .gguf file. Weights are mapped, not read.

    huge_pages=True reads the mapped weights from the file into anonymous memory backed by transparent huge
    pages (Linux): load reads the whole file and the weights take their size again in RAM, but every token
    reads them with fewer TLB misses (1.02-1.26x decode in benchmarks/RESULTS.md, run D)."""
    if n_threads is not None:
        set_num_threads(n_threads)
    ck = open_checkpoint(os.fspath(path), rope_scale_factor=rope_scale_factor)
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
    return Model(ck)
