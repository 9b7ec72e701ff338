"""Checkpoint loading: a Meta directory (params.json + consolidated.00.pth [+ tokenizer.model]) becomes a
Checkpoint of zero-copy tensor views over one read-only mmap of the .pth. torch is not used.

How a torch.save file is read:
  1. _zipfile.read_zip_directory: the central directory, with every member's absolute data offset checked;
  2. _unpickle.load_pickle on <prefix>/data.pkl: a restricted interpreter that turns the state dict into
     TensorRef records (storage key, dtype, shape, strides, element offset) without executing anything;
  3. each TensorRef becomes a Tensor over the mmap at  member offset + storage_offset * itemsize,
     after checking that its extent lies inside its storage member.
Nothing here reads weight bytes (only zip headers and data.pkl are touched), so loading costs page-table
entries, not memory; the kernels fault weights in on first use.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ._unpickle import TensorRef, load_pickle
from ._zipfile import read_zip_directory
from .config import ModelConfig
from .errors import FormatError
from .tensor import DTYPE_SIZE, Tensor, contiguous_strides, map_model_file

# torch dtype name -> llama_cx dtype
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
_SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
_LAYER_RE = re.compile(r"^layers\.(\d{1,9})\.")
_IGNORED = {"rope.freqs": "ignored rope.freqs (Llama 2's precomputed RoPE table; RoPE is recomputed from params.json)"}


@dataclass
class Checkpoint:
    path: str
    format: str  # 'meta' | 'gguf'
    config: ModelConfig
    tensors: Dict[str, Tensor]  # Meta names (output.weight absent when tied to tok_embeddings.weight)
    tokenizer_path: Optional[str] = None  # Meta tiktoken tokenizer.model, when present
    tokenizer: object = None  # a ready tokenizer (GGUF metadata), when the format carries one
    metadata: dict = field(default_factory=dict)  # extra facts for `llama-cx info`
    notes: List[str] = field(default_factory=list)
    file_size: int = 0
    keepalive: list = field(default_factory=list)  # mmaps/buffers the tensors point into
    mapped: object = None  # the read-only mmap of `path` that zero-copy tensors view


def expected_shapes(config: ModelConfig, tied: bool) -> Dict[str, Tuple[int, ...]]:
    """Every Meta tensor name the config implies, with its shape (torch Linear weights are (out, in))."""
    c = config
    shapes = {"tok_embeddings.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        p = f"layers.{i}."
        shapes[p + "attention.wq.weight"] = (c.q_dim, c.dim)
        shapes[p + "attention.wk.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attention.wv.weight"] = (c.kv_dim, c.dim)
        shapes[p + "attention.wo.weight"] = (c.dim, c.q_dim)
        shapes[p + "feed_forward.w1.weight"] = (c.hidden_dim, c.dim)
        shapes[p + "feed_forward.w2.weight"] = (c.dim, c.hidden_dim)
        shapes[p + "feed_forward.w3.weight"] = (c.hidden_dim, c.dim)
        shapes[p + "attention_norm.weight"] = (c.dim,)
        shapes[p + "ffn_norm.weight"] = (c.dim,)
    shapes["norm.weight"] = (c.dim,)
    if not tied:
        shapes["output.weight"] = (c.vocab_size, c.dim)
    return shapes


def load_checkpoint(path, rope_scale_factor: Optional[float] = None, weights: bool = True) -> Checkpoint:
    """Load a Meta checkpoint directory, a consolidated.00.pth (params.json beside it), or a .gguf file.
    weights=False: header and metadata only (GGUF quantized tensors are not dequantized; Meta tensors are
    views of the mapping either way)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return _load_meta_dir(path, rope_scale_factor)
    if _magic(path) == b"GGUF":
        from .gguf import load_gguf  # imports this module: keep the import here

        return load_gguf(path, rope_scale_factor=rope_scale_factor, weights=weights)
    return _load_meta(os.path.dirname(os.path.abspath(path)), path, rope_scale_factor)


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None


def _load_meta_dir(directory: str, rope_scale_factor) -> Checkpoint:
    shards = sorted(n for n in os.listdir(directory) if _SHARD_RE.match(n))
    if len(shards) > 1:
        raise FormatError(f"{directory}: multi-shard checkpoints are not supported yet ({len(shards)} shards: {', '.join(shards)})")
    if not os.path.isfile(os.path.join(directory, "params.json")):
        raise FormatError(f"{directory}: no params.json (expected a Meta checkpoint directory: params.json, consolidated.00.pth, tokenizer.model)")
    pth = os.path.join(directory, "consolidated.00.pth")
    if not os.path.isfile(pth):
        raise FormatError(f"{directory}: no consolidated.00.pth (expected a Meta checkpoint directory: params.json, consolidated.00.pth, tokenizer.model)")
    return _load_meta(directory, pth, rope_scale_factor)


