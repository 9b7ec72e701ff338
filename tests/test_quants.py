"""The quantized-block kernels (csrc/kernels/quants.h) against independent oracles:

- dequantization, bit for bit, against the `gguf` package's numpy `gguf.quants.dequantize`, on blocks from
  its own quantizer (the types it can quantize) and on random bytes (every type; the f16 scale fields set to
  finite values: random, extreme, subnormal, zero) with whole zero blocks, rows several blocks long;
- the activation quantizers, byte for byte, against a numpy transcription of ggml's reference
  quantize_row_q8_0_ref / quantize_row_q8_K_ref (ggml-quants.c);
- every row-dot kernel on every path this CPU runs (generic, avx2, avx512, avx512vnni), 1 and N threads,
  against the float64 dot of the dequantized weights and the dequantized activation blocks, odd row counts.
"""
import zlib

import numpy as np
import pytest

from llama_cx import _kernels as K

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as GT  # noqa: E402

TYPES = K.quant_types()
ISAS = [i for i in K.QUANT_ISAS if K.quant_isa_supported(i)]
EPS32 = float(np.finfo(np.float32).eps)

# byte offsets of the f16 fields (scales d, and mins / dmin) inside one block of each type (ggml-common.h)
F16_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
# the f16 field that holds the min / dmin, for the types that have one
MIN_FIELD = {"Q4_1": 2, "Q5_1": 2, "Q2_K": 82, "Q4_K": 2, "Q5_K": 2}
# f16 bit patterns at the edges: largest finite (+-65504), least subnormal, least normal, zeros
EXTREME_F16 = np.array([0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x0400, 0x8400, 0x0000, 0x8000, 0x3C00], dtype=np.uint16)


def block_of(name):
    block, nbytes, act = K.quant_block(name)
    return block, nbytes, act


def random_blocks(name, n_blocks, rng, scales="random", zero_every=0):
    """(n_blocks, bytes per block) uint8 of random bytes whose f16 fields are finite: "random" (any finite
    f16), "moderate" (|d| in [2^-12, 2^2], for dot products), or "extreme" (EXTREME_F16); every
    zero_every-th block all zero bytes."""
    _, nbytes, _ = block_of(name)
    b = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        if scales == "extreme":
            h = rng.choice(EXTREME_F16, size=n_blocks)
        elif scales == "moderate":
            h = (rng.uniform(2.0**-12, 4.0, n_blocks) * rng.choice([-1.0, 1.0], n_blocks)).astype(np.float16).view(np.uint16)
        else:
            h = rng.integers(0, 0x10000, size=n_blocks, dtype=np.uint32).astype(np.uint16)
            h = np.where((h & 0x7C00) == 0x7C00, h & 0xFBFF, h)  # exponent 31 (inf / NaN) -> 30
        b[:, off:off + 2] = h.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    if zero_every:
        b[::zero_every] = 0
    return b


def f32_bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def ours(name, blocks, isa="generic"):
    block, _, _ = block_of(name)
    n = blocks.shape[0] * block
    return np.frombuffer(K.dequantize(name, blocks.tobytes(), n, isa), dtype=np.float32)


def theirs(name, blocks):
    return gguf_quants.dequantize(blocks.reshape(1, -1), GT[name]).reshape(-1).astype(np.float32)


# ---- dequantization -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("scales", ["random", "extreme"])
def test_dequantize_random_blocks_bit_exact(name, scales, isa):
    """Signed zeros included: a negative scale times a zero quant is -0 in gguf-py and must be here."""
    rng = np.random.default_rng(zlib.crc32(f"{name}-{scales}".encode()))
    blocks = random_blocks(name, 203, rng, scales=scales, zero_every=7)  # 203 blocks: 29 rows of 7 blocks
    np.testing.assert_array_equal(f32_bits(ours(name, blocks, isa)), f32_bits(theirs(name, blocks)))


