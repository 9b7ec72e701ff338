"""GGUF files: our own reader of the container (no `gguf` package at run time); architectures map its tensors
elsewhere (gguf_llama.py for `llama`).

Layout of a GGUF file (versions 2 and 3; little-endian; spec: ggml/docs/gguf.md):
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x (key: string, value type u32, value)          string = length u64 + UTF-8 bytes
    n_tensors x (name: string, n_dims u32, dims u64[n_dims] (ne0 first), ggml type u32, offset u64)
    padding to `general.alignment` (default 32) | tensor data (each offset relative to here, aligned)

The file is mmapped once. Every count, length and offset is checked against the bytes that remain before
anything is allocated or read, so a hostile or truncated file gives a one-line FormatError, never a huge
allocation, a hang or a crash.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .. import dtypes
from .._limits import MAX_GGUF_ELEMENTS, MAX_GGUF_KEYS, MAX_GGUF_TENSORS, open_regular
from ..errors import FormatError, brief_name, fail
from ..tensor import Tensor, contiguous_strides, map_model_file

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_NESTING = 8

# ---- metadata value types (gguf.md "gguf_metadata_value_type") ------------------------------------------
_STRING, _ARRAY = 8, 9
# type id -> (name, struct code, size)
_SCALARS = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "B", 1),  # decoded below; only 0 and 1 are valid
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
_BOOL = 7
_TYPE_NAMES = {**{t: v[0] for t, v in _SCALARS.items()}, _STRING: "string", _ARRAY: "array"}
# smallest encoding of one array element of each type: lets us refuse a count before looping over it
_MIN_ELEMENT_SIZE = {**{t: v[2] for t, v in _SCALARS.items()}, _STRING: 8, _ARRAY: 12}
_MIN_KV_SIZE = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset

# general.file_type (llama.h enum llama_ftype) -> name, for `llama-cx info`
FILE_TYPES = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0", 8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS", 20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M", 28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M", 32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE", 39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0",
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _decode(raw: bytes) -> str:
    # GGUF strings are UTF-8; a few real vocabularies hold token pieces that are not. Keep those bytes
    # recoverable (.encode("utf-8", "surrogateescape")) rather than refusing the whole model.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    ggml_type: int
    type_name: str  # e.g. "Q4_1"
    dims: Tuple[int, ...]  # GGUF order, fastest-varying first: (ne0 = columns, ne1 = rows, ...)
    offset: int  # bytes from the start of the data section
    data_offset: int  # bytes from the start of the file
    nbytes: int

    @property
    def shape(self) -> Tuple[int, ...]:
        """Row-major (numpy / torch) shape: the dims reversed, e.g. (rows, columns)."""
        return tuple(reversed(self.dims))

    @property
    def numel(self) -> int:
        return math.prod(self.dims)

    @property
    def dtype(self) -> dtypes.DType:
        return dtypes.BY_GGML_ID[self.ggml_type]


def check_supported(path: str, ti: GGUFTensorInfo):
    if not dtypes.readable(ti.dtype):
        raise FormatError(
            f"{path}: tensor {brief_name(ti.name)} has type {ti.type_name}, which is not supported "
            f"(llama_cx reads {dtypes.readable_list(lambda d: d.ggml_id is not None and d.ggml_name)})"
        )


class _Parser:
    """A bounds-checked cursor over the mapped file: every read says what it reads, for the error message."""

    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0
        self.elements_left = MAX_GGUF_ELEMENTS  # metadata array elements still allowed (see _limits)

    def need(self, n: int, what: str):
        if n > self.size - self.pos:
            fail(self.path, f"truncated file: {what} at byte {self.pos} needs {n} bytes, {self.size - self.pos} remain")

    def u32(self, what: str) -> int:
        self.need(4, what)
        v = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        if n > self.size - self.pos:
            fail(self.path, f"{what}: string length {n} runs past the end of the file ({self.size - self.pos} bytes remain)")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw

    def value(self, vtype: int, what: str, depth: int = 0):
        """One metadata value of type `vtype`; returns (value, type name)."""
        if vtype in _SCALARS:
            name, code, size = _SCALARS[vtype]
            self.need(size, what)
            v = struct.unpack_from("<" + code, self.buf, self.pos)[0]
            self.pos += size
            if vtype == _BOOL:
                if v > 1:
                    fail(self.path, f"{what}: bool value {v} (must be 0 or 1)")
                v = bool(v)
            return v, name
        if vtype == _STRING:
            return _decode(self.raw_string(what)), "string"
        if vtype == _ARRAY:
            if depth >= _MAX_ARRAY_NESTING:
                fail(self.path, f"{what}: arrays nested deeper than {_MAX_ARRAY_NESTING} levels")
            etype = self.u32(f"element type of {what}")
            count = self.u64(f"element count of {what}")
            if etype not in _TYPE_NAMES:
                fail(self.path, f"{what}: unknown array element type {etype}")
            if count > (self.size - self.pos) // _MIN_ELEMENT_SIZE[etype]:
                fail(self.path,
                    f"{what}: array of {count} {_TYPE_NAMES[etype]} values runs past the end of the file "
                    f"({self.size - self.pos} bytes remain)"
                )
            self.elements_left -= count
            if self.elements_left < 0:
                fail(self.path, f"{what}: array of {count} values brings the metadata past {MAX_GGUF_ELEMENTS} "
                                f"array elements in all (refused before reading)")
            return self.array(etype, count, what, depth), f"array[{_TYPE_NAMES[etype]}]"
        fail(self.path, f"{what}: unknown value type {vtype}")

    def array(self, etype: int, count: int, what: str, depth: int) -> list:
        if etype in _SCALARS:
            _, code, size = _SCALARS[etype]
            self.need(count * size, what)
            values = list(struct.unpack_from(f"<{count}{code}", self.buf, self.pos))
            self.pos += count * size
            if etype == _BOOL:
                if any(v > 1 for v in values):
                    fail(self.path, f"{what}: bool array holds a value other than 0 or 1")
                values = [v == 1 for v in values]
            return values
        if etype == _STRING:
            # the hot loop of every load (128k tokens + 280k merges for Llama 3): locals only
            buf, size, pos, unpack = self.buf, self.size, self.pos, _U64.unpack_from
            raws = []
            for i in range(count):
                if size - pos < 8:
                    self.pos = pos
                    self.need(8, f"length of {what}[{i}]")
                n = unpack(buf, pos)[0]
                pos += 8
                if n > size - pos:
                    fail(self.path, f"{what}[{i}]: string length {n} runs past the end of the file "
                                    f"({size - pos} bytes remain)")
                raws.append(buf[pos : pos + n])
                pos += n
            self.pos = pos
            try:
                return [r.decode("utf-8") for r in raws]
            except UnicodeDecodeError:
                return [_decode(r) for r in raws]
        # nested arrays: each element is (element type u32, count u64, elements)
        return [self.value(_ARRAY, f"{what}[{i}]", depth + 1)[0] for i in range(count)]


class GGUFFile:
    """A parsed GGUF file: header, metadata and tensor infos, over one read-only mmap of the file.

    Nothing is decoded from the tensor data here; `tensor_bytes(info)` gives a zero-copy view of one tensor.
    """

    def __init__(self, path):
        self.path = os.fsdecode(path)
        self.metadata: Dict[str, object] = {}
        self.metadata_types: Dict[str, str] = {}  # key -> "uint32", "string", "array[string]", ...
        self.tensor_infos: List[GGUFTensorInfo] = []
        try:
            with open_regular(self.path, "file") as f:  # not found / a FIFO or device: one-line FormatError
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size < 24:
                    fail(self.path, f"too small to be a GGUF file ({self.file_size} bytes)")
                # the mapping keeps its own reference to the file: closing `f` is fine
                self._mm = map_model_file(f.fileno())
        except OSError as e:
            fail(self.path, f"cannot read ({e.strerror or e})")
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    @property
    def mmap(self) -> mmap.mmap:
        return self._mm

    def _parse(self):
        p = _Parser(self._mm, self.file_size, self.path)
        magic = self._mm[:4]
        if magic != GGUF_MAGIC:
            fail(self.path, f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
        p.pos = 4
        version = p.u32("version")
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in SUPPORTED_VERSIONS and version & 0xFFFF == 0 and 1 <= swapped <= 3:
            fail(self.path, f"big-endian GGUF (version {swapped}) is not supported; convert it to little-endian")
        if version not in SUPPORTED_VERSIONS:
            fail(self.path, f"GGUF version {version} is not supported (llama_cx reads versions 2 and 3)")
        self.version = version
        n_tensors = p.u64("tensor count")
        n_kv = p.u64("metadata count")
        if n_tensors > MAX_GGUF_TENSORS or n_kv > MAX_GGUF_KEYS:
            fail(self.path, f"header claims {n_tensors} tensors and {n_kv} metadata entries; at most "
                            f"{MAX_GGUF_TENSORS} tensors and {MAX_GGUF_KEYS} entries are read")
        room = self.file_size - p.pos
        if n_kv > room // _MIN_KV_SIZE or n_tensors > room // _MIN_TENSOR_INFO_SIZE or (
            n_kv * _MIN_KV_SIZE + n_tensors * _MIN_TENSOR_INFO_SIZE > room
        ):
            fail(self.path,
                f"header claims {n_tensors} tensors and {n_kv} metadata entries, more than the "
                f"{self.file_size}-byte file can hold"
            )

        for i in range(n_kv):
            raw = p.raw_string(f"key of metadata entry {i}")
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                fail(self.path, f"metadata entry {i}: key {raw[:40]!r} is not UTF-8")
            if key in self.metadata:
                fail(self.path, f"duplicate metadata key {brief_name(key)}")
            vtype = p.u32(f"value type of {brief_name(key)}")
            value, tname = p.value(vtype, f"metadata {brief_name(key)}")
            self.metadata[key] = value
            self.metadata_types[key] = tname

        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.metadata:
            a = self.metadata["general.alignment"]
            if isinstance(a, bool) or not isinstance(a, int) or a <= 0 or a & (a - 1):
                fail(self.path, f"general.alignment is {a!r}, it must be a power of two")
            self.alignment = a

        raw_infos = []
        for i in range(n_tensors):
            raw = p.raw_string(f"name of tensor {i}")
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                fail(self.path, f"tensor {i}: name {raw[:40]!r} is not UTF-8")
            n_dims = p.u32(f"n_dims of tensor {brief_name(name)}")
            if not 1 <= n_dims <= MAX_DIMS:
                fail(self.path, f"tensor {brief_name(name)} has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
            p.need(8 * n_dims, f"dims of tensor {brief_name(name)}")
            dims = struct.unpack_from(f"<{n_dims}Q", self._mm, p.pos)
            p.pos += 8 * n_dims
            gtype = p.u32(f"type of tensor {brief_name(name)}")
            offset = p.u64(f"offset of tensor {brief_name(name)}")
            raw_infos.append((name, dims, gtype, offset))

        # tensor data starts at the next multiple of the alignment
        self.data_offset = -(-p.pos // self.alignment) * self.alignment
        data_size = self.file_size - self.data_offset
        if raw_infos and data_size < 0:
            fail(self.path, f"truncated file: the tensor data section would start at byte {self.data_offset}")

        seen = set()
        for name, dims, gtype, offset in raw_infos:
            if name in seen:
                fail(self.path, f"duplicate tensor name {brief_name(name)}")
            seen.add(name)
            if gtype not in dtypes.BY_GGML_ID:
                fail(self.path, f"tensor {brief_name(name)} has unknown ggml type {gtype}")
            dt = dtypes.BY_GGML_ID[gtype]
            tname, block = dt.ggml_name, dt.block_size
            numel = math.prod(dims)
            if numel >= 1 << 63:
                fail(self.path, f"tensor {brief_name(name)}: dims {list(dims)} overflow (more than 2^63 elements)")
            if dims[0] % block:
                fail(self.path,
                    f"tensor {brief_name(name)}: row length {dims[0]} is not a multiple of the {tname} block size {block}"
                )
            nbytes = dt.nbytes(numel)
            if offset % self.alignment:
                fail(self.path, f"tensor {brief_name(name)}: offset {offset} is not a multiple of the alignment {self.alignment}")
            if offset > data_size or nbytes > data_size - offset:
                fail(self.path,
                    f"tensor {brief_name(name)} ({nbytes} bytes at offset {offset}) runs past the end of the file "
                    f"(the data section holds {max(data_size, 0)} bytes)"
                )
            self.tensor_infos.append(
                GGUFTensorInfo(name, gtype, tname, tuple(dims), offset, self.data_offset + offset, nbytes)
            )

        prev = None
        for ti in sorted(self.tensor_infos, key=lambda t: t.offset):
            if prev is not None and ti.offset < prev.offset + prev.nbytes:
                fail(self.path, f"tensors {brief_name(prev.name)} and {brief_name(ti.name)} overlap in the data section")
            prev = ti

    def tensor(self, info: GGUFTensorInfo, name: str = "") -> Tensor:
        """One tensor as a zero-copy view of the mapped file (float and block types alike: the block types' kernels
        read ggml's blocks in place; f16 is widened later, by the model)."""
        check_supported(self.path, info)
        return Tensor(info.dtype.name, info.shape, contiguous_strides(info.shape), info.data_offset, self._mm,
                      name or info.name)

    def tensor_bytes(self, info: GGUFTensorInfo) -> memoryview:
        """The raw bytes of one tensor, zero-copy (release the view before calling close())."""
        return memoryview(self._mm)[info.data_offset : info.data_offset + info.nbytes]

    def close(self):
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # views are still alive; the mapping goes when they do
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