def _load_meta(directory: str, pth: str, rope_scale_factor) -> Checkpoint:
    if _SHARD_RE.match(os.path.basename(pth)):
        shards = [n for n in os.listdir(directory) if _SHARD_RE.match(n)]
        if len(shards) > 1:
            raise FormatError(f"{pth}: multi-shard checkpoints are not supported yet ({len(shards)} shards beside it)")
    params_path = os.path.join(directory, "params.json")
    if not os.path.isfile(params_path):
        raise FormatError(f"{params_path}: file not found (a Meta .pth needs the params.json beside it)")
    config = ModelConfig.from_params_file(params_path, rope_scale_factor=rope_scale_factor)

    tf = _TorchFile(pth)
    notes: List[str] = []
    refs: Dict[str, TensorRef] = {}
    for name, value in tf.state_dict.items():
        if name in _IGNORED:
            notes.append(_IGNORED[name])
        elif not isinstance(value, TensorRef):
            notes.append(f"ignored non-tensor entry {name!r} ({type(value).__name__})")
        else:
            refs[name] = value

    # Bound the work by what the file holds before sizing anything from params.json's n_layers.
    layers = {int(m.group(1)) for m in map(_LAYER_RE.match, refs) if m}
    if config.n_layers > len(layers):
        first = min(set(range(len(layers) + 1)) - layers)
        raise FormatError(
            f"{pth}: missing tensor layers.{first}.attention.wq.weight (params.json says n_layers={config.n_layers} "
            f"but the checkpoint has {len(layers)} layers)"
        )
    tied = "output.weight" not in refs
    shapes = expected_shapes(config, tied)
    extra = [n for n in refs if n not in shapes]
    if extra:
        shown = ", ".join(extra[:8]) + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
        notes.append(f"ignored {len(extra)} unexpected tensor(s): {shown}")

    w1 = refs.get("layers.0.feed_forward.w1.weight")
    if w1 is not None and len(w1.shape) == 2 and w1.shape[0] != config.hidden_dim:
        raise FormatError(
            f"{pth}: FFN hidden_dim mismatch: params.json implies {config.hidden_dim} but "
            f"layers.0.feed_forward.w1.weight has {w1.shape[0]} rows"
        )
    missing = [n for n in shapes if n not in refs]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FormatError(f"{pth}: missing tensor {missing[0]} (expected shape {_fmt(shapes[missing[0]])}){more}")
    for name, shape in shapes.items():
        if refs[name].shape != shape:
            raise FormatError(f"{pth}: tensor {name} has shape {_fmt(refs[name].shape)}, expected {_fmt(shape)} from params.json")

    dtype, first = None, None
    tensors: Dict[str, Tensor] = {}
    for name in shapes:
        t = tf.tensor(name, refs[name])
        if dtype is None:
            dtype, first = t.dtype, name
        elif t.dtype != dtype:
            raise FormatError(f"{pth}: mixed dtypes: {first} is {dtype} but {name} is {t.dtype}")
        if not t.is_contiguous:
            t = _contiguous_copy(t)
            notes.append(f"copied non-contiguous tensor {name} into memory")
        tensors[name] = t

    tok = os.path.join(directory, "tokenizer.model")
    return Checkpoint(
        path=pth,
        format="meta",
        config=config,
        tensors=tensors,
        tokenizer_path=tok if os.path.isfile(tok) else None,
        metadata={
            "dtype": dtype,
            "tied_embeddings": tied,
            "n_params": sum(t.numel for t in tensors.values()),
            "params_path": params_path,
        },
        notes=notes,
        file_size=tf.size,
        mapped=tf.mm,
        keepalive=[tf.mm],
    )


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


