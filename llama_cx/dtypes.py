"""Weight types: one table for every size and name a dtype has, in every file format llama_cx reads.

A tensor of `numel` elements of type `dt` takes numel // dt.block_size * dt.block_bytes bytes (float types are
blocks of one element). What happens to a weight of each type at load:
  - `widen_to` set: converted once at load to that type, which the products read (f16 -> f32 exactly, by the
    to_f32 kernel of its C row);
  - else `c_id` set: the products read it as it is (csrc/dtypes.c, the row with that id, has its kernels): the
    GGUF block types Q8_0 .. Q6_K stay in the file mapping, as mapped;
  - neither: refused with a one-line error naming the type.
Adding a weight type is one row here (and one row plus its kernels in csrc/dtypes.c when C reads it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class DType:
    name: str  # llama_cx's name: "bf16", "q8_0", ...
    block_size: int  # elements per block
    block_bytes: int  # bytes per block
    ggml_id: Optional[int] = None  # ggml.h enum ggml_type (the type of a tensor in a GGUF file)
    c_id: Optional[int] = None  # its row of csrc/dtypes.c (enum lcx_dtype); None: no C kernel touches it
    widen_to: Optional[str] = None  # converted to this type at load when no kernel reads it
    torch: Optional[str] = None  # torch dtype name in a torch.save pickle
    safetensors: Optional[str] = None  # dtype string of a safetensors header
    weight: bool = True  # False: a C row for activations only (q8_k, the K-quants' input blocks), no weight reads it

    @property
    def ggml_name(self) -> str:
        """The name ggml and GGUF tools print (Q4_K, BF16, ...)."""
        return self.name.upper()

    @property
    def itemsize(self) -> int:
        """Bytes per element of a float type (one-element blocks)."""
        if self.block_size != 1:
            raise ValueError(f"{self.name} is a block format ({self.block_size} elements in {self.block_bytes} bytes)")
        return self.block_bytes

    def nbytes(self, numel: int) -> int:
        """Bytes of `numel` elements (a multiple of block_size)."""
        return numel // self.block_size * self.block_bytes


def _row(name, block_size, block_bytes, ggml_id=None, **kw) -> DType:
    return DType(name, block_size, block_bytes, ggml_id, **kw)


# Block sizes and bytes per block: ggml.h / GGML_QUANT_SIZES. C ids: enum lcx_dtype in csrc/lcx.h.
DTYPES = (
    _row("f32", 1, 4, ggml_id=0, c_id=0, torch="float32", safetensors="F32"),
    _row("f16", 1, 2, ggml_id=1, c_id=2, widen_to="f32", torch="float16", safetensors="F16"),
    _row("bf16", 1, 2, ggml_id=30, c_id=1, torch="bfloat16", safetensors="BF16"),
    # GGUF block types, read in place (quantized one-token products, exact f32 panels for prompt blocks)
    _row("q8_0", 32, 34, ggml_id=8, c_id=3), _row("q4_0", 32, 18, ggml_id=2, c_id=4),
    _row("q4_1", 32, 20, ggml_id=3, c_id=5), _row("q5_0", 32, 22, ggml_id=6, c_id=6),
    _row("q5_1", 32, 24, ggml_id=7, c_id=7), _row("q2_k", 256, 84, ggml_id=10, c_id=8),
    _row("q3_k", 256, 110, ggml_id=11, c_id=9), _row("q4_k", 256, 144, ggml_id=12, c_id=10),
    _row("q5_k", 256, 176, ggml_id=13, c_id=11), _row("q6_k", 256, 210, ggml_id=14, c_id=12),
    _row("q8_k", 256, 292, ggml_id=15, c_id=13, weight=False),
    # GGUF types llama_cx names (sizes, error messages, `llama-cx info`) but does not read
    _row("q8_1", 32, 40, ggml_id=9),
    _row("iq2_xxs", 256, 66, ggml_id=16), _row("iq2_xs", 256, 74, ggml_id=17), _row("iq3_xxs", 256, 98, ggml_id=18),
    _row("iq1_s", 256, 50, ggml_id=19), _row("iq4_nl", 32, 18, ggml_id=20), _row("iq3_s", 256, 110, ggml_id=21),
    _row("iq2_s", 256, 82, ggml_id=22), _row("iq4_xs", 256, 136, ggml_id=23),
    _row("i8", 1, 1, ggml_id=24, safetensors="I8"), _row("i16", 1, 2, ggml_id=25, safetensors="I16"),
    _row("i32", 1, 4, ggml_id=26, safetensors="I32"), _row("i64", 1, 8, ggml_id=27, safetensors="I64"),
    _row("f64", 1, 8, ggml_id=28, safetensors="F64"), _row("iq1_m", 256, 56, ggml_id=29),
    _row("tq1_0", 256, 54, ggml_id=34), _row("tq2_0", 256, 66, ggml_id=35), _row("mxfp4", 32, 17, ggml_id=39),
    _row("nvfp4", 64, 36, ggml_id=40), _row("q1_0", 128, 18, ggml_id=41),
    # safetensors types llama_cx names (header checks, error messages) but does not read: the format's dtype enum
    # (huggingface/safetensors safetensors/src/tensor.rs `Dtype`), one byte or more per element
    _row("u8", 1, 1, safetensors="U8"), _row("u16", 1, 2, safetensors="U16"), _row("u32", 1, 4, safetensors="U32"),
    _row("u64", 1, 8, safetensors="U64"), _row("bool", 1, 1, safetensors="BOOL"),
    _row("f8_e4m3", 1, 1, safetensors="F8_E4M3"), _row("f8_e5m2", 1, 1, safetensors="F8_E5M2"),
    _row("f8_e8m0", 1, 1, safetensors="F8_E8M0"),
)

BY_NAME: Dict[str, DType] = {d.name: d for d in DTYPES}
BY_GGML_ID: Dict[int, DType] = {d.ggml_id: d for d in DTYPES if d.ggml_id is not None}
BY_TORCH: Dict[str, DType] = {d.torch: d for d in DTYPES if d.torch}
BY_SAFETENSORS: Dict[str, DType] = {d.safetensors: d for d in DTYPES if d.safetensors}


def dtype(name: str) -> DType:
    return BY_NAME[name]


def kernel_dtype(name: str) -> DType:
    """The type the products read for weights stored as `name`: its widening, or itself."""
    d = BY_NAME[name]
    return d if d.widen_to is None else BY_NAME[d.widen_to]


def readable(d: DType) -> bool:
    """Whether weights of this type can be run (read by a kernel row, or widened at load to a type that is)."""
    return d.weight and (d.c_id is not None or d.widen_to is not None)


def readable_list(name_of) -> str:
    """'BF16, F16, F32, Q4_0, Q4_1 and Q8_0': the types llama_cx runs, each named by name_of(dtype) (None: a type
    that format cannot hold), for error messages."""
    names = sorted(name_of(d) for d in DTYPES if readable(d) and name_of(d))
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
