"""GGUF files: our own reader (no `gguf` package at run time) and the loader of `llama` architecture models.

Layout of a GGUF file (versions 2 and 3; little-endian; spec: ggml/docs/gguf.md):
    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x (key: string, value type u32, value)          string = length u64 + UTF-8 bytes
    n_tensors x (name: string, n_dims u32, dims u64[n_dims] (ne0 first), ggml type u32, offset u64)
    padding to `general.alignment` (default 32) | tensor data (each offset relative to here, aligned)

The file is mmapped once. Every count, length and offset is checked against the bytes that remain before
anything is allocated or read, so a hostile or truncated file gives a one-line FormatError, never a huge
allocation, a hang or a crash.

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
import mmap
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .checkpoint import Checkpoint, expected_shapes
from .config import ROPE_HIGH_FREQ_FACTOR, ROPE_LOW_FREQ_FACTOR, ROPE_ORIGINAL_CONTEXT, ModelConfig
from .errors import FormatError, LlamaCxError
from .tensor import Tensor, contiguous_strides, map_model_file, weight_buffer

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

# ---- ggml tensor types: id -> (name, block size in elements, bytes per block) (ggml.h, GGML_QUANT_SIZES) ----
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
# types we can use: zero-copy views, or dequantized to bf16 at load by llama_cx._dequant
_VIEW_DTYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
_DEQUANTIZED = {"Q8_0", "Q4_0", "Q4_1"}

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


def _show(s: str, limit: int = 80) -> str:
    """A file-provided name for a one-line error message: as is when short and printable, else escaped."""
    if s.isprintable() and " " not in s and 0 < len(s) <= limit:
        return s
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 5] + "...'"


def _brief(v, limit: int = 60) -> str:
    """repr of a file-provided value, cut short for an error message."""
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


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


def _check_supported(path: str, ti: GGUFTensorInfo):
    if ti.type_name not in _VIEW_DTYPES and ti.type_name not in _DEQUANTIZED:
        raise FormatError(
            f"{path}: tensor {_show(ti.name)} has type {ti.type_name}, which is not supported "
            f"(llama_cx reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1)"
        )


def _dequantize_into(mm, ti: GGUFTensorInfo, buf: bytearray, at: int):
    """Dequantize tensor `ti` of the mapped file into buf[at : at + 2 * numel] as bf16."""
    from . import _dequant  # compiled; imported here so metadata-only use needs no build

    with memoryview(mm) as src, memoryview(buf) as dst:
        raw = src[ti.data_offset : ti.data_offset + ti.nbytes]
        _dequant.dequantize_to_bf16(ti.ggml_type, raw, dst[at : at + 2 * ti.numel])


class _Parser:
    """A bounds-checked cursor over the mapped file: every read says what it reads, for the error message."""

    def __init__(self, buf, size: int, path: str):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, msg: str):
        raise FormatError(f"{self.path}: {msg}")

    def need(self, n: int, what: str):
        if n > self.size - self.pos:
            self.fail(f"truncated file: {what} at byte {self.pos} needs {n} bytes, {self.size - self.pos} remain")

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
            self.fail(f"{what}: string length {n} runs past the end of the file ({self.size - self.pos} bytes remain)")
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
                    self.fail(f"{what}: bool value {v} (must be 0 or 1)")
                v = bool(v)
            return v, name
        if vtype == _STRING:
            return _decode(self.raw_string(what)), "string"
        if vtype == _ARRAY:
            if depth >= _MAX_ARRAY_NESTING:
                self.fail(f"{what}: arrays nested deeper than {_MAX_ARRAY_NESTING} levels")
            etype = self.u32(f"element type of {what}")
            count = self.u64(f"element count of {what}")
            if etype not in _TYPE_NAMES:
                self.fail(f"{what}: unknown array element type {etype}")
            if count > (self.size - self.pos) // _MIN_ELEMENT_SIZE[etype]:
                self.fail(
                    f"{what}: array of {count} {_TYPE_NAMES[etype]} values runs past the end of the file "
                    f"({self.size - self.pos} bytes remain)"
                )
            return self.array(etype, count, what, depth), f"array[{_TYPE_NAMES[etype]}]"
        self.fail(f"{what}: unknown value type {vtype}")

    def array(self, etype: int, count: int, what: str, depth: int) -> list:
        if etype in _SCALARS:
            _, code, size = _SCALARS[etype]
            self.need(count * size, what)
            values = list(struct.unpack_from(f"<{count}{code}", self.buf, self.pos))
            self.pos += count * size
            if etype == _BOOL:
                if any(v > 1 for v in values):
                    self.fail(f"{what}: bool array holds a value other than 0 or 1")
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
                    self.fail(f"{what}[{i}]: string length {n} runs past the end of the file "
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
        self.path = os.fspath(path)
        self.metadata: Dict[str, object] = {}
        self.metadata_types: Dict[str, str] = {}  # key -> "uint32", "string", "array[string]", ...
        self.tensor_infos: List[GGUFTensorInfo] = []
        try:
            with open(self.path, "rb") as f:
                self.file_size = os.fstat(f.fileno()).st_size
                if self.file_size < 24:
                    self._fail(f"too small to be a GGUF file ({self.file_size} bytes)")
                # the mapping keeps its own reference to the file: closing `f` is fine
                self._mm = map_model_file(f.fileno())
        except FileNotFoundError:
            self._fail("file not found")
        except IsADirectoryError:
            self._fail("is a directory, not a GGUF file")
        except OSError as e:
            self._fail(f"cannot read ({e.strerror or e})")
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    @property
    def mmap(self) -> mmap.mmap:
        return self._mm

    def _fail(self, msg: str):
        raise FormatError(f"{self.path}: {msg}")

    def _parse(self):
        p = _Parser(self._mm, self.file_size, self.path)
        magic = self._mm[:4]
        if magic != GGUF_MAGIC:
            self._fail(f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
        p.pos = 4
        version = p.u32("version")
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in SUPPORTED_VERSIONS and version & 0xFFFF == 0 and 1 <= swapped <= 3:
            self._fail(f"big-endian GGUF (version {swapped}) is not supported; convert it to little-endian")
        if version not in SUPPORTED_VERSIONS:
            self._fail(f"GGUF version {version} is not supported (llama_cx reads versions 2 and 3)")
        self.version = version
        n_tensors = p.u64("tensor count")
        n_kv = p.u64("metadata count")
        room = self.file_size - p.pos
        if n_kv > room // _MIN_KV_SIZE or n_tensors > room // _MIN_TENSOR_INFO_SIZE or (
            n_kv * _MIN_KV_SIZE + n_tensors * _MIN_TENSOR_INFO_SIZE > room
        ):
            self._fail(
                f"header claims {n_tensors} tensors and {n_kv} metadata entries, more than the "
                f"{self.file_size}-byte file can hold"
            )

        for i in range(n_kv):
            raw = p.raw_string(f"key of metadata entry {i}")
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(f"metadata entry {i}: key {raw[:40]!r} is not UTF-8")
            if key in self.metadata:
                self._fail(f"duplicate metadata key {_show(key)}")
            vtype = p.u32(f"value type of {_show(key)}")
            value, tname = p.value(vtype, f"metadata {_show(key)}")
            self.metadata[key] = value
            self.metadata_types[key] = tname

        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.metadata:
            a = self.metadata["general.alignment"]
            if isinstance(a, bool) or not isinstance(a, int) or a <= 0 or a & (a - 1):
                self._fail(f"general.alignment is {a!r}, it must be a power of two")
            self.alignment = a

        raw_infos = []
        for i in range(n_tensors):
            raw = p.raw_string(f"name of tensor {i}")
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(f"tensor {i}: name {raw[:40]!r} is not UTF-8")
            n_dims = p.u32(f"n_dims of tensor {_show(name)}")
            if not 1 <= n_dims <= MAX_DIMS:
                self._fail(f"tensor {_show(name)} has {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
            p.need(8 * n_dims, f"dims of tensor {_show(name)}")
            dims = struct.unpack_from(f"<{n_dims}Q", self._mm, p.pos)
            p.pos += 8 * n_dims
            gtype = p.u32(f"type of tensor {_show(name)}")
            offset = p.u64(f"offset of tensor {_show(name)}")
            raw_infos.append((name, dims, gtype, offset))

        # tensor data starts at the next multiple of the alignment
        self.data_offset = -(-p.pos // self.alignment) * self.alignment
        data_size = self.file_size - self.data_offset
        if raw_infos and data_size < 0:
            self._fail(f"truncated file: the tensor data section would start at byte {self.data_offset}")

        seen = set()
        for name, dims, gtype, offset in raw_infos:
            if name in seen:
                self._fail(f"duplicate tensor name {_show(name)}")
            seen.add(name)
            if gtype not in GGML_TYPES:
                self._fail(f"tensor {_show(name)} has unknown ggml type {gtype}")
            tname, block, block_bytes = GGML_TYPES[gtype]
            numel = math.prod(dims)
            if numel >= 1 << 63:
                self._fail(f"tensor {_show(name)}: dims {list(dims)} overflow (more than 2^63 elements)")
            if dims[0] % block:
                self._fail(
                    f"tensor {_show(name)}: row length {dims[0]} is not a multiple of the {tname} block size {block}"
                )
            nbytes = numel // block * block_bytes
            if offset % self.alignment:
                self._fail(f"tensor {_show(name)}: offset {offset} is not a multiple of the alignment {self.alignment}")
            if offset > data_size or nbytes > data_size - offset:
                self._fail(
                    f"tensor {_show(name)} ({nbytes} bytes at offset {offset}) runs past the end of the file "
                    f"(the data section holds {max(data_size, 0)} bytes)"
                )
            self.tensor_infos.append(
                GGUFTensorInfo(name, gtype, tname, tuple(dims), offset, self.data_offset + offset, nbytes)
            )

        prev = None
        for ti in sorted(self.tensor_infos, key=lambda t: t.offset):
            if prev is not None and ti.offset < prev.offset + prev.nbytes:
                self._fail(f"tensors {_show(prev.name)} and {_show(ti.name)} overlap in the data section")
            prev = ti

    def tensor(self, info: GGUFTensorInfo, name: str = "") -> Tensor:
        """One tensor: a zero-copy view for F32 / F16 / BF16, or a fresh bf16 copy for Q8_0 / Q4_0 / Q4_1."""
        _check_supported(self.path, info)
        if info.type_name in _VIEW_DTYPES:
            dtype = _VIEW_DTYPES[info.type_name]
            return Tensor(dtype, info.shape, contiguous_strides(info.shape), info.data_offset, self._mm, name or info.name)
        buf = bytearray(2 * info.numel)
        _dequantize_into(self._mm, info, buf, 0)
        return Tensor("bf16", info.shape, contiguous_strides(info.shape), 0, buf, name or info.name)

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


# ---- the llama architecture -------------------------------------------------------------------------------

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
        self.gf, self.path, self.md = gf, gf.path, gf.metadata
        self.weights = weights  # False: header and metadata only (quantized tensors are not dequantized)
        self.notes: List[str] = []
        arch = self.md.get("general.architecture")
        if arch is None:
            self.fail("missing general.architecture")
        if arch != "llama":
            self.fail(f"architecture {_show(str(arch))} is not supported (llama_cx runs 'llama' models)")
        self.infos = {ti.name: ti for ti in gf.tensor_infos}
        self.config = self._config(rope_scale_factor)
        self.tensors = self._tensors()

    def fail(self, msg: str):
        raise FormatError(f"{self.path}: {msg}")

    def _int(self, key: str, default=None) -> int:
        v = self.md.get(key, default)
        if v is None:
            self.fail(f"missing metadata {key}")
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            self.fail(f"metadata {key} must be a positive integer, got {_brief(v)}")
        return v

    def _float(self, key: str, default=None) -> float:
        v = self.md.get(key, default)
        if v is None:
            self.fail(f"missing metadata {key}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            self.fail(f"metadata {key} must be a positive number, got {_brief(v)}")
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
            self.fail("llama.attention.value_length differs from the key length (not a Llama layout)")
        n_rot = self._int("llama.rope.dimension_count", hd)
        if n_rot != hd:
            self.fail(
                f"llama.rope.dimension_count is {n_rot}, but partial rotary embeddings are not supported (head_dim {hd})"
            )
        emb = self.infos.get("token_embd.weight")
        if emb is None or len(emb.dims) != 2:
            self.fail("missing tensor token_embd.weight (or it is not 2-D)")
        vocab = emb.dims[1]
        tokens = self.md.get("tokenizer.ggml.tokens")
        for key, n in (
            ("llama.vocab_size", self.md.get("llama.vocab_size")),
            ("tokenizer.ggml.tokens", len(tokens) if isinstance(tokens, list) else None),
        ):
            if n is not None and n != vocab:
                self.fail(f"{key} gives a vocabulary of {_brief(n)} tokens but token_embd.weight has {vocab} rows")

        theta = self._float("llama.rope.freq_base", 10000.0)  # llama.cpp's default when the key is absent
        original_ctx = self._int("llama.rope.scaling.original_context_length", ROPE_ORIGINAL_CONTEXT)
        use_scaled, factor = False, None
        scaling = self.md.get("llama.rope.scaling.type", "none")
        lin_factor = self.md.get("llama.rope.scaling.factor", 1.0)
        if scaling == "linear" and lin_factor == 1.0:
            scaling = "none"
        if scaling not in ("none", "llama3"):
            self.fail(f"rope scaling type {_show(str(scaling))} is not supported (only Llama 3.1 scaling)")
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
            self.fail(str(e).replace("invalid model config: ", ""))

    def _rope_freqs(self, head_dim: int, theta: float, original_ctx: int) -> Tuple[bool, Optional[float]]:
        """Map llama.cpp's rope_freqs.weight back to Meta's use_scaled_rope + factor (or refuse it)."""
        ti = self.infos[_ROPE_FREQS]
        if ti.dims != (head_dim // 2,) or ti.type_name not in ("F32", "F16", "BF16"):
            self.fail(f"{_ROPE_FREQS} is {ti.type_name} {list(ti.dims)}, expected F32 [{head_dim // 2}]")
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
            self.fail(
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
            self.fail(
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
                self.fail(
                    f"unexpected tensor {_show(ti.name)} for a {c.n_layers}-layer llama model (unsupported variant?)"
                )
            want = expected[name]
            if ti.shape != want:
                self.fail(f"tensor {_show(ti.name)} has shape {list(ti.shape)}, expected {list(want)}")
            _check_supported(self.path, ti)
            picked.append((name, ti))
        have = {name for name, _ in picked}
        missing = [n for n in expected if n not in have]
        if missing:
            self.fail(f"missing tensor {gguf_name(missing[0])} ({len(missing)} missing in all)")

        tensors: Dict[str, Tensor] = {}
        quant = [(n, ti) for n, ti in picked if ti.type_name in _DEQUANTIZED]
        for name, ti in picked:
            if ti.type_name in _VIEW_DTYPES:
                tensors[name] = self.gf.tensor(ti, name)
        self.dequant_buffer = None
        if quant and not self.weights:  # what load would make of them, without their data (buffer None)
            for name, ti in quant:
                tensors[name] = Tensor("bf16", ti.shape, contiguous_strides(ti.shape), 0, None, name)
        elif quant:
            buf = weight_buffer(2 * sum(ti.numel for _, ti in quant))  # every dequantized weight, bf16, one allocation
            at = 0
            for name, ti in quant:
                _dequantize_into(self.gf.mmap, ti, buf, at)
                tensors[name] = Tensor("bf16", ti.shape, contiguous_strides(ti.shape), at, buf, name)
                at += 2 * ti.numel
            self.dequant_buffer = buf
        if quant:
            counts = Counter(ti.type_name for _, ti in quant)
            what = ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            self.notes.append(
                f"{len(quant)} tensors ({what}) dequantized to bf16 at load (no native quantized kernels yet)"
            )
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


def load_gguf(path, rope_scale_factor: Optional[float] = None, weights: bool = True):
    """Load a `llama` GGUF file as a llama_cx.checkpoint.Checkpoint (format 'gguf', Meta tensor names).

    F32 / F16 / BF16 tensors are zero-copy views of the mmapped file; Q8_0 / Q4_0 / Q4_1 are dequantized
    to bf16 into one buffer. `rope_scale_factor` overrides the Llama 3.1 rope scaling factor.
    weights=False reads the header and metadata only: quantized tensors are records without data.
    """
    gf = GGUFFile(path)
    try:
        llama = _LlamaGGUF(gf, rope_scale_factor, weights)
    except BaseException:
        gf.close()
        raise
    tokenizer = None
    if "tokenizer.ggml.model" in gf.metadata:
        from .tokenizer import Tokenizer

        try:
            tokenizer = Tokenizer.from_gguf_metadata(gf.metadata, source=gf.path)
        except LlamaCxError as e:  # the weights are still usable with token ids
            msg = str(e)
            llama.notes.append("no tokenizer: " + (msg[len(gf.path) + 2 :] if msg.startswith(gf.path + ": ") else msg))
    keepalive = [gf.mmap] + ([llama.dequant_buffer] if llama.dequant_buffer is not None else [])
    return Checkpoint(
        path=gf.path,
        format="gguf",
        config=llama.config,
        tensors=llama.tensors,
        tokenizer_path=None,
        tokenizer=tokenizer,
        metadata=llama.summary_metadata(),
        notes=llama.notes,
        file_size=gf.file_size,
        keepalive=keepalive,
        mapped=gf.mmap,
    )
