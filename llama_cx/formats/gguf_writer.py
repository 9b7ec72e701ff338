"""Writing GGUF v3 files (the layout gguf.py reads; spec: ggml/docs/gguf.md), without the `gguf` package.

    w = GGUFWriter(path)
    w.add("general.architecture", "llama", "string")
    w.add_tensor("token_embd.weight", (vocab, dim), ggml_type)      # row-major shape; ggml dims are reversed
    with w.data() as put:                                             # header written; then the tensors in order
        put(raw_bytes_of_token_embd)

Every tensor's size is known from its type and shape before any data is written, so the header (with every
offset) goes out first and the tensors stream after it, one at a time: quantizing an 8B model never holds more
than one tensor in memory.
"""
from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from typing import List, Sequence, Tuple

from .. import dtypes
from ..errors import FormatError

ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT: each tensor starts at a multiple of it, relative to the data section

# gguf.md gguf_metadata_value_type
_SCALAR = {"uint8": (0, "B"), "int8": (1, "b"), "uint16": (2, "H"), "int16": (3, "h"), "uint32": (4, "I"),
           "int32": (5, "i"), "float32": (6, "f"), "bool": (7, "?"), "uint64": (10, "Q"), "int64": (11, "q"),
           "float64": (12, "d")}
_STRING, _ARRAY = 8, 9


def _string(s) -> bytes:
    raw = s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(raw)) + raw


def _value(value, vtype: str) -> bytes:
    """The encoding of one value of type `vtype` ("uint32", "string", "array[string]", ...), type id first."""
    if vtype == "string":
        return struct.pack("<I", _STRING) + _string(value)
    if vtype in _SCALAR:
        tid, code = _SCALAR[vtype]
        return struct.pack("<I", tid) + struct.pack("<" + code, value)
    if vtype.startswith("array[") and vtype.endswith("]"):
        etype = vtype[len("array["):-1]
        values = list(value)
        head = struct.pack("<I", _ARRAY)
        if etype == "string":
            return head + struct.pack("<IQ", _STRING, len(values)) + b"".join(_string(v) for v in values)
        if etype in _SCALAR:
            tid, code = _SCALAR[etype]
            return head + struct.pack("<IQ", tid, len(values)) + struct.pack(f"<{len(values)}{code}", *values)
    raise ValueError(f"GGUF value type {vtype!r} is not supported by the writer")


class GGUFWriter:
    def __init__(self, path):
        self.path = os.fspath(path)
        self.kv: List[bytes] = []
        self.keys = set()
        self.tensors: List[Tuple[str, Tuple[int, ...], dtypes.DType, int]] = []  # name, shape, type, offset
        self._end = 0  # bytes of the data section so far (aligned)

    def add(self, key: str, value, vtype: str) -> None:
        if key in self.keys:
            raise ValueError(f"duplicate GGUF key {key}")
        self.keys.add(key)
        self.kv.append(_string(key) + _value(value, vtype))

    def add_tensor(self, name: str, shape: Sequence[int], ggml_type: int) -> None:
        """Declare a tensor of row-major `shape` (rows, columns); its bytes come later, in declaration order."""
        dt = dtypes.BY_GGML_ID[ggml_type]
        numel = 1
        for d in shape:
            numel *= d
        if shape[-1] % dt.block_size:
            raise ValueError(f"{name}: row length {shape[-1]} is not a multiple of the {dt.ggml_name} block")
        self.tensors.append((name, tuple(shape), dt, self._end))
        self._end += -(-dt.nbytes(numel) // ALIGNMENT) * ALIGNMENT

    def _header(self) -> bytes:
        out = [b"GGUF", struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))]
        out += self.kv
        for name, shape, dt, offset in self.tensors:
            dims = tuple(reversed(shape))  # ne0 (columns) first
            out.append(_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, dt.ggml_id, offset))
        head = b"".join(out)
        return head + b"\0" * (-len(head) % ALIGNMENT)

    @contextmanager
    def data(self):
        """Write the header, then yield put(raw) to be called once per declared tensor, in order."""
        tmp = self.path + ".part"  # a failed run leaves no file that looks complete
        try:
            f = open(tmp, "wb")
        except OSError as e:
            raise FormatError(f"{self.path}: cannot write ({e.strerror or e})") from None
        done = [0]
        try:
            with f:
                f.write(self._header())

                def put(raw) -> None:
                    name, shape, dt, offset = self.tensors[done[0]]
                    numel = 1
                    for d in shape:
                        numel *= d
                    n = memoryview(raw).nbytes
                    if n != dt.nbytes(numel):
                        raise ValueError(f"{name}: {n} bytes given, {dt.nbytes(numel)} expected")
                    f.write(raw)
                    f.write(b"\0" * (-n % ALIGNMENT))
                    done[0] += 1

                yield put
                if done[0] != len(self.tensors):
                    raise ValueError(f"{len(self.tensors) - done[0]} declared tensors were not written")
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