class _TorchFile:
    """A torch.save zip archive mapped once: its members, its state dict as TensorRefs, and tensor views."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                head = f.read(4)
                if self.size == 0:
                    raise FormatError(f"{path}: empty file")
                if head != b"PK\x03\x04":
                    hint = " (legacy pre-1.6 torch.save format?)" if head[:1] == b"\x80" else ""
                    raise FormatError(f"{path}: not a torch.save checkpoint (not a zip archive){hint}")
                self.members = read_zip_directory(f, self.size, path)
                pkls = [n for n in self.members if n.endswith("/data.pkl") and n.count("/") == 1]
                if len(pkls) != 1:
                    raise FormatError(f"{path}: not a torch.save checkpoint ({len(pkls)} */data.pkl members in the zip)")
                self.prefix = pkls[0][: -len("data.pkl")]
                order = self.members.get(self.prefix + "byteorder")
                if order is not None and _member_bytes(f, order) != b"little":
                    raise FormatError(f"{path}: big-endian checkpoints are not supported (byteorder {_member_bytes(f, order)[:16]!r})")
                pkl = _member_bytes(f, self.members[pkls[0]])
                self.mm = map_model_file(f.fileno())
                if len(self.mm) != self.size:
                    raise FormatError(f"{path}: file changed size while being loaded")
        except OSError as e:
            raise FormatError(f"{path}: cannot read ({e.strerror})") from None
        obj = load_pickle(pkl, f"{path} ({pkls[0]})")
        if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
            raise FormatError(f"{path}: data.pkl holds a {type(obj).__name__}, not a state dict of named tensors")
        self.state_dict: Dict[str, object] = obj

    def tensor(self, name: str, ref: TensorRef) -> Tensor:
        """A view of `ref` over the mmap, after checking its dtype and that it lies inside its storage."""
        dtype = _TORCH_DTYPES.get(ref.dtype)
        if dtype is None:
            raise FormatError(
                f"{self.path}: tensor {name} has dtype {ref.dtype} ({ref.storage.storage_type}); "
                f"only bfloat16, float16 and float32 checkpoints are supported"
            )
        st = ref.storage
        member = self.members.get(f"{self.prefix}data/{st.key}")
        if member is None:
            raise FormatError(f"{self.path}: tensor {name} refers to storage {st.key!r}, which is not in the archive")
        isz = DTYPE_SIZE[dtype]
        if st.numel * isz > member.size:
            raise FormatError(
                f"{self.path}: storage {st.key!r} of tensor {name} declares {st.numel} elements "
                f"({st.numel * isz} bytes) but its zip member holds {member.size} bytes"
            )
        if all(d > 0 for d in ref.shape):
            last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.strides))  # highest element index
            if last >= st.numel:
                raise FormatError(
                    f"{self.path}: tensor {name} (shape {_fmt(ref.shape)}, strides {_fmt(ref.strides)}, "
                    f"storage offset {ref.offset}) reaches element {last} of a storage of {st.numel} elements"
                )
        if not _non_overlapping(ref.shape, ref.strides):
            # e.g. stride 0 (an expanded tensor): a few bytes of storage could declare a whole model, and the
            # contiguous copy the loader makes of a strided view would then allocate all of it
            raise FormatError(
                f"{self.path}: tensor {name} (shape {_fmt(ref.shape)}, strides {_fmt(ref.strides)}) reads some "
                f"storage elements more than once (overlapping or zero strides); not supported"
            )
        return Tensor(dtype, ref.shape, ref.strides, member.offset + ref.offset * isz, self.mm, name)


def _non_overlapping(shape, strides) -> bool:
    """True when no two indices of the view reach the same storage element: taken by increasing stride,
    each dimension's stride clears everything the dimensions inside it span. Such a view holds at most as
    many elements as its storage, so a copy of it is never larger than the file."""
    if 0 in shape:
        return True  # reads nothing
    span = 1  # elements covered by the dimensions taken so far
    for d, s in sorted(((d, s) for d, s in zip(shape, strides) if d > 1), key=lambda ds: ds[1]):
        if s < span:
            return False
        span += s * (d - 1)
    return True


def _member_bytes(f, member) -> bytes:
    f.seek(member.offset)
    return f.read(member.size)  # the size was checked against the file by read_zip_directory


def _contiguous_copy(t: Tensor) -> Tensor:
    """A row-major copy of a strided view (e.g. a transposed slice of a fused matrix); one Python step per row."""
    isz, code = t.itemsize, {2: "H", 4: "I"}[t.itemsize]
    shape, strides = t.shape, t.strides
    out = bytearray(t.nbytes)
    if t.numel:
        span = 1 + sum((d - 1) * s for d, s in zip(shape, strides))  # elements from the first to the last one
        src = memoryview(t.buffer).cast("B")[t.offset : t.offset + span * isz].cast(code)
        dst = memoryview(out).cast(code)
        n, step = shape[-1], strides[-1]
        outer_shape, outer_strides = shape[:-1], strides[:-1]
        pos = 0
        for flat in range(len(out) // (n * isz)):
            base = 0
            for d, s in zip(reversed(outer_shape), reversed(outer_strides)):
                flat, i = divmod(flat, d)
                base += i * s
            if step == 0 or n == 1:
                dst[pos : pos + n] = memoryview(bytes(src[base : base + 1]) * n).cast(code)
            else:
                dst[pos : pos + n] = src[base : base + (n - 1) * step + 1 : step]
            pos += n
    return Tensor(t.dtype, t.shape, contiguous_strides(t.shape), 0, out, t.name)
