"""Safetensors files: our own reader (the `safetensors` package is test-only), tensors as zero-copy views.

Layout of a .safetensors file (https://github.com/huggingface/safetensors, "Format"):
    header length N: u64 little-endian | N bytes of JSON (UTF-8, starts with '{', may be padded with spaces)
    | data section: every tensor's bytes, row-major, little-endian
The JSON maps each tensor name to {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]},
offsets relative to the start of the data section; an optional "__metadata__" maps strings to strings.
Every dtype name of the format is a row of llama_cx/dtypes.py (its size checks every entry); F32 / F16 / BF16 are
the ones that load.

Each file is mmapped once. The header length is bounded and checked against the file size before it is read;
every entry's offsets are checked against the data section, against its shape and dtype, and against the other
entries (no two tensors may share bytes), so a hostile or truncated file gives a one-line FormatError, never a
read past the mapping. Sharded checkpoints list tensor -> file in model.safetensors.index.json.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .. import dtypes
from .._json import read_json
from ..errors import FormatError, brief_name
from ..tensor import Tensor, contiguous_strides, map_model_file

# The reference implementation refuses headers over 100 MB (safetensors/src/tensor.rs MAX_HEADER_SIZE); a
# Llama 3 70B shard's header is ~60 KB.
MAX_HEADER_BYTES = 100_000_000
MAX_INDEX_BYTES = 64 << 20
_MAX_DIMS = 8
_U64 = struct.Struct("<Q")


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str  # safetensors name, e.g. "BF16"
    shape: Tuple[int, ...]
    begin: int  # byte offsets inside the data section
    end: int


@dataclass
class SafetensorsFile:
    """One parsed .safetensors file: its entries and one read-only mmap; `tensor(name)` is a zero-copy view."""

    path: str
    size: int
    data_start: int  # file offset of the data section (8 + header length)
    entries: Dict[str, _Entry]
    metadata: Dict[str, str]
    mm: object = field(repr=False)

    def fail(self, msg: str):
        raise FormatError(f"{self.path}: {msg}")

    def tensor(self, name: str, as_name: Optional[str] = None) -> Tensor:
        e = self.entries.get(name)
        if e is None:
            self.fail(f"no tensor {brief_name(name)}")
        dt = dtypes.BY_SAFETENSORS[e.dtype]  # the header check let only the table's types through
        if not dtypes.readable(dt):
            self.fail(f"tensor {brief_name(name)} has dtype {e.dtype}; only "
                      f"{dtypes.readable_list(lambda d: d.safetensors)} are supported")
        return Tensor(dt.name, e.shape, contiguous_strides(e.shape), self.data_start + e.begin, self.mm, as_name or name)


def open_safetensors(path) -> SafetensorsFile:
    """Parse and map one .safetensors file; every offset is checked before any view can be made."""
    path = os.fspath(path)

    def fail(msg):
        raise FormatError(f"{path}: {msg}")

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                fail(f"too small to be a safetensors file ({size} bytes; the header length alone takes 8)")
            n = _U64.unpack(head)[0]
            if n > size - 8:
                fail(f"header length {n} runs past the end of the file ({size - 8} bytes follow it)")
            if n > MAX_HEADER_BYTES:
                fail(f"header length {n} is over the {MAX_HEADER_BYTES}-byte limit")
            if n < 2:
                fail(f"header length {n} is too short for a JSON object")
            raw = f.read(n)
            if len(raw) != n:
                fail("file changed size while being read")
            mm = map_model_file(f.fileno())
    except FileNotFoundError:
        fail("file not found")
    except IsADirectoryError:
        fail("is a directory, not a safetensors file")
    except OSError as e:
        fail(f"cannot read ({e.strerror or e})")
    if len(mm) != size:
        fail("file changed size while being loaded")
    entries, metadata = _parse_header(raw, size - 8 - n, fail)
    return SafetensorsFile(path=path, size=size, data_start=8 + n, entries=entries, metadata=metadata, mm=mm)


def _parse_header(raw: bytes, data_size: int, fail) -> Tuple[Dict[str, _Entry], Dict[str, str]]:
    if raw[:1] != b"{":
        fail(f"header does not start with a JSON object (first bytes {raw[:16]!r}); not a safetensors file?")
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        fail(f"header is not UTF-8 (byte {e.start})")
    except ValueError as e:
        fail(f"header is not valid JSON ({e})")
    except RecursionError:
        fail("header JSON is nested too deeply")
    if not isinstance(header, dict):
        fail("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        fail("__metadata__ must map strings to strings")

    entries: Dict[str, _Entry] = {}
    for name, info in header.items():
        what = f"tensor {brief_name(name)}"
        if not isinstance(info, dict):
            fail(f"{what}: header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        dt = dtypes.BY_SAFETENSORS.get(dtype) if isinstance(dtype, str) else None
        if dt is None:
            fail(f"{what} has unknown dtype {brief_name(dtype, 24)}")
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62 for d in shape)):
            fail(f"{what}: shape {brief_name(shape, 60)} is not a list of at most {_MAX_DIMS} non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            fail(f"{what}: data_offsets {brief_name(offsets, 60)} is not a pair of integers")
        begin, end = offsets
        if begin < 0 or end < begin:
            fail(f"{what}: data_offsets [{begin}, {end}] are not 0 <= begin <= end")
        if end > data_size:
            fail(f"{what}: data_offsets [{begin}, {end}] run past the end of the file "
                 f"(the data section holds {data_size} bytes)")
        numel = 1
        for d in shape:
            numel *= d
        if dt.nbytes(numel) != end - begin:
            fail(f"{what}: shape {_fmt(shape)} of {dtype} needs {dt.nbytes(numel)} bytes but its "
                 f"data_offsets [{begin}, {end}] hold {end - begin}")
        entries[name] = _Entry(name, dtype, tuple(shape), begin, end)

    # No two tensors may share bytes (a small file could otherwise declare many views of the same data).
    # The reference writer packs them back to back; we accept gaps.
    spans = sorted((e.begin, e.end, e.name) for e in entries.values() if e.end > e.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            fail(f"tensors {brief_name(n0, 40)} [{b0}, {e0}] and {brief_name(n1, 40)} [{b1}, {e1}] overlap")
    return entries, metadata


# ---- sharded checkpoints: model.safetensors.index.json --------------------------------------------------------


def open_index(index_path: str) -> Tuple[Dict[str, SafetensorsFile], List[SafetensorsFile]]:
    """(tensor name -> the open file holding it, files) for a sharded checkpoint's index.json.

    Every shard the index names must exist and hold the tensors the index puts in it."""
    index = read_json(index_path, MAX_INDEX_BYTES, "the index")
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise FormatError(f"{index_path}: no weight_map object of tensor name -> shard file name")
    directory = os.path.dirname(os.path.abspath(index_path))
    files: Dict[str, SafetensorsFile] = {}
    by_tensor: Dict[str, SafetensorsFile] = {}
    for name, shard in wmap.items():
        if shard not in files:
            if os.path.basename(shard) != shard or shard in ("", ".", ".."):
                raise FormatError(f"{index_path}: shard name {brief_name(shard)} is not a file name in this directory")
            p = os.path.join(directory, shard)
            if not os.path.isfile(p):
                raise FormatError(f"{index_path}: missing shard {brief_name(shard)} (it holds {brief_name(name)})")
            files[shard] = open_safetensors(p)
        st = files[shard]
        if name not in st.entries:
            raise FormatError(f"{st.path}: no tensor {brief_name(name)}, which {os.path.basename(index_path)} puts in it")
        by_tensor[name] = st
    return by_tensor, list(files.values())