def _gguf_can_quantize(name):
    try:
        gguf_quants.quantize(np.zeros((1, block_of(name)[0]), np.float32), GT[name])
        return True
    except NotImplementedError:
        return False


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_dequantize_gguf_quantized_bit_exact(name, isa):
    if not _gguf_can_quantize(name):
        pytest.skip(f"gguf {name}: no quantizer in the gguf package (random blocks cover it)")
    block, nbytes, _ = block_of(name)
    rng = np.random.default_rng(1)
    rows, n = 5, 7 * block
    w = rng.standard_normal((rows, n)).astype(np.float32)
    w[1] *= 1e-4                     # small scales
    w[2] *= 3e3                      # large ones
    w[3, :block] = 0                 # a zero block
    w[4, ::13] = 40.0                # outliers
    q = gguf_quants.quantize(w, GT[name])
    assert q.shape == (rows, n // block * nbytes)
    got = np.frombuffer(K.dequantize(name, q.tobytes(), rows * n, isa), np.float32).reshape(rows, n)
    ref = gguf_quants.dequantize(q, GT[name]).astype(np.float32)
    np.testing.assert_array_equal(f32_bits(got), f32_bits(ref))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["Q4_0", "Q6_K", "Q5_1"])
def test_dequantize_rows_bf16_rounds_the_f32_weights(name, isa):
    block, nbytes, _ = block_of(name)
    rows, n = 3, 2 * block
    blocks = random_blocks(name, rows * 2, np.random.default_rng(2), scales="moderate")
    f = theirs(name, blocks)
    u = f.view(np.uint32).astype(np.uint64)
    want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = np.frombuffer(K.dequantize_rows_bf16(name, blocks.tobytes(), 2 * nbytes, rows, n, isa), np.uint16)
    np.testing.assert_array_equal(got, want)


