"""Checkpoint formats, side by side; `open_checkpoint` looks at what it was given and calls exactly one loader.

    meta.py        a Meta directory: params.json + consolidated.00.pth (_meta_pth.py with _zipfile.py and
                   _unpickle.py read a .pth); meta_shards.py joins several model-parallel consolidated.NN.pth
    gguf.py        the GGUF container;  gguf_llama.py  its `llama` architecture
    safetensors.py the safetensors container;  hf.py  a Hugging Face Llama directory (config.json + safetensors)
    checkpoint.py  the record every loader returns (Checkpoint) and Meta's tensor names, the common schema

Loaders never import each other (meta.py's own shard helper aside); each returns a Checkpoint with Meta tensor names.
"""
from __future__ import annotations

import os
from typing import Optional

from .._limits import check_model_path, open_regular
from ..errors import FormatError
from .checkpoint import Checkpoint, MappedFile, TokenizerSpec, expected_shapes

__all__ = ["open_checkpoint", "sniff", "Checkpoint", "MappedFile", "TokenizerSpec", "expected_shapes"]

_GGUF_MAGIC = b"GGUF"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def sniff(path: str) -> str:
    """What `path` is: 'meta' (a directory with params.json, or a zip/.pth file), 'gguf', 'hf' (a directory with
    config.json or safetensors files), 'safetensors' (a file); anything else is a one-line FormatError naming what
    it looked like."""
    if os.path.isdir(path):
        if os.path.lexists(os.path.join(path, "params.json")):  # a FIFO etc.: meta.py refuses it by name
            return "meta"
        try:
            names = os.listdir(path)
        except OSError as e:
            raise FormatError(f"{path}: cannot list the directory ({e.strerror})") from None
        if "config.json" in names or any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
            return "hf"  # its loader names what a Hugging Face directory lacks (config.json, the weights)
        return "meta"  # its loader names the files a Meta directory needs
    head = _head(path, 16)
    if head[:4] == _GGUF_MAGIC:
        return "gguf"
    if head[:4] == _ZIP_MAGIC:
        return "meta"
    if _looks_like_safetensors(head) or path.endswith(".safetensors"):  # the reader says what is wrong with it
        return "safetensors"
    raise FormatError(f"{path}: {_what_it_looks_like(path, head)}; llama_cx reads a Meta checkpoint directory, "
                      f"a consolidated .pth (zip), a GGUF file, a Hugging Face directory or a .safetensors file")


def open_checkpoint(path, rope_scale_factor: Optional[float] = None, weights: bool = True) -> Checkpoint:
    """Open a Meta checkpoint directory (one or several consolidated.NN.pth), a consolidated.00.pth (params.json
    beside it), a .gguf file, a Hugging Face directory (config.json + safetensors) or one .safetensors file (its
    config.json beside it).

    weights=False reads the header and metadata only (`llama-cx info`): every loader checks names, shapes and
    dtypes as usual but makes no weight memory (no dequantizing, joining of shards or reordering of rows), so
    tensors are records for describing the model (Checkpoint.has_weights is False)."""
    path = os.fsdecode(path)  # bytes (a name that is not UTF-8) -> str with surrogateescape, as argv gives it
    check_model_path(path)  # a FIFO or a device would block or stream forever
    kind = sniff(path)
    if kind == "meta":
        from . import meta

        return meta.load(path, rope_scale_factor, weights)
    if kind == "gguf":
        from . import gguf_llama

        return gguf_llama.load(path, rope_scale_factor, weights)
    from . import hf  # 'hf' or 'safetensors': a directory, or one of its files

    return hf.load(path, rope_scale_factor, weights)


def _head(path: str, n: int) -> bytes:
    with open_regular(path, "model file") as f:
        try:
            return f.read(n)
        except OSError as e:
            raise FormatError(f"{path}: cannot read ({e.strerror})") from None


def _looks_like_safetensors(head: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then the JSON header ('{')."""
    return len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 40


def _what_it_looks_like(path: str, head: bytes) -> str:
    if not head:
        return "empty file"
    if head[:1] == b"\x80":
        return "a bare pickle, not a torch.save zip archive (legacy pre-1.6 torch.save format?)"
    if head[:1] in (b"{", b"["):
        return "a JSON file, not a model"
    if head[:4] == b"GGML" or head[:4] == b"ggjt" or head[:4] == b"ggmf" or head[:4] == b"lmgg":
        return "a pre-GGUF ggml file (convert it to GGUF)"
    shown = head[:8].hex(" ")
    return f"not a model file (starts with bytes {shown})"
