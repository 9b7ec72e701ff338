"""Model hyper-parameters: one dataclass, built in one place per source format, every size derived once.

Mirrors Meta's `llama_models/llama3/args.py` (ModelArgs) and the FFN sizing of `model.py` (FeedForward).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from . import defaults
from .errors import ContextLengthError, FormatError, brief, fail

# Llama 3.1 rope scaling constants (Meta's `apply_scaling`); the factor is 8 for 3.1 and 32 for 3.2 1B/3B.
ROPE_LOW_FREQ_FACTOR = 1.0
ROPE_HIGH_FREQ_FACTOR = 4.0
ROPE_ORIGINAL_CONTEXT = 8192

# (dim, n_layers) of Llama 3.2 1B and 3B: their params.json says use_scaled_rope but not the factor (32).
_LLAMA32_SHAPES = {(2048, 16), (3072, 28)}


def ffn_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: Optional[float]) -> int:
    """FFN hidden size exactly as Meta's FeedForward computes it from hidden_dim = 4 * dim."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class ModelConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    hidden_dim: int  # FFN inner size (w1/w3 rows)
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False
    rope_scale_factor: float = 8.0
    rope_low_freq_factor: float = ROPE_LOW_FREQ_FACTOR
    rope_high_freq_factor: float = ROPE_HIGH_FREQ_FACTOR
    rope_original_context: int = ROPE_ORIGINAL_CONTEXT
    max_seq_len: int = 8192
    multiple_of: int = 256
    ffn_dim_multiplier: Optional[float] = None
    head_dim: int = field(default=0)  # 0 = dim // n_heads

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                fail("invalid model config", f"{name} must be a positive integer, got {v!r}")
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                fail("invalid model config", f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.head_dim % 2:
            fail("invalid model config", f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.n_kv_heads > self.n_heads or self.n_heads % self.n_kv_heads:
            fail("invalid model config", f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        for name in ("norm_eps", "rope_theta", "rope_scale_factor"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                fail("invalid model config", f"{name} must be a positive number, got {v!r}")
        if self.use_scaled_rope and not self.rope_low_freq_factor < self.rope_high_freq_factor:
            fail("invalid model config", "rope low_freq_factor must be below high_freq_factor")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def n_rep(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def default_context(self) -> int:
        """Positions of a context when none is asked for (a KV cache for the full window can be gigabytes)."""
        return min(self.max_seq_len, defaults.CONTEXT)

    def check_context(self, n_ctx) -> int:
        """n_ctx, checked: a positive integer no larger than max_seq_len (else a one-line ContextLengthError)."""
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx <= 0:
            raise ContextLengthError(f"context length must be a positive integer, got {n_ctx!r}")
        if n_ctx > self.max_seq_len:
            raise ContextLengthError(f"context length {n_ctx} exceeds the model's maximum {self.max_seq_len}")
        return n_ctx

    def n_params(self, tied: bool) -> int:
        per_layer = (
            self.dim * self.q_dim + 2 * self.dim * self.kv_dim + self.q_dim * self.dim
            + 3 * self.dim * self.hidden_dim + 2 * self.dim
        )
        emb = self.vocab_size * self.dim
        return emb * (1 if tied else 2) + self.n_layers * per_layer + self.dim

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ---- Meta's params.json ----------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: dict, source: str = "params.json", rope_scale_factor: Optional[float] = None,
                    llama2_vocab_size: Optional[int] = None) -> "ModelConfig":
        """Build from the dict of a Meta params.json (Llama 3 / 3.1 / 3.2).

        llama2_vocab_size: the checkpoint is Llama 2 style (a SentencePiece tokenizer.model beside it) with this
        many pieces; then vocab_size -1 means that number (Meta's llama/generation.py sets
        `model_args.vocab_size = tokenizer.n_words`), rope_theta defaults to 10000 (Llama 2's model.py
        hard-codes theta=10000.0 and its params.json has no rope_theta) and max_seq_len to 4096 (its context)."""

        if not isinstance(params, dict):
            fail(source, "expected a JSON object")
        for key in ("dim", "n_layers", "n_heads"):
            if key not in params:
                fail(source, f"missing required key {key!r}")

        def get_int(key, default=None):
            v = params.get(key)
            v = default if v is None else v
            if v is None:
                return None
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                fail(source, f"{key} must be an integer, got {brief(v)}")
            if v <= 0:
                fail(source, f"{key} must be positive, got {v}")
            if key != "max_seq_len" and v >= 2**31:
                fail(source, f"{key} = {v} is absurdly large")
            return v

        def get_float(key, default=None):
            v = params.get(key)
            v = default if v is None else v
            if v is None:
                return None
            ok = not isinstance(v, bool) and isinstance(v, (int, float))
            try:
                ok = ok and math.isfinite(v) and v > 0
                v = float(v) if ok else v
            except OverflowError:
                ok = False
            if not ok:
                fail(source, f"{key} must be a positive number of sane size, got {brief(v, 40)}")
            return v

        for key in ("dim", "n_layers", "n_heads"):
            if params[key] is None:
                fail(source, f"{key} must be a positive integer, got null")
        dim = get_int("dim")
        n_heads = get_int("n_heads")
        n_kv_heads = get_int("n_kv_heads") or n_heads
        vocab_size = get_int("vocab_size", -1) if params.get("vocab_size", -1) != -1 else llama2_vocab_size
        if vocab_size is None:
            fail(source, "vocab_size is missing or -1 (it must be given for Llama 3 checkpoints; a Llama 2 checkpoint "
                         "takes it from the SentencePiece tokenizer.model beside it)")
        multiple_of = get_int("multiple_of", 256)
        mult = get_float("ffn_dim_multiplier")
        use_scaled = params.get("use_scaled_rope", False)
        if not isinstance(use_scaled, bool):
            fail(source, f"use_scaled_rope must be true or false, got {brief(use_scaled)}")
        n_layers = get_int("n_layers")
        if rope_scale_factor is None:
            rope_scale_factor = get_float("rope_scaling_factor") or get_float("rope_scale_factor")
        if rope_scale_factor is None:
            rope_scale_factor = 32.0 if (dim, n_layers) in _LLAMA32_SHAPES and vocab_size == 128256 else 8.0
        max_seq_len = get_int("max_seq_len") or (131072 if use_scaled else 8192 if llama2_vocab_size is None else 4096)
        try:
            hidden_dim = ffn_hidden_dim(dim, multiple_of, mult)
        except (OverflowError, ValueError):
            fail(source, f"ffn_dim_multiplier {mult!r} gives an impossible FFN size")
        if not 0 < hidden_dim < 2**31:
            fail(source, f"FFN hidden size {hidden_dim} (from ffn_dim_multiplier {mult!r}) is out of range")
        try:
            return cls(
                dim=dim,
                n_layers=n_layers,
                n_heads=n_heads,
                n_kv_heads=n_kv_heads,
                vocab_size=vocab_size,
                hidden_dim=hidden_dim,
                norm_eps=get_float("norm_eps", 1e-5),
                rope_theta=get_float("rope_theta", 500000.0 if llama2_vocab_size is None else 10000.0),
                use_scaled_rope=use_scaled,
                rope_scale_factor=float(rope_scale_factor),
                max_seq_len=max_seq_len,
                multiple_of=multiple_of,
                ffn_dim_multiplier=mult,
            )
        except FormatError as e:
            fail(source, str(e).replace("invalid model config: ", ""))

    @classmethod
    def from_params_file(cls, path: str, rope_scale_factor: Optional[float] = None,
                         llama2_vocab_size: Optional[int] = None) -> "ModelConfig":
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 20)
        except FileNotFoundError:
            raise FormatError(f"{path}: file not found") from None
        except OSError as e:
            raise FormatError(f"{path}: cannot read ({e.strerror})") from None
        try:
            params = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise FormatError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise FormatError(f"{path}: JSON nested too deeply") from None
        return cls.from_params(params, source=os.fspath(path), rope_scale_factor=rope_scale_factor,
                               llama2_vocab_size=llama2_vocab_size)