# ---- activation quantizers: numpy transcriptions of ggml-quants.c ------------------------------------------
def _roundf(v):
    """C roundf (halves away from zero), exact in float32 (as gguf-py's np_roundf)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + np.floor(2 * (a - f)))


def ref_q8_0(x):
    """quantize_row_q8_0_ref: d = amax / 127 in f32, q = roundf(x * (1 / d)), the f16 of d stored."""
    out = []
    for blk in x.reshape(-1, 32).astype(np.float32):
        amax = np.float32(np.max(np.abs(blk)))
        d = np.float32(amax / np.float32(127))
        idv = np.float32(np.float32(1) / d) if d != 0 else np.float32(0)
        q = _roundf((blk * idv).astype(np.float32)).astype(np.int8)
        out.append(np.float16(d).tobytes() + q.tobytes())
    return b"".join(out)


def ref_q8_K(x):
    """quantize_row_q8_K_ref: max = the value of largest magnitude (first one), iscale = -127 / max,
    q = min(127, nearest_int(iscale * x)) (round half to even), block sums of 16, d = 1 / iscale."""
    out = []
    for blk in x.reshape(-1, 256).astype(np.float32):
        a = np.abs(blk)
        if a.max() == 0:
            out.append(bytes(4 + 256 + 32))
            continue
        mx = blk[int(np.argmax(a))]
        iscale = np.float32(np.float32(-127) / mx)
        v = np.rint((iscale * blk).astype(np.float32)).astype(np.int32)
        q = np.minimum(127, v).astype(np.int8)
        bsums = q.astype(np.int32).reshape(16, 16).sum(axis=1).astype("<i2")
        d = np.float32(np.float32(1) / iscale)
        out.append(np.array([d], "<f4").tobytes() + q.tobytes() + bsums.tobytes())
    return b"".join(out)


def activation_cases(block):
    rng = np.random.default_rng(3)
    n = 6 * block
    yield rng.standard_normal(n).astype(np.float32)
    yield (rng.standard_normal(n) * 1e-3).astype(np.float32)
    yield (rng.standard_normal(n) * 7e3).astype(np.float32)
    x = rng.standard_normal(n).astype(np.float32)
    x[:block] = 0                                       # a zero block
    x[block:2 * block] = -x[block:2 * block]
    x[2 * block + 5] = 25.0                             # max and -max: the first one wins
    x[2 * block + 9] = -25.0
    yield x
    # halves: with amax = 127 the scale is 1 (q8_0) / -1 (q8_K), so x * scale lands on exact .5 ties
    h = (rng.integers(-126, 126, n) + 0.5).astype(np.float32)
    h[::block] = 127.0
    yield h
    yield np.full(n, -3.0, np.float32)                  # every value the max
    # products that round onto a half in f32: an FMA or an unrounded product would round them the other way
    t = rng.integers(-120, 120, n) + 0.5 + rng.choice([-1, 1], n) * 2.0**-19
    t[::block] = 126.99
    yield t.astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", ["Q8_0", "Q8_K"])
def test_quantize_act_matches_ggml_reference(act, isa):
    block = 32 if act == "Q8_0" else 256
    ref = ref_q8_0 if act == "Q8_0" else ref_q8_K
    for i, x in enumerate(activation_cases(block)):
        got, want = K.quantize_act(act, x, isa), ref(x)
        assert got == want, f"case {i}: first differing byte {next(j for j in range(len(want)) if got[j] != want[j])}"


def test_quantize_act_q8_0_agrees_with_gguf():
    """gguf-py's Q8_0 quantizer is a bit-exact copy of ggml's reference too: a second, independent oracle."""
    x = np.random.default_rng(4).standard_normal(32 * 9).astype(np.float32)
    assert K.quantize_act("Q8_0", x) == gguf_quants.quantize(x.reshape(1, -1), GT.Q8_0).tobytes()


# ---- row dots -------------------------------------------------------------------------------------------------
def dequant_act(act, xq, n):
    if act == "Q8_0":
        return gguf_quants.dequantize(np.frombuffer(xq, np.uint8).reshape(1, -1), GT.Q8_0).reshape(-1).astype(np.float64)
    blocks = np.frombuffer(xq, np.uint8).reshape(-1, 292)
    d = blocks[:, :4].copy().view("<f4").astype(np.float64)            # (n_blocks, 1)
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float64)       # (n_blocks, 256)
    return (d * q).reshape(-1)


def dot_reference(name, W, rows, n, xd):
    """float64 W_dequant @ xd, and the magnitude the f32 rounding is measured against: for types with mins
    the scale part and the min part separately (sum |d sc q| |x| + sum |dmin m| |x|), since the kernels
    round them apart before they cancel."""
    _, nbytes, _ = block_of(name)
    blocks = W.reshape(-1, nbytes)
    wd = theirs(name, blocks).astype(np.float64).reshape(rows, n)
    scale_part = wd
    if name in MIN_FIELD:
        b0 = blocks.copy()
        b0[:, MIN_FIELD[name]:MIN_FIELD[name] + 2] = 0
        scale_part = theirs(name, b0).astype(np.float64).reshape(rows, n)
    min_part = scale_part - wd
    mag = np.abs(scale_part) @ np.abs(xd) + np.abs(min_part) @ np.abs(xd)
    return wd @ xd, mag


def dot_cases(name):
    block, _, _ = block_of(name)
    lengths = [block, 3 * block, 7 * block] if block == 256 else [block, 3 * block, 9 * block, 37 * block]
    for rows in (1, 3, 5, 37, 67):
        for n in lengths:
            if rows * n > 67 * 9 * 256:
                continue
            yield rows, n


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_dot_rows_against_float64(name, isa):
    """y = W @ x for quantized W and x quantized by the type's activation quantizer, against float64 on the
    dequantized operands. Within a block the int8 products are summed exactly in int32, so the only error
    is f32 rounding: of the block scale products (d * dx), of int sums past 2^24 turned into f32, and of the
    running sum over n_blocks blocks; bounded by 4 * (n_blocks + 8) * eps32 * sum|w| |x| per row (about
    4x the worst case of that chain). 1 and 3 threads must agree bit for bit (rows are dealt in groups of 4
    a quarter apart, each row summed the same way wherever it lands)."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}-{isa}".encode()))
    for rows, n in dot_cases(name):
        nb = n // block
        W = random_blocks(name, rows * nb, rng, scales="moderate", zero_every=11).reshape(rows, nb * nbytes)
        x = (rng.standard_normal(n) * rng.choice([1e-2, 1.0, 30.0])).astype(np.float32)
        if n >= 2 * block:
            x[:block] = 0  # a zero activation block
        xq = K.quantize_act(act, x)
        ref, mag = dot_reference(name, W, rows, n, dequant_act(act, xq, n))
        y1 = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), nb * nbytes, xq, rows, n, 1), np.float32)
        tol = 4 * (nb + 8) * EPS32 * mag + 1e-30
        err = np.abs(y1.astype(np.float64) - ref)
        assert np.all(err <= tol), (
            f"{name} {isa} rows={rows} n={n}: row {int(np.argmax(err / tol))} off by {err.max():.3g} "
            f"(tolerance {tol[int(np.argmax(err / tol))]:.3g})")
        y3 = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), nb * nbytes, xq, rows, n, 3), np.float32)
        np.testing.assert_array_equal(f32_bits(y3), f32_bits(y1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", [t for t in TYPES if _gguf_can_quantize(t)])
def test_dot_rows_on_gguf_quantized_weights(name, isa):
    """Realistic blocks (gguf's quantizer on Gaussian weights): the product is close to W @ x in float64 as
    above, and within the quantization noise of the unquantized product."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(5)
    rows, n = 37, 12 * block
    w = (rng.standard_normal((rows, n)) * 0.02).astype(np.float32)
    W = gguf_quants.quantize(w, GT[name])
    x = rng.standard_normal(n).astype(np.float32)
    xq = K.quantize_act(act, x)
    ref, mag = dot_reference(name, W, rows, n, dequant_act(act, xq, n))
    y = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), W.shape[1], xq, rows, n, 2), np.float32)
    assert np.all(np.abs(y - ref) <= 4 * (n // block + 8) * EPS32 * mag)
    exact = w.astype(np.float64) @ x.astype(np.float64)
    noise = np.abs(w).astype(np.float64) @ np.abs(x).astype(np.float64)
    assert np.all(np.abs(y - exact) <= 0.1 * noise)  # 4-bit weights: a few % of sum |w||x|


def test_padded_rows_and_all_paths_agree_on_zero():
    """row_bytes larger than the row (a padded stride) is honoured; zero weights give exact zeros."""
    for name in TYPES:
        block, nbytes, act = block_of(name)
        n, rows, pad = 2 * block, 5, 6
        W = np.zeros((rows, 2 * nbytes + pad), np.uint8)
        x = np.random.default_rng(6).standard_normal(n).astype(np.float32)
        xq = K.quantize_act(act, x)
        for isa in ISAS:
            y = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), 2 * nbytes + pad, xq, rows, n, 2), np.float32)
            assert np.all(y == 0), (name, isa)


# ---- the multi-vector row dots (dotn: continuous batching) ---------------------------------------------------
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", TYPES)
def test_dot_rows_n_against_float64_and_dot_bits(name, isa):
    """dotn over nx = 1..9 vectors (9: a group of 8 and one more), odd row counts: each vector's row dots
    within the float64 bound of test_dot_rows_against_float64, and bit for bit what dot gives that vector
    alone (the batched forward promises each sequence the bits of running alone)."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}-{isa}-dotn".encode()))
    cases = [(1, 3), (3, 1), (5, 2), (7, 3), (37, 2)] if block == 256 else [(1, 9), (3, 1), (5, 3), (7, 37), (37, 9)]
    for nx in range(1, 10):
        rows, nb = cases[nx % len(cases)]
        n = nb * block
        W = random_blocks(name, rows * nb, rng, scales="moderate", zero_every=11).reshape(rows, nb * nbytes)
        xs = []
        for j in range(nx):
            x = (rng.standard_normal(n) * rng.choice([1e-2, 1.0, 30.0])).astype(np.float32)
            if j == 1 and n >= 2 * block:
                x[:block] = 0  # a zero activation block
            xs.append(K.quantize_act(act, x))
        Y = np.frombuffer(K.dot_rows_n(name, isa, W.tobytes(), nb * nbytes, b"".join(xs), nx, rows, n),
                          np.float32).reshape(nx, rows)
        for j in range(nx):
            ref, mag = dot_reference(name, W, rows, n, dequant_act(act, xs[j], n))
            err = np.abs(Y[j].astype(np.float64) - ref)
            assert np.all(err <= 4 * (nb + 8) * EPS32 * mag + 1e-30), (name, isa, nx, j, rows, n)
            alone = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), nb * nbytes, xs[j], rows, n, 1), np.float32)
            np.testing.assert_array_equal(f32_bits(Y[j]), f32_bits(alone), err_msg=f"{name} {isa} nx={nx} j={j}")


