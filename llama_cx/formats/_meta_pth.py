"""One Meta consolidated.NN.pth (a torch.save zip archive) mapped once, read without torch, and the state-dict
names the single-file (meta.py) and multi-shard (meta_shards.py) loaders share.

How a torch.save file is read:
  1. _zipfile.read_zip_directory: the central directory, with every member's absolute data offset checked;
  2. _unpickle.load_pickle on <prefix>/data.pkl: a restricted interpreter that turns the state dict into
     TensorRef records (storage key, dtype, shape, strides, element offset) without executing anything;
  3. each TensorRef becomes a Tensor over the mmap at  member offset + storage_offset * itemsize,
     after checking that its extent lies inside its storage member.
Nothing here reads weight bytes (only zip headers and data.pkl are touched), so opening costs page-table
entries, not memory; the kernels fault weights in on first use.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

from .. import dtypes
from ..config import ModelConfig
from ..errors import FormatError
from ..tensor import Tensor, contiguous_strides, map_model_file
from ._unpickle import TensorRef, load_pickle
from ._zipfile import read_zip_directory
from .checkpoint import TokenizerSpec

SHARD_RE = re.compile(r"^consolidated\.(\d+)\.pth$")
LAYER_RE = re.compile(r"^layers\.(\d{1,9})\.")
TOKENIZER_MISSING = "tokenizer.model is missing"  # for messages about a Meta checkpoint without a tokenizer
IGNORED = {"rope.freqs": "ignored rope.freqs (Llama 2's precomputed RoPE table; RoPE is recomputed from params.json)"}


def fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


class TorchFile:
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
        dt = dtypes.BY_TORCH.get(ref.dtype)
        if dt is None or not dtypes.readable(dt):
            raise FormatError(
                f"{self.path}: tensor {name} has dtype {ref.dtype} ({ref.storage.storage_type}); "
                f"only {dtypes.readable_list(lambda d: d.torch)} checkpoints are supported"
            )
        st = ref.storage
        member = self.members.get(f"{self.prefix}data/{st.key}")
        if member is None:
            raise FormatError(f"{self.path}: tensor {name} refers to storage {st.key!r}, which is not in the archive")
        isz = dt.itemsize
        if st.numel * isz > member.size:
            raise FormatError(
                f"{self.path}: storage {st.key!r} of tensor {name} declares {st.numel} elements "
                f"({st.numel * isz} bytes) but its zip member holds {member.size} bytes"
            )
        if all(d > 0 for d in ref.shape):
            last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.strides))  # highest element index
            if last >= st.numel:
                raise FormatError(
                    f"{self.path}: tensor {name} (shape {fmt(ref.shape)}, strides {fmt(ref.strides)}, "
                    f"storage offset {ref.offset}) reaches element {last} of a storage of {st.numel} elements"
                )
        if not _non_overlapping(ref.shape, ref.strides):
            # e.g. stride 0 (an expanded tensor): a few bytes of storage could declare a whole model, and the
            # contiguous copy the loader makes of a strided view would then allocate all of it
            raise FormatError(
                f"{self.path}: tensor {name} (shape {fmt(ref.shape)}, strides {fmt(ref.strides)}) reads some "
                f"storage elements more than once (overlapping or zero strides); not supported"
            )
        return Tensor(dt.name, ref.shape, ref.strides, member.offset + ref.offset * isz, self.mm, name)


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


def contiguous_copy(t: Tensor) -> Tensor:
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


def tokenizer_spec(directory: str) -> Tuple[Optional[TokenizerSpec], List[str]]:
    """(spec, notes) for the tokenizer.model of a Meta checkpoint: tiktoken (Llama 3) or SentencePiece (Llama 2),
    told apart by content. Meta's Llama 2 download keeps tokenizer.model beside the model folders, so a
    SentencePiece one in the parent directory is taken when there is none here."""
    from ..tokenizers.spm import tokenizer_model_kind  # reads a few bytes; builds nothing

    tok = os.path.join(directory, "tokenizer.model")
    if os.path.isfile(tok):
        return TokenizerSpec("spm" if tokenizer_model_kind(tok) == "sentencepiece" else "tiktoken", tok, path=tok), []
    up = os.path.join(os.path.dirname(os.path.abspath(directory)), "tokenizer.model")
    if os.path.isfile(up) and os.access(up, os.R_OK) and tokenizer_model_kind(up) == "sentencepiece":
        return TokenizerSpec("spm", up, path=up), [f"tokenizer: {up} (the parent directory, as Meta's Llama 2 "
                                                   f"download lays it out)"]
    return None, []


def params_config(params_path: str, tokenizer: Optional[TokenizerSpec], rope_scale_factor) -> ModelConfig:
    """params.json as a ModelConfig; Llama 2's `vocab_size: -1` is the SentencePiece tokenizer's piece count."""
    llama2_vocab = None
    if tokenizer is not None and tokenizer.kind == "spm":
        from ..tokenizers.spm import piece_count

        llama2_vocab = piece_count(tokenizer.path)
    return ModelConfig.from_params_file(params_path, rope_scale_factor=rope_scale_factor, llama2_vocab_size=llama2_vocab)
