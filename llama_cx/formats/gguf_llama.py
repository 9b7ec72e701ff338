"""GGUF files of architecture `llama`: metadata -> ModelConfig, tensor names -> Meta's, the tokenizer spec.

Q/K row layout. llama.cpp's converter (convert_hf_to_gguf.py, `LlamaModel.permute`) reshapes HF's q_proj
(and k_proj, with n_head_kv) as (n_head, 2, head_dim/2, dim) and swaps axes 1 and 2. That is exactly the
inverse of the permutation transformers applied when it converted Meta's weights to HF
(convert_llama_weights_to_hf.py `permute`: view (n_head, head_dim/2, 2, dim), transpose(1, 2)). So the rows
of attn_q / attn_k in a GGUF are Meta's original interleaved-pair layout: RoPE rotates adjacent pairs
(2i, 2i+1) of each head, as in Meta's model.py and llama.cpp's LLAMA_ROPE_TYPE_NORM. We load them as they are;
tests/test_gguf.py::test_qk_rows_are_meta_layout proves it numerically (Meta -> HF -> GGUF -> our reader).
"""
from __future__ import annotations

import math
import re
import struct
from collections import Counter
from typing import Dict, List, Optional, Tuple

from .. import dtypes
from ..config import ROPE_HIGH_FREQ_FACTOR, ROPE_LOW_FREQ_FACTOR, ROPE_ORIGINAL_CONTEXT, ModelConfig
from ..errors import FormatError, brief, brief_name, fail
from ..tensor import Tensor
from .checkpoint import Checkpoint, MappedFile, TokenizerSpec, expected_shapes
from .gguf import FILE_TYPES, GGUFFile, GGUFTensorInfo, check_supported


_BLOCK_TENSORS = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_down": "feed_forward.w2",
    "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",  # absent: tied to token_embd
}
_BLOCK_RE = re.compile(r"blk\.(0|[1-9][0-9]{0,5})\.([a-z_]+)\.weight")
_ROPE_FREQS = "rope_freqs.weight"
# metadata arrays too big to repeat in Checkpoint.metadata (the tokenizer gets them whole)
_BULKY_LEN = 1024
# the sampling a model recommends (llama.cpp's converter writes them from generation_config.json) -> SamplingParams
# field names; Checkpoint.sampling holds them as found, the CLI checks them before use
SAMPLING_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repeat_penalty",
    "general.sampling.penalty_last_n": "repeat_last_n",
}

# The type of each metadata key read here without _int/_float (which check theirs); tokenizer.ggml.* are checked
# by the tokenizer, which a bad vocabulary only drops. Checked once at load, so no later read meets an array
# where it expects a string (a chat template of type int was a TypeError in the chat-format recogniser).
_INTS = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")
_KINDS = {"a string": ("string",), "an integer": _INTS, "a number": _INTS + ("float32", "float64")}
_KEY_TYPES = {
    "general.architecture": "a string", "general.name": "a string", "general.file_type": "an integer",
    "llama.vocab_size": "an integer", "llama.rope.scaling.type": "a string", "llama.rope.scaling.factor": "a number",
    "tokenizer.chat_template": "a string",
}


def meta_name(gguf_name: str) -> Optional[str]:
    """The Meta name of a llama GGUF tensor, e.g. blk.3.ffn_gate.weight -> layers.3.feed_forward.w1.weight."""
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_TENSORS:
        return f"layers.{m.group(1)}.{_BLOCK_TENSORS[m.group(2)]}.weight"
    return None


def gguf_name(name: str) -> str:
    """The llama GGUF name of a Meta tensor name (inverse of meta_name)."""
    for g, m in _GLOBAL_TENSORS.items():
        if m == name:
            return g
    layer, _, rest = name[len("layers."):].partition(".")
    for g, m in _BLOCK_TENSORS.items():
        if rest == m + ".weight":
            return f"blk.{layer}.{g}.weight"
    return name