@pytest.mark.parametrize("name", ["Q4_1", "Q4_K", "Q5_0", "Q8_0", "Q6_K", "Q3_K"])
def test_gemm_act_t_rows_equal_t_single_calls(name, gemm_isa):
    """The dtype table's gemm_act (decode of a batch) over t = 1..10 quantized rows at once: bit for bit t
    separate one-row calls, with and without accumulate (Y prefilled with NaN / random)."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}-{gemm_isa}-gact".encode()))
    wtype = name.lower()
    for t, rows in [(1, 5), (3, 67), (8, 37), (10, 131)]:
        n = 3 * block
        W = random_blocks(name, rows * 3, rng, scales="moderate").tobytes()
        xq = [K.quantize_act(act, rng.standard_normal(n).astype(np.float32)) for _ in range(t)]
        Y0 = rng.standard_normal((t, rows)).astype(np.float32)
        for accumulate in (False, True):
            Y = Y0.copy() if accumulate else np.full((t, rows), np.nan, np.float32)
            K.linear_act(W, wtype, b"".join(xq), Y, rows, n, t, accumulate=accumulate)
            for i in range(t):
                y = Y0[i].copy() if accumulate else np.full(rows, np.nan, np.float32)
                K.linear_act(W, wtype, xq[i], y, rows, n, 1, accumulate=accumulate)
                np.testing.assert_array_equal(f32_bits(Y[i]), f32_bits(y), err_msg=f"{name} t={t} row {i}")


# ---- the forward pass's entry: lcx_linear_quant_rows --------------------------------------------------------
KERNEL_ISAS = [i for i in K.ISA_NAMES if K.isa_supported(i)]


@pytest.fixture(params=KERNEL_ISAS)
def gemm_isa(request):
    old = K.get_isa()
    K.set_isa(request.param)
    yield request.param
    K.set_isa(old)


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q5_0", "Q8_0", "Q3_K", "Q4_1"])
def test_linear_quant_panels_exact_weights(name, gemm_isa):
    """Without XQ (prompt blocks): W dequantized exactly to f32 panels, the f32 gemm tile of the active ISA,
    activations not rounded; against float64 like tests/test_kernels.py's f32 products. Rows across panel
    edges (16) and thread splits, columns across the 1024-column chunks, accumulate on top of Y, and Y
    prefilled with NaN so unwritten cells show."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}-{gemm_isa}-lq".encode()))
    for rows, n, t in [(37, 5 * 256, 3), (67, 2 * 1024 + 256 if block == 256 else 41 * 32, 5), (5, 4 * block, 1)]:
        nb = n // block
        W = random_blocks(name, rows * nb, rng, scales="moderate").reshape(rows, nb * nbytes)
        X = rng.standard_normal((t, n)).astype(np.float32)
        wd = theirs(name, W.reshape(-1, nbytes)).astype(np.float64).reshape(rows, n)
        ref = X.astype(np.float64) @ wd.T
        mag = np.abs(X).astype(np.float64) @ np.abs(wd).T
        for threads in (1, 3):
            Y = np.full((t, rows), np.nan, np.float32)
            K.linear_quant(name, K.quant_best_isa(), W.tobytes(), nb * nbytes, X, Y, rows, n, t, threads=threads)
            assert np.all(np.abs(Y - ref) <= 1e-5 * mag + 1e-30), (name, rows, n, t, threads)
            Y0 = rng.standard_normal((t, rows)).astype(np.float32)
            Y = Y0.copy()
            K.linear_quant(name, "generic", W.tobytes(), nb * nbytes, X, Y, rows, n, t, accumulate=True, threads=threads)
            assert np.all(np.abs(Y - (Y0 + ref)) <= 1e-5 * (mag + np.abs(Y0)) + 1e-30)


