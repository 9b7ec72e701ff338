"""Every kernel against a float64 numpy reference on odd sizes (so SIMD leftover loops run), with outputs
prefilled with NaN (unwritten cells show), on every ISA path this CPU supports, with 1 and N threads."""
import math

import numpy as np
import pytest

import llama_cx
from llama_cx import _kernels as K

ISAS = [i for i in K.ISA_NAMES if K.isa_supported(i)]
THREADS = sorted({1, max(2, llama_cx.runtime.available_cpus())})


@pytest.fixture(params=[(isa, nt) for isa in ISAS for nt in THREADS], ids=lambda p: f"{p[0]}-{p[1]}t")
def path(request):
    isa, nt = request.param
    old_isa, old_nt = K.get_isa(), K.get_num_threads()
    K.set_isa(isa)
    K.set_num_threads(nt)
    yield isa, nt
    K.set_isa(old_isa)
    K.set_num_threads(old_nt)


def bf16(a):
    """float32 array -> (bf16 bits as uint16, the float64 values those bits mean), round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u, (u.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def nan(*shape):
    return np.full(shape, np.nan, dtype=np.float32)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("d,n,t", [(1, 1, 1), (7, 33, 1), (4, 49, 1), (9, 112, 1), (5, 2100, 1), (67, 257, 1),
                                   (130, 1031, 1), (37, 64, 1), (13, 100, 3), (67, 257, 5), (130, 1031, 9), (5, 2100, 6)])
@pytest.mark.parametrize("wtype", ["bf16", "f32"])
def test_linear(path, d, n, t, wtype):
    W = RNG.standard_normal((d, n)).astype(np.float32)
    X = RNG.standard_normal((t, n)).astype(np.float32)
    if wtype == "bf16":
        Wbuf, W64 = bf16(W)
    else:
        Wbuf, W64 = W, W.astype(np.float64)
    ref = X.astype(np.float64) @ W64.T
    Y = nan(t, d)
    K.linear(Wbuf, wtype, X, Y, d, n, t)
    np.testing.assert_allclose(Y, ref, rtol=1e-5, atol=1e-5 * math.sqrt(n))
    # accumulate (the residual add) on top of existing values
    Y0 = RNG.standard_normal((t, d)).astype(np.float32)
    Y = Y0.copy()
    K.linear(Wbuf, wtype, X, Y, d, n, t, accumulate=True)
    np.testing.assert_allclose(Y, Y0 + ref, rtol=1e-5, atol=1e-5 * math.sqrt(n))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("t", [1, 7])
def test_linear_threads_agree(isa, t):
    """Rows are split across threads, never the sum inside a row: 1 thread == N threads bit for bit. A row's
    sum must not depend on the rows computed beside it either (one token: 4 rows a quarter of the range
    apart, the rows left over 1 at a time; a prompt: tiles of 4 rows, fewer at the end)."""
    W, _ = bf16(RNG.standard_normal((301, 515)).astype(np.float32))
    X = RNG.standard_normal((t, 515)).astype(np.float32)
    old_isa, old = K.get_isa(), K.get_num_threads()
    K.set_isa(isa)
    outs = []
    for nt in THREADS + [3, 5]:
        K.set_num_threads(nt)
        Y = nan(t, 301)
        K.linear(W, "bf16", X, Y, 301, 515, t)
        outs.append(Y)
    # the same rows without the first k: rows move between the groups of 4 and the rows left over
    for k in (1, 2, 3, 5):
        Y = nan(t, 301 - k)
        K.linear(np.ascontiguousarray(W[k:]), "bf16", X, Y, 301 - k, 515, t)
        outs.append(np.concatenate([outs[0][:, :k], Y], axis=1))
    K.set_isa(old_isa)
    K.set_num_threads(old)
    for Y in outs[1:]:
        assert np.array_equal(Y, outs[0])


@pytest.mark.parametrize("t,n", [(1, 1), (1, 17), (3, 64), (5, 1001)])
def test_rmsnorm(path, t, n):
    x = RNG.standard_normal((t, n)).astype(np.float32) * 3
    w = RNG.standard_normal(n).astype(np.float32)
    out = nan(t, n)
    K.rmsnorm(x, w, out, t, n, 1e-5)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6)
    # in place
    K.rmsnorm(x, w, x, t, n, 1e-5)
    np.testing.assert_allclose(x, ref, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("t,n_heads,hd", [(1, 1, 2), (3, 5, 6), (4, 3, 64), (2, 2, 130)])
def test_rope_interleaved_pairs(path, t, n_heads, hd):
    x = RNG.standard_normal((t, n_heads * hd)).astype(np.float32)
    freqs = (1.0 / 500000.0 ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    pos = [0, 7, 8191, 123456][:t] if t <= 4 else list(range(t))
    ref = x.astype(np.float64).reshape(t, n_heads, hd // 2, 2).copy()
    ang = np.asarray(pos, dtype=np.float64)[:, None] * freqs.astype(np.float64)[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = ref[..., 0].copy(), ref[..., 1].copy()
    ref[..., 0], ref[..., 1] = a * c - b * s, a * s + b * c
    K.rope(x, pos, freqs, t, n_heads, hd)
    # angles are float32 products (as torch computes them): tolerance grows with the position
    np.testing.assert_allclose(x, ref.reshape(t, -1), rtol=0, atol=2e-4 * max(1, max(pos)) ** 0.5 + 1e-5)


@pytest.mark.parametrize("n", [1, 2, 15, 17, 1000, 49152])
def test_softmax_argmax(path, n):
    x = (RNG.standard_normal(n) * 4).astype(np.float32)
    i = K.argmax(x)
    assert i == int(np.argmax(x))
    y = x.copy()
    K.softmax(y, n)
    e = np.exp(x.astype(np.float64) - x.max())
    np.testing.assert_allclose(y, e / e.sum(), rtol=1e-5, atol=1e-7)


def test_argmax_ties_and_nan():
    assert K.argmax(np.array([1, 3, 3, 2], dtype=np.float32)) == 1
    assert K.argmax(np.array([np.nan, -1, np.nan, 5, 5], dtype=np.float32)) == 3
    with pytest.raises(ValueError):
        K.argmax(np.array([], dtype=np.float32))


@pytest.mark.parametrize("n", [1, 9, 17, 1535])
def test_swiglu(path, n):
    a = RNG.standard_normal(n).astype(np.float32) * 4
    a[::7] *= 40  # far into both tails, where e^-a under- or overflows
    b = RNG.standard_normal(n).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(over="ignore"):
        ref = a64 / (1 + np.exp(-a64)) * b64
    K.swiglu(a, b, n)
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)


def test_swiglu_keeps_nan_and_infinity(path):
    a = np.array([np.nan, np.inf, 0.0, -0.0, 1e-30] * 4, dtype=np.float32)
    b = np.ones_like(a)
    K.swiglu(a, b, a.size)
    assert np.isnan(a[0::5]).all() and (a[1::5] == np.inf).all() and (a[2::5] == 0).all() and (a[3::5] == 0).all()
    np.testing.assert_allclose(a[4::5], 5e-31, rtol=1e-6)


@pytest.mark.parametrize("t,pos0,n_heads,n_kv,hd", [(1, 0, 1, 1, 2), (1, 9, 4, 2, 16), (5, 0, 6, 2, 10),
                                                    (7, 13, 4, 4, 33), (3, 40, 9, 3, 64), (37, 0, 3, 1, 64),
                                                    (22, 5, 2, 2, 80), (18, 30, 2, 1, 128)])
def test_attention_causal_gqa(path, t, pos0, n_heads, n_kv, hd):
    n_keys = pos0 + t
    q = RNG.standard_normal((t, n_heads * hd)).astype(np.float32)
    kc = RNG.standard_normal((n_keys, n_kv * hd)).astype(np.float32)
    vc = RNG.standard_normal((n_keys, n_kv * hd)).astype(np.float32)
    out = nan(t, n_heads * hd)
    K.attention(q, kc, vc, out, t, pos0, n_heads, n_kv, hd)
    ref = np.zeros((t, n_heads, hd))
    q4, k4, v4 = (a.astype(np.float64) for a in (q.reshape(t, n_heads, hd), kc.reshape(n_keys, n_kv, hd),
                                                vc.reshape(n_keys, n_kv, hd)))
    for i in range(t):
        for h in range(n_heads):
            g = h // (n_heads // n_kv)
            s = k4[: pos0 + i + 1, g] @ q4[i, h] / math.sqrt(hd)
            p = np.exp(s - s.max())
            ref[i, h] = (p / p.sum()) @ v4[: pos0 + i + 1, g]
    np.testing.assert_allclose(out, ref.reshape(t, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_keys,n_heads,n_kv,hd", [(1, 1, 1, 2), (9, 4, 2, 16), (600, 6, 2, 10), (1100, 34, 1, 8),
                                                  (513, 8, 8, 64), (1500, 4, 1, 80), (1025, 2, 1, 128)])
def test_attention_decode_in_parts(path, n_keys, n_heads, n_kv, hd):
    """A decode step: parts of 512 keys, up to 16 query heads of a kv head at once, merged by log-sum-exp."""
    q = RNG.standard_normal(n_heads * hd).astype(np.float32)
    kc = (RNG.standard_normal((n_keys, n_kv * hd)) * 2).astype(np.float32)
    vc = RNG.standard_normal((n_keys, n_kv * hd)).astype(np.float32)
    out = nan(n_heads * hd)
    K.attention_decode(q, kc, vc, out, n_keys, n_heads, n_kv, hd)
    q3, k3, v3 = (a.astype(np.float64) for a in (q.reshape(n_heads, hd), kc.reshape(n_keys, n_kv, hd),
                                                vc.reshape(n_keys, n_kv, hd)))
    ref = np.zeros((n_heads, hd))
    for h in range(n_heads):
        g = h // (n_heads // n_kv)
        s = k3[:, g] @ q3[h] / math.sqrt(hd)
        p = np.exp(s - s.max())
        ref[h] = (p / p.sum()) @ v3[:, g]
    np.testing.assert_allclose(out, ref.reshape(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bf16", "f16", "f32"])
def test_to_f32(dtype):
    x = np.concatenate([RNG.standard_normal(37) * 100, [0.0, -0.0, np.inf, -np.inf, 6e-8, 1e-40]]).astype(np.float32)
    if dtype == "bf16":
        src, ref = bf16(x)
    elif dtype == "f16":
        src = x.astype(np.float16)
        ref = src.astype(np.float64)
    else:
        src, ref = x, x.astype(np.float64)
    out = nan(len(x))
    K.to_f32(src, dtype, out, len(x))
    np.testing.assert_array_equal(out.astype(np.float64), ref)


def test_every_f16_value_widens_exactly():
    src = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    out = nan(1 << 16)
    K.to_f32(src, "f16", out, 1 << 16)
    ref = src.astype(np.float32)
    finite = np.isfinite(ref)
    assert np.array_equal(out[finite], ref[finite])
    assert np.array_equal(np.isnan(out), np.isnan(ref))


def test_buffer_too_small_is_an_error():
    W = np.zeros((4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="buffer holds"):
        K.linear(W, "f32", np.zeros(8, np.float32), np.zeros(4, np.float32), 5, 8, 1)


def test_cpu_info_reports_choice():
    info = llama_cx.cpu_info()
    assert info["isa"] in K.ISA_NAMES and info["isa"] in info["isa_supported"]
    assert info["threads"] >= 1 and isinstance(info["openmp"], bool)
    with pytest.raises(ValueError):
        K.set_isa("sse9")


@pytest.mark.skipif(not K.avx512bf16_supported(), reason="CPU without AVX512-BF16")
@pytest.mark.parametrize("d,n,t", [(1, 1, 1), (3, 97, 1), (9, 64, 1), (5, 2100, 1), (67, 257, 1), (130, 1031, 1),
                                   (7, 33, 3), (67, 257, 5), (9, 64, 4), (130, 1031, 9)])
def test_linear_bf16bf16(d, n, t):
    """The opt-in bf16-activation kernel: exact bf16 products summed in f32."""
    Wb, W64 = bf16(RNG.standard_normal((d, n)).astype(np.float32))
    Xb, X64 = bf16(RNG.standard_normal((t, n)).astype(np.float32))
    Y = nan(t, d)
    K.linear_bf16bf16(Wb, Xb, Y, d, n, t)
    np.testing.assert_allclose(Y, X64 @ W64.T, rtol=1e-5, atol=1e-5 * math.sqrt(n))
    Y0 = RNG.standard_normal((t, d)).astype(np.float32)
    Y = Y0.copy()
    K.linear_bf16bf16(Wb, Xb, Y, d, n, t, accumulate=True)
    np.testing.assert_allclose(Y, Y0 + X64 @ W64.T, rtol=1e-5, atol=1e-5 * math.sqrt(n))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000])
def test_round_bf16_is_round_to_nearest_even(n):
    """The activation rounding of the bf16 paths, bit for bit torch's f32 -> bf16: ties to even, NaN quiet,
    infinities kept, denormals rounded (not flushed as vcvtneps2bf16 would), overflow to infinity."""
    import torch

    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-39, 3.3895e38, 1.0 + 2**-8,
                        1.0 + 3 * 2**-8, -(1.0 + 2**-8), 65504.0], dtype=np.float32)
    x = np.concatenate([special, (RNG.standard_normal(n) * 10.0 ** RNG.integers(-30, 30, n)).astype(np.float32)])
    x = np.concatenate([x, np.frombuffer(np.array([0x7f800001, 0xffc00001], dtype=np.uint32).tobytes(), np.float32)])
    out = np.zeros(len(x), dtype=np.uint16)
    K.round_bf16(x, out, len(x))
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    assert np.array_equal(out[~nan], ref[~nan])
    assert np.all((out[nan] & 0x7f80) == 0x7f80) and np.all(out[nan] & 0x40)  # quiet NaN, sign kept
    assert np.array_equal(out[nan] >> 15, x[nan].view(np.uint32) >> 31)
