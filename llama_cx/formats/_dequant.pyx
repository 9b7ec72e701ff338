# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Dequantizers for the GGUF block formats llama_cx reads: Q8_0, Q4_0, Q4_1 -> bf16.

Block layouts (ggml-common.h; 32 weights per block, little-endian, no padding):
    Q8_0: d (f16), qs[32] (int8)                 w[j] = d * qs[j]
    Q4_0: d (f16), qs[16] (two 4-bit per byte)   w[j] = d * ((qs[j] & 15) - 8),  w[j + 16] = d * ((qs[j] >> 4) - 8)
    Q4_1: d (f16), m (f16), qs[16]               w[j] = d * (qs[j] & 15) + m,    w[j + 16] = d * (qs[j] >> 4) + m

Each weight is computed in f32 exactly as ggml's dequantize_row_* (and gguf-py's `dequantize`) do, then
rounded to bf16 with round-to-nearest-even (NaN kept quiet), like ggml's GGML_FP32_TO_BF16.
The products d * q are exact in f32 (an 11-bit f16 mantissa times an integer of at most 8 bits), so
whether the compiler fuses `d * q + m` into an FMA cannot change the result: the bf16 output is
bit-identical to `bf16_rne(gguf.quants.dequantize(...))` on every compiler and flag set.

Performance notes (2-core shared box, one thread): the f16 scale is converted once per block with integer
bit operations (no F16C dependency). The f32 -> bf16 rounding is written as a select, not an if: with the
NaN branch GCC did not vectorize the per-block loops (1.56 ns per weight); branch-free they vectorize on the
SSE2 baseline (0.53 ns per weight): SmolLM2-135M's 134 M Q4_1 + Q8_0 weights take 0.07 s into a warm buffer,
0.23 s for the whole GGUF load (parse + dequant), which is then dominated by first-touch page faults of the
output. Tensors of 2^15 blocks and more are split statically across OpenMP threads (prange).
"""
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from cython.parallel cimport prange

# ggml type ids (ggml.h enum ggml_type)
Q4_0 = 2
Q4_1 = 3
Q8_0 = 8

BLOCK_SIZE = 32
# Tensors smaller than this (in blocks; 2^15 blocks = 1 M weights) are done on the calling thread: an OpenMP
# region per small tensor costs more than it saves, and on a busy machine each barrier can wait a whole
# scheduler time slice for a descheduled thread (measured: SmolLM2 load 2.3 s with a region per tensor,
# 0.22 s serial, on 2 cores with load average 3.5).
PARALLEL_MIN_BLOCKS = 1 << 15
# bytes per block, by ggml type id
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}


cdef inline float _f16_to_f32(uint16_t h) noexcept nogil:
    """IEEE half -> float, exact (subnormals, infinities and NaN payloads included)."""
    cdef uint32_t sign = (<uint32_t>(h & 0x8000)) << 16
    cdef uint32_t exp = (h >> 10) & 0x1F
    cdef uint32_t mant = h & 0x3FF
    cdef uint32_t bits
    cdef float f
    if exp == 0:
        f = <float>mant * 5.9604644775390625e-08  # mant * 2^-24: exact, covers zero and subnormals
        return -f if sign else f
    if exp == 31:
        bits = sign | 0x7F800000 | (mant << 13)
    else:
        bits = sign | ((exp + 112) << 23) | (mant << 13)
    memcpy(&f, &bits, 4)
    return f


cdef inline uint16_t _f32_to_bf16(float f) noexcept nogil:
    """float -> bf16, round to nearest even; NaN stays NaN (quiet bit forced), like ggml_compute_fp32_to_bf16.

    Branch-free (a select, not an if) so the per-block loops vectorize.
    """
    cdef uint32_t u
    memcpy(&u, &f, 4)
    cdef uint32_t rounded = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    cdef uint32_t quiet_nan = (u >> 16) | 64
    return <uint16_t>(quiet_nan if (u & 0x7FFFFFFF) > 0x7F800000 else rounded)


cdef inline uint16_t _load_u16(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef void _block_q8_0(const uint8_t* src, uint16_t* dst) noexcept nogil:
    cdef float d = _f16_to_f32(_load_u16(src))
    cdef const int8_t* qs = <const int8_t*>(src + 2)
    cdef int j
    for j in range(32):
        dst[j] = _f32_to_bf16(<float>qs[j] * d)


cdef void _block_q4_0(const uint8_t* src, uint16_t* dst) noexcept nogil:
    cdef float d = _f16_to_f32(_load_u16(src))
    cdef const uint8_t* qs = src + 2
    cdef int j
    for j in range(16):
        dst[j] = _f32_to_bf16(d * <float>(<int>(qs[j] & 0x0F) - 8))
        dst[j + 16] = _f32_to_bf16(d * <float>(<int>(qs[j] >> 4) - 8))


cdef void _block_q4_1(const uint8_t* src, uint16_t* dst) noexcept nogil:
    cdef float d = _f16_to_f32(_load_u16(src))
    cdef float m = _f16_to_f32(_load_u16(src + 2))
    cdef const uint8_t* qs = src + 4
    cdef int j
    for j in range(16):
        dst[j] = _f32_to_bf16(d * <float>(qs[j] & 0x0F) + m)
        dst[j + 16] = _f32_to_bf16(d * <float>(qs[j] >> 4) + m)


cdef inline void _block(int t, const uint8_t* s, uint16_t* o, Py_ssize_t b) noexcept nogil:
    if t == 8:
        _block_q8_0(s + b * 34, o + b * 32)
    elif t == 2:
        _block_q4_0(s + b * 18, o + b * 32)
    else:
        _block_q4_1(s + b * 20, o + b * 32)


def dequantize_to_bf16(int ggml_type, const uint8_t[::1] src, uint8_t[::1] dst):
    """Dequantize whole blocks: src (n_blocks * block_bytes,) raw GGUF data -> dst (n_blocks * 32,) bf16 bytes.

    `dst` is little-endian bf16 (2 bytes per weight), in the same element order as `src`.
    Raises ValueError for an unknown type or mismatched lengths (a caller bug: the GGUF reader checks sizes).
    """
    if ggml_type not in BLOCK_BYTES:
        raise ValueError(f"no dequantizer for ggml type {ggml_type}")
    cdef Py_ssize_t bb = BLOCK_BYTES[ggml_type]
    cdef Py_ssize_t n_blocks = src.shape[0] // bb
    if src.shape[0] != n_blocks * bb or dst.shape[0] != n_blocks * 64:
        raise ValueError(
            f"dequantize_to_bf16: src has {src.shape[0]} bytes, dst {dst.shape[0]}: "
            f"expected whole {bb}-byte blocks and 64 output bytes per block"
        )
    if n_blocks == 0:
        return
    cdef const uint8_t* s = &src[0]
    cdef uint16_t* o = <uint16_t*>&dst[0]  # native uint16 stores: little-endian hosts only (x86-64, arm64)
    if (<size_t>o) & 1:
        raise ValueError("dequantize_to_bf16: dst must be 2-byte aligned")
    cdef Py_ssize_t b
    cdef int t = ggml_type
    if n_blocks < PARALLEL_MIN_BLOCKS:
        with nogil:
            for b in range(n_blocks):
                _block(t, s, o, b)
        return
    with nogil:
        for b in prange(n_blocks, schedule="static"):
            _block(t, s, o, b)