@pytest.mark.skipif(not K.avx512bf16_supported(), reason="no AVX512-BF16 on this CPU/build")
@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q5_0", "Q8_0"])
def test_linear_quant_bf16_panels(name):
    """With XH (bf16 activations on): W's panels rounded to bf16 (round to nearest even) and the AVX512-BF16
    tile; against float64 on the bf16-rounded weights and activations (f32 sums: 1e-5 of the magnitudes)."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(10)
    rows, n, t = 37, 5 * 256 if block == 256 else 41 * 32, 7
    nb = n // block
    W = random_blocks(name, rows * nb, rng, scales="moderate").reshape(rows, nb * nbytes)
    X = rng.standard_normal((t, n)).astype(np.float32)

    def bf16(a):
        u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return u, (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)

    Xh, x64 = bf16(X)
    _, w64 = bf16(theirs(name, W.reshape(-1, nbytes)).reshape(rows, n))
    ref, mag = x64 @ w64.T, np.abs(x64) @ np.abs(w64).T
    for threads in (1, 2):
        Y = np.full((t, rows), np.nan, np.float32)
        K.linear_quant(name, K.quant_best_isa(), W.tobytes(), nb * nbytes, X, Y, rows, n, t, threads=threads, XH=Xh)
        assert np.all(np.abs(Y - ref) <= 1e-5 * mag + 1e-30)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["Q4_K", "Q5_0", "Q8_0"])
def test_linear_quant_decode_rows_match_dot_rows(name, isa):
    """With XQ (one token): the row dots, bit for bit dot_rows'; accumulate adds them to Y."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(9)
    rows, n = 131, 3 * 256
    nb = n // block
    W = random_blocks(name, rows * nb, rng, scales="moderate").reshape(rows, nb * nbytes)
    x = rng.standard_normal(n).astype(np.float32)
    xq = K.quantize_act(act, x, isa)
    want = np.frombuffer(K.dot_rows(name, isa, W.tobytes(), nb * nbytes, xq, rows, n, 1), np.float32)
    for threads in (1, 2):
        Y = np.full(rows, np.nan, np.float32)
        K.linear_quant(name, isa, W.tobytes(), nb * nbytes, x, Y, rows, n, 1, XQ=xq, threads=threads)
        np.testing.assert_array_equal(f32_bits(Y), f32_bits(want))
        Y0 = rng.standard_normal(rows).astype(np.float32)
        Y = Y0.copy()
        K.linear_quant(name, isa, W.tobytes(), nb * nbytes, x, Y, rows, n, 1, XQ=xq, accumulate=True, threads=threads)
        np.testing.assert_array_equal(f32_bits(Y), f32_bits(Y0 + want))