def _llama_rope_factors(head_dim: int, theta: float, factor: float, original_context: int) -> List[float]:
    """Per-frequency divisors of Llama 3.1 rope scaling: freq / factors[i] is Meta's `apply_scaling(freqs)[i]`.

    This is what llama.cpp's converter stores as rope_freqs.weight (LlamaModel.generate_extra_tensors).
    """
    low_wavelen = original_context / ROPE_LOW_FREQ_FACTOR
    high_wavelen = original_context / ROPE_HIGH_FREQ_FACTOR
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            low, high = ROPE_LOW_FREQ_FACTOR, ROPE_HIGH_FREQ_FACTOR
            smooth = (original_context / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


class _LlamaGGUF:
    """Turns a parsed GGUFFile of architecture `llama` into config + Meta-named tensors."""

    def __init__(self, gf: GGUFFile, rope_scale_factor: Optional[float], weights: bool = True):
        self.weights = weights  # False: header and metadata only (quantized tensors are not dequantized)
        self.gf, self.path, self.md = gf, gf.path, gf.metadata
        self.notes: List[str] = []
        for key, kind in _KEY_TYPES.items():
            if key in self.md and gf.metadata_types[key] not in _KINDS[kind]:
                fail(self.path, f"metadata {key} must be {kind}, got {gf.metadata_types[key]}"
                                + ("" if isinstance(self.md[key], list) else f" {brief(self.md[key])}"))
        arch = self.md.get("general.architecture")
        if arch is None:
            fail(self.path, "missing general.architecture")
        if arch != "llama":
            fail(self.path, f"architecture {brief_name(str(arch))} is not supported (llama_cx runs 'llama' models)")
        self.infos = {ti.name: ti for ti in gf.tensor_infos}
        self.config = self._config(rope_scale_factor)
        self.tensors = self._tensors()

    def _int(self, key: str, default=None) -> int:
        v = self.md.get(key, default)
        if v is None:
            fail(self.path, f"missing metadata {key}")
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            fail(self.path, f"metadata {key} must be a positive integer, got {brief(v)}")
        return v

    def _float(self, key: str, default=None) -> float:
        v = self.md.get(key, default)
        if v is None:
            fail(self.path, f"missing metadata {key}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            fail(self.path, f"metadata {key} must be a positive number, got {brief(v)}")
        return float(v)

    def _config(self, rope_scale_factor: Optional[float]) -> ModelConfig:
        dim = self._int("llama.embedding_length")
        n_layers = self._int("llama.block_count")
        n_heads = self._int("llama.attention.head_count")
        n_kv_heads = self._int("llama.attention.head_count_kv", n_heads)
        hidden_dim = self._int("llama.feed_forward_length")
        # head_dim 0 = dim // n_heads, checked by ModelConfig
        head_dim = self._int("llama.attention.key_length") if "llama.attention.key_length" in self.md else 0
        hd = head_dim or dim // n_heads
        if self._int("llama.attention.value_length", hd) != hd:
            fail(self.path, "llama.attention.value_length differs from the key length (not a Llama layout)")
        n_rot = self._int("llama.rope.dimension_count", hd)
        if n_rot != hd:
            fail(self.path,
                f"llama.rope.dimension_count is {n_rot}, but partial rotary embeddings are not supported (head_dim {hd})"
            )
        emb = self.infos.get("token_embd.weight")
        if emb is None or len(emb.dims) != 2:
            fail(self.path, "missing tensor token_embd.weight (or it is not 2-D)")
        vocab = emb.dims[1]
        tokens = self.md.get("tokenizer.ggml.tokens")
        for key, n in (
            ("llama.vocab_size", self.md.get("llama.vocab_size")),
            ("tokenizer.ggml.tokens", len(tokens) if isinstance(tokens, list) else None),
        ):
            if n is not None and n != vocab:
                fail(self.path, f"{key} gives a vocabulary of {brief(n)} tokens but token_embd.weight has {vocab} rows")

        theta = self._float("llama.rope.freq_base", 10000.0)  # llama.cpp's default when the key is absent
        original_ctx = self._int("llama.rope.scaling.original_context_length", ROPE_ORIGINAL_CONTEXT)
        use_scaled, factor = False, None
        scaling = self.md.get("llama.rope.scaling.type", "none")
        lin_factor = self.md.get("llama.rope.scaling.factor", 1.0)
        if scaling == "linear" and lin_factor == 1.0:
            scaling = "none"
        if scaling not in ("none", "llama3"):
            fail(self.path, f"rope scaling type {brief_name(str(scaling))} is not supported (only Llama 3.1 scaling)")
        if scaling == "llama3":  # not written by llama.cpp today, but unambiguous if a file says so
            use_scaled, factor = True, self._float("llama.rope.scaling.factor")
        if _ROPE_FREQS in self.infos:
            use_scaled, factor = self._rope_freqs(hd, theta, original_ctx)
        if rope_scale_factor is not None:
            factor = float(rope_scale_factor)
        max_seq = self._int("llama.context_length", 131072 if use_scaled else 8192)
        try:
            return ModelConfig(
                dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab_size=vocab,
                hidden_dim=hidden_dim, norm_eps=self._float("llama.attention.layer_norm_rms_epsilon", 1e-5),
                rope_theta=theta, use_scaled_rope=use_scaled, rope_scale_factor=factor or 8.0,
                rope_original_context=original_ctx, max_seq_len=max_seq, head_dim=head_dim,
            )
        except FormatError as e:
            fail(self.path, str(e).replace("invalid model config: ", ""))

    def _rope_freqs(self, head_dim: int, theta: float, original_ctx: int) -> Tuple[bool, Optional[float]]:
        """Map llama.cpp's rope_freqs.weight back to Meta's use_scaled_rope + factor (or refuse it)."""
        ti = self.infos[_ROPE_FREQS]
        if ti.dims != (head_dim // 2,) or ti.type_name not in ("F32", "F16", "BF16"):
            fail(self.path, f"{_ROPE_FREQS} is {ti.type_name} {list(ti.dims)}, expected F32 [{head_dim // 2}]")
        with self.gf.tensor_bytes(ti) as raw:
            if ti.type_name == "F32":
                got = list(struct.unpack(f"<{ti.dims[0]}f", raw))
            elif ti.type_name == "F16":
                got = list(struct.unpack(f"<{ti.dims[0]}e", raw))
            else:
                got = [struct.unpack("<f", b"\0\0" + bytes(raw[i : i + 2]))[0] for i in range(0, ti.nbytes, 2)]
        if all(g == 1.0 for g in got):
            self.notes.append(f"{_ROPE_FREQS} is all ones: no rope scaling")
            return False, None
        factor = max(got)
        # checked before use: a tensor of zeros made _llama_rope_factors divide by zero (found by fuzzing)
        valid = math.isfinite(factor) and factor > 1
        want = _llama_rope_factors(head_dim, theta, factor, original_ctx) if valid else []
        if not valid or any(not math.isclose(g, w, rel_tol=1e-3) for g, w in zip(got, want)):
            fail(self.path,
                f"{_ROPE_FREQS} holds per-dimension rope factors that do not match Llama 3.1 rope scaling "
                f"(theta {theta:g}, original context {original_ctx}); custom rope factors are not supported"
            )
        self.notes.append(f"{_ROPE_FREQS} matches Llama 3.1 rope scaling (factor {factor:g})")
        return True, factor

    def _tensors(self) -> Dict[str, Tensor]:
        c = self.config
        tied = "output.weight" not in self.infos
        # Bound the work by the blocks the file holds before sizing anything from llama.block_count: a
        # block_count of 2^32 - 1 made expected_shapes loop for minutes (found by fuzzing).
        blocks = {int(m.group(1)) for m in (_BLOCK_RE.fullmatch(ti.name) for ti in self.gf.tensor_infos) if m}
        if c.n_layers > len(blocks):
            first = min(set(range(len(blocks) + 1)) - blocks)
            fail(self.path,
                f"missing tensor blk.{first}.attn_q.weight (llama.block_count is {c.n_layers} but the file holds "
                f"tensors of {len(blocks)} blocks)"
            )
        expected = expected_shapes(c, tied)

        picked: List[Tuple[str, GGUFTensorInfo]] = []
        for ti in self.gf.tensor_infos:
            if ti.name == _ROPE_FREQS:
                continue
            name = meta_name(ti.name)
            if name not in expected:
                fail(self.path,
                    f"unexpected tensor {brief_name(ti.name)} for a {c.n_layers}-layer llama model (unsupported variant?)"
                )
            want = expected[name]
            if ti.shape != want:
                fail(self.path, f"tensor {brief_name(ti.name)} has shape {list(ti.shape)}, expected {list(want)}")
            check_supported(self.path, ti)
            picked.append((name, ti))
        have = {name for name, _ in picked}
        missing = [n for n in expected if n not in have]
        if missing:
            fail(self.path, f"missing tensor {gguf_name(missing[0])} ({len(missing)} missing in all)")

        # every tensor a view of the file: block types stay quantized (zero-copy), their kernels read ggml's blocks
        tensors: Dict[str, Tensor] = {name: self.gf.tensor(ti, name) for name, ti in picked}
        return {n: tensors[n] for n in expected}

    def summary_metadata(self) -> dict:
        out = {}
        for k, v in self.md.items():
            if isinstance(v, list) and len(v) > _BULKY_LEN:
                out[k] = f"<{self.gf.metadata_types[k]} of {len(v)}>"
            else:
                out[k] = v
        out["gguf_version"] = self.gf.version
        ft = self.md.get("general.file_type")
        if isinstance(ft, int) and not isinstance(ft, bool):
            out["file_type"] = FILE_TYPES.get(ft, f"file type {ft}")
        counts = Counter(ti.type_name for ti in self.gf.tensor_infos)
        out["tensor_types"] = dict(counts.most_common())
        mats = Counter(ti.type_name for ti in self.gf.tensor_infos if len(ti.dims) >= 2)
        out["dtype"] = mats.most_common(1)[0][0] if mats else counts.most_common(1)[0][0]
        return out


def load(path, rope_scale_factor: Optional[float] = None, weights: bool = True) -> Checkpoint:
    """Load a `llama` GGUF file as a Checkpoint (format 'gguf', Meta tensor names).

    Every tensor is a zero-copy view of the mmapped file, the GGUF block types (Q8_0 ... Q6_K) included: their
    kernels read ggml's blocks. `rope_scale_factor` overrides the Llama 3.1 rope scaling factor.
    weights=False reads the header and metadata only (the same views: nothing is made from them).
    """
    gf = GGUFFile(path)
    try:
        llama = _LlamaGGUF(gf, rope_scale_factor, weights)
    except BaseException:
        gf.close()
        raise
    md = llama.summary_metadata()
    name = md.get("general.name")
    tokenizer = None
    if "tokenizer.ggml.model" in gf.metadata:  # the weights are still usable with token ids without it
        # "llama" is SentencePiece (Llama 2); the rest is byte-level BPE, which refuses what it does not know
        kind = "gguf-spm" if gf.metadata["tokenizer.ggml.model"] == "llama" else "gguf"
        tokenizer = TokenizerSpec(kind, gf.path, metadata=gf.metadata, required=False)
    return Checkpoint(
        path=gf.path,
        format="gguf",
        config=llama.config,
        tensors=llama.tensors,
        files=[MappedFile(gf.path, gf.file_size, gf.mmap)],
        tokenizer=tokenizer,
        metadata=md,
        notes=llama.notes,
        buffers=[],
        format_description=f"GGUF v{gf.version}" + (f", {md['file_type']}" if md.get("file_type") else ""),
        tokenizer_missing="the GGUF has no usable tokenizer.ggml.* metadata",
        display_name=name if isinstance(name, str) and name else "",
        sampling={field: gf.metadata[key] for key, field in SAMPLING_KEYS.items() if key in gf.metadata},
        has_weights=weights,
    )