@pytest.mark.parametrize("name", ["Q4_1", "Q4_K", "Q8_0", "Q6_K", "Q2_K"])
def test_q8_prefill_prompt_rows_are_their_one_token_dots(name, gemm_isa):
    """set_q8_prefill: a prompt block's product (lcx_linear: t > 1, rows split over threads, rows longer than a
    column chunk) is, token for token, bit for bit the integer dots of that token's row quantized alone (the
    one-token product); switched off, the exact panels again (the float64 product of the dequantized weights
    and the unrounded activations, to f32 rounding)."""
    block, nbytes, act = block_of(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}-{gemm_isa}-q8p".encode()))
    wtype, t, rows, n = name.lower(), 13, 133, 5 * 256
    blocks = random_blocks(name, rows * n // block, rng, scales="moderate")
    W = blocks.tobytes()
    X = rng.standard_normal((t, n)).astype(np.float32)
    Y = np.full((t, rows), np.nan, np.float32)
    K.set_q8_prefill(True)
    try:
        assert K.q8_prefill()
        K.linear(W, wtype, X, Y, rows, n, t)
    finally:
        K.set_q8_prefill(False)
    for i in range(t):
        y = np.full(rows, np.nan, np.float32)
        K.linear_act(W, wtype, K.quantize_act(act, X[i]), y, rows, n, 1)
        np.testing.assert_array_equal(f32_bits(Y[i]), f32_bits(y), err_msg=f"{name} token {i}")
    exact = np.full((t, rows), np.nan, np.float32)
    K.linear(W, wtype, X, exact, rows, n, t)
    want = X.astype(np.float64) @ ours(name, blocks).astype(np.float64).reshape(rows, n).T
    scale = np.abs(X).astype(np.float64) @ np.abs(ours(name, blocks).astype(np.float64)).reshape(rows, n).T
    assert np.all(np.abs(exact - want) <= 1e-5 * scale + 1e-30)
    assert not np.array_equal(exact, Y)  # the q8 path did round the activations


# ---- bad input -------------------------------------------------------------------------------------------
def test_bad_arguments_are_one_line_errors():
    x = np.ones(64, np.float32)
    xq = K.quantize_act("Q8_0", x)
    with pytest.raises(ValueError, match="unknown quantized type 'Q7_0'"):
        K.dequantize("Q7_0", b"", 32)
    with pytest.raises(ValueError, match="not a positive multiple of the block size 256"):
        K.dequantize("Q4_K", bytes(144), 100)
    with pytest.raises(ValueError, match="data: buffer holds 143 bytes, 144 needed"):
        K.dequantize("Q4_K", bytes(143), 256)
    with pytest.raises(ValueError, match="unknown activation type 'Q8_1'"):
        K.quantize_act("Q8_1", x)
    with pytest.raises(ValueError, match="Q8_K: length 64 is not a positive multiple of 256"):
        K.quantize_act("Q8_K", x)
    with pytest.raises(ValueError, match="unknown quantized-kernel path 'sse'"):
        K.dot_rows("Q8_0", "sse", bytes(68), 68, xq, 1, 64)
    with pytest.raises(ValueError, match="row_bytes 36 < 68 bytes of 64 Q8_0 weights"):
        K.dot_rows("Q8_0", "generic", bytes(68), 36, xq, 1, 64)
    with pytest.raises(ValueError, match="W: buffer holds 68 bytes, 136 needed"):
        K.dot_rows("Q8_0", "generic", bytes(68), 68, xq, 2, 64)
    with pytest.raises(ValueError, match="XQ: buffer holds 34 bytes, 68 needed"):
        K.dot_rows("Q8_0", "generic", bytes(68), 68, xq[:34], 1, 64)
    with pytest.raises(ValueError, match="data must be 2-byte aligned"):
        K.dequantize("Q8_0", memoryview(bytes(35))[1:], 32)
    with pytest.raises(ValueError, match="nx: at least one activation vector needed"):
        K.dot_rows_n("Q8_0", "generic", bytes(68), 68, xq, 0, 1, 64)
    with pytest.raises(ValueError, match="XQ: buffer holds 68 bytes, 136 needed"):
        K.dot_rows_n("Q8_0", "generic", bytes(68), 68, xq, 2, 1, 64)
    with pytest.raises(ValueError, match="row_bytes 36 < 68 bytes of 64 Q8_0 weights"):
        K.dot_rows_n("Q8_0", "generic", bytes(68), 36, xq, 1, 1, 64)
    with pytest.raises(ValueError, match="f32: no gemm_act over quantized activations"):
        K.linear_act(bytes(256), "f32", xq, np.zeros(1, np.float32), 1, 64, 1)
    with pytest.raises(ValueError, match="q4_k: row length 64 is not a positive multiple of the block size 256"):
        K.linear_act(bytes(144), "q4_k", xq, np.zeros(1, np.float32), 1, 64, 1)
    with pytest.raises(ValueError, match="XA: buffer holds 68 bytes, 136 needed"):
        K.linear_act(bytes(136), "q8_0", xq, np.zeros(2, np.float32), 1, 64, 2)
    for isa in K.QUANT_ISAS:
        if not K.quant_isa_supported(isa):
            with pytest.raises(ValueError, match="not supported on this CPU"):
                K.dot_rows("Q8_0", isa, bytes(68), 68, xq, 1, 64)
