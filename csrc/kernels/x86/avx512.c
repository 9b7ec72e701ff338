/* AVX-512 (F + BW + VL) kernels: 16 f32 lanes, masked tails, bf16 widened by shift in registers.
 *
 * Performance notes (the 2-vCPU EPYC VM of benchmarks/RESULTS.md, one core unless said; harnesses measure the
 * kernel alone)
 * - prefill (t > 1): register tile of 4 weight rows x up to 4 tokens = 16 zmm accumulators; each weight
 *   vector is widened once and used for every token of the tile; the 4 row sums of a token are reduced
 *   together with one shared shuffle tree (hsum4): ~107-110 GFLOP/s f32, ~200 with AVX512-BF16.
 * - The f32 ceiling: every formulation tried stops at 110-115 GFLOP/s: this tile, 4 rows x 6 tokens
 *   (24 accumulators), a BLAS-style 32-row x 14-token broadcast panel with pre-packed f32 weights, and
 *   f32 weights (no widening); only FMA chains with no memory operands went higher (147 with 16
 *   chains). So the f32 prefill is compute-bound at ~95% of what any kernel with loads reached here; more
 *   needs bf16 products (vdpbf16ps, avx512bf16.c).
 * - In the whole model the products were 61% of a bf16 pp512 (SmolLM2, 1 thread): the rest was attention's
 *   P @ V one query row at a time (12%: now the pv kernel below, 4 queries per V row), a scalar SwiGLU
 *   (11%: now vectorized) and RMSNorm done by every thread (now split, vectorized). pp512 with 2 threads
 *   went from 826 to ~1300 tok/s with bf16 activations and from 690 to ~830 with f32 ones.
 * - Prefetch of the next row group: while the first token tile of a group runs, one line per row of the
 *   next group is prefetched each 64 bytes. With weights coming from DRAM (a 265 MB chain of 1536 x 576
 *   matrices) this took t = 8 from 47 to 76 GFLOP/s, t = 16 from 63 to 92, t = 64 from 90 to 103: a
 *   short prompt no longer waits on each group's first lines. (Prefetching the whole next group at once,
 *   72 lines at the group's start, gave nothing: the miss buffers fill and the core stalls.)
 * - decode (t = 1), the history: one row at a time with 4 accumulators streamed ~95% of the read bandwidth in
 *   a 2-thread probe, while 4 rows interleaved (the tile above with T = 1) cut the short rows into short
 *   streams: 11 GB/s on 49152 x 576 against 20 for single rows. But one core alone stayed ~25% below a
 *   plain read loop (~17-19 against ~24 GB/s), and none of these moved it:
 *   - software prefetch in the row: prefetcht0 or prefetchnta 0.5-8 KiB ahead was 5-30% slower;
 *     prefetcht1 (to L2) 1-4 KiB ahead gave +5-15% in a matvec-chain harness (1B shapes) and +3% on
 *     SmolLM2 decode, but -1 to -4% on 1B decode (whole model, alternating runs);
 *   - one 64-byte load per line of bf16 weights (pairs split by shift / and, x split to match with
 *     vpermt2ps): +2-10% in the harness, +1% / -2% (1 / 2 threads) on whole-model decode;
 *   - x split exactly into 3 bf16 terms (f32-accurate) with 3 vdpbf16ps per 32 weights: 0.78-0.88x;
 *     the AVX2 kernels (ymm) for decode: 0.96-1.02x.
 * - What held one core back were the loads of x, not the weights' lines or the FP ops (harness, one core,
 *   bf16 weights from DRAM, 4 KiB / huge pages): widening the weights and adding them up: 23 / 30-31 GB/s;
 *   the same with the FMA and fewer loads of x (each x vector reused: wrong sums, timing only), one per 2
 *   lines: 22-24 / 28-31, one per line: - / 28-31; the real row dot, two loads of x per line: 16-18 /
 *   23-25. The 3-term split above loads x three times per line: slower again. So decode now takes 4 rows
 *   a quarter of the range apart (LCX_MATVEC_BODY): each row is still one contiguous stream, and each
 *   load of x serves 4 rows: 22-23 / 25-29 GB/s. 4 rows side by side failed for the other reason (short
 *   streams). Whole-model decode, alternating builds, best of 4 x 48 tokens per run: SmolLM2 1 thread
 *   70-74 -> 84-87 tok/s, 2 threads median 126 -> 144 (runs 110-129 -> 108-155); 1B shape 1 thread
 *   7.5-7.6 -> 9.6-10.1, 2 threads 11-14 -> 13-19.
 * - Huge pages: with the old decode kernels MADV_HUGEPAGE on the file mapping (178 of 269 MB PMD-mapped)
 *   gave no gain (MADV_COLLAPSE is refused, EINVAL); anonymous THP memory reads 10-20% faster than the
 *   file mapping in this VM. So load(huge_pages=True) reads the weights into such memory, opt-in because
 *   it gives up the zero-copy load: 1.02-1.26x decode then (run D), 1.05-1.27x with the kernels above
 *   (run I). With these kernels the file mapping's hint pays too (tensor.map_model_file).
 * - Compiled for this ISA with a target pragma (not -march), so the default build runs on any x86-64.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "lcx.h"

#if LCX_X86
#include <immintrin.h> /* before any target pragma: the intrinsics carry their own targets */
#endif

#if LCX_X86_KERNELS
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,bmi2")
#endif

#include "kernels/x86/avx512.h"

static inline __m512 load_bf16x16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m512 maskload_bf16x16(__mmask16 m, const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

/* One register tile: R weight rows x T tokens, full n. R, T are compile-time constants at each call. */
#define LCX_DEFINE_TILE(NAME, WT, LOADW, MLOADW)                                                            \
    static inline __attribute__((always_inline)) void NAME(const WT *W, size_t ldw, const float *X,        \
                                                           size_t ldx, float *Y, size_t ldy, size_t n,      \
                                                           int beta, const int R, const int T,              \
                                                           const WT *next) {                                \
        __m512 acc[LCX_TR][LCX_TT];                                                                         \
        for (int r = 0; r < R; r++)                                                                         \
            for (int i = 0; i < T; i++) acc[r][i] = _mm512_setzero_ps();                                    \
        size_t j = 0;                                                                                       \
        for (; j + 16 <= n; j += 16) {                                                                      \
            __m512 w[LCX_TR];                                                                               \
            for (int r = 0; r < R; r++) w[r] = LOADW(W + r * ldw + j);                                      \
            if (next && (j * sizeof(WT)) % 64 == 0) /* one line per row of the next group */                \
                for (int r = 0; r < LCX_TR; r++) _mm_prefetch((const char *)(next + r * ldw + j), _MM_HINT_T0); \
            for (int i = 0; i < T; i++) {                                                                   \
                __m512 x = _mm512_loadu_ps(X + i * ldx + j);                                                \
                for (int r = 0; r < R; r++) acc[r][i] = _mm512_fmadd_ps(w[r], x, acc[r][i]);                \
            }                                                                                               \
        }                                                                                                   \
        if (j < n) {                                                                                        \
            __mmask16 m = (__mmask16)((1u << (n - j)) - 1u);                                                \
            __m512 w[LCX_TR];                                                                               \
            for (int r = 0; r < R; r++) w[r] = MLOADW(m, W + r * ldw + j);                                  \
            for (int i = 0; i < T; i++) {                                                                   \
                __m512 x = _mm512_maskz_loadu_ps(m, X + i * ldx + j);                                       \
                for (int r = 0; r < R; r++) acc[r][i] = _mm512_fmadd_ps(w[r], x, acc[r][i]);                \
            }                                                                                               \
        }                                                                                                   \
        for (int i = 0; i < T; i++) {                                                                       \
            __m512 col[LCX_TR];                                                                             \
            for (int r = 0; r < R; r++) col[r] = acc[r][i];                                                 \
            store_sums(Y + i * ldy, col, R, beta);                                                          \
        }                                                                                                   \
    }

#define LCX_LOAD_F32(p) _mm512_loadu_ps(p)
#define LCX_MLOAD_F32(m, p) _mm512_maskz_loadu_ps((m), (p))
LCX_DEFINE_TILE(tile_bf16, uint16_t, load_bf16x16, maskload_bf16x16)
LCX_DEFINE_TILE(tile_f32, float, LCX_LOAD_F32, LCX_MLOAD_F32)

/* Decode (t = 1): S (4, or 1 for the rows left over) rows a quarter of the range apart at once, dealt by
 * LCX_MATVEC_BODY (kernels/simd.h): each is a contiguous stream, and one load of x serves S rows (see the
 * notes at the top). Per row: 2 accumulators over 32 columns a step (4 over 64 was ~15% slower in the
 * harness), then the hsum4 tree, the same for S = 4 and S = 1, so a row's sum does not depend on how the
 * rows were dealt out. */
#define LCX_DEFINE_ROWDOTS(NAME, WT, LOADW, MLOADW)                                                          \
    static inline __attribute__((always_inline)) void NAME(const WT *w, size_t q, const float *x, size_t n,  \
                                                           float *y, const int S) {                         \
        __m512 a[4][2];                                                                                     \
        for (int s = 0; s < S; s++) a[s][0] = a[s][1] = _mm512_setzero_ps();                                \
        size_t j = 0;                                                                                       \
        for (; j + 32 <= n; j += 32) {                                                                      \
            __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);                           \
            for (int s = 0; s < S; s++) {                                                                   \
                a[s][0] = _mm512_fmadd_ps(LOADW(w + s * q + j), x0, a[s][0]);                               \
                a[s][1] = _mm512_fmadd_ps(LOADW(w + s * q + j + 16), x1, a[s][1]);                          \
            }                                                                                               \
        }                                                                                                   \
        for (int c = 0; j < n; j += 16, c++) {                                                              \
            __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);              \
            __m512 xv = _mm512_maskz_loadu_ps(m, x + j);                                                    \
            for (int s = 0; s < S; s++) a[s][c] = _mm512_fmadd_ps(MLOADW(m, w + s * q + j), xv, a[s][c]);   \
        }                                                                                                   \
        __m512 r[4];                                                                                        \
        for (int s = 0; s < 4; s++) r[s] = s < S ? _mm512_add_ps(a[s][0], a[s][1]) : _mm512_setzero_ps();  \
        float out[4];                                                                                       \
        _mm_storeu_ps(out, hsum4(r[0], r[1], r[2], r[3]));                                                  \
        for (int s = 0; s < S; s++) y[s] = out[s];                                                          \
    }
LCX_DEFINE_ROWDOTS(rowdots_bf16, uint16_t, load_bf16x16, maskload_bf16x16)
LCX_DEFINE_ROWDOTS(rowdots_f32, float, LCX_LOAD_F32, LCX_MLOAD_F32)

/* Dispatch the tails of rows and tokens to tiles with constant R and T so every loop above unrolls. */
#define LCX_DEFINE_GEMM(NAME, WT, TILE, ROWDOTS)                                                            \
    void NAME(const void *Wv, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy, size_t rows,     \
              size_t t, size_t n, int beta) {                                                               \
        const WT *W = (const WT *)Wv;                                                                       \
        if (t == 1) {                                                                                       \
            LCX_MATVEC_BODY(ROWDOTS, W, ldw, X, Y, rows, n, beta);                                          \
            return;                                                                                         \
        }                                                                                                   \
        size_t r = 0;                                                                                       \
        for (; r + LCX_TR <= rows; r += LCX_TR) {                                                           \
            /* the next row group is prefetched during this group's first token tile */                     \
            const WT *next = r + 2 * LCX_TR <= rows ? W + (r + LCX_TR) * ldw : 0;                           \
            size_t i = 0;                                                                                   \
            for (; i + LCX_TT <= t; i += LCX_TT, next = 0)                                                  \
                TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, LCX_TT, next); \
            switch (t - i) {                                                                                \
            case 3: TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 3, next); break; \
            case 2: TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 2, next); break; \
            case 1: TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 1, next); break; \
            default: break;                                                                                 \
            }                                                                                               \
        }                                                                                                   \
        for (; r < rows; r++) {                                                                             \
            size_t i = 0;                                                                                   \
            for (; i + LCX_TT <= t; i += LCX_TT)                                                            \
                TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, 1, LCX_TT, 0);      \
            for (; i < t; i++) TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, 1, 1, 0); \
        }                                                                                                   \
    }

LCX_DEFINE_GEMM(lcx_gemm_bf16_avx512, uint16_t, tile_bf16, rowdots_bf16)
LCX_DEFINE_GEMM(lcx_gemm_f32_avx512, float, tile_f32, rowdots_f32)

/* acc[r] += P[r][k] * V row k (64 columns from 4 zmm, masked by m) for the rows r0 <= r < R */
static inline __attribute__((always_inline)) void pv_key(__m512 acc[4][4], const float *P, size_t ldp,
                                                         const float *vk, size_t k, const __mmask16 *m, int r0,
                                                         const int R) {
    __m512 v0 = _mm512_maskz_loadu_ps(m[0], vk), v1 = _mm512_maskz_loadu_ps(m[1], vk + 16);
    __m512 v2 = _mm512_maskz_loadu_ps(m[2], vk + 32), v3 = _mm512_maskz_loadu_ps(m[3], vk + 48);
    for (int r = 0; r < R; r++) {
        if (r < r0) continue;
        __m512 p = _mm512_set1_ps(P[(size_t)r * ldp + k]);
        acc[r][0] = _mm512_fmadd_ps(p, v0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(p, v1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(p, v2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(p, v3, acc[r][3]);
    }
}

/* One tile of P @ V: R (<= 4) rows x 64 columns (4 zmm, masked by m) = 16 accumulators; each V row loaded
 * serves all R rows. Row r sums the first n + r rows of V when causal, the first n otherwise. */
static inline __attribute__((always_inline)) void pv_tile(const float *P, size_t ldp, const float *V, size_t ldv,
                                                          size_t n, int causal, const __mmask16 *m, float *out,
                                                          size_t ldo, const int R) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    for (size_t k = 0; k < n; k++) pv_key(acc, P, ldp, V + k * ldv, k, m, 0, R);
    for (int e = 0; causal && e + 1 < R; e++) pv_key(acc, P, ldp, V + (n + (size_t)e) * ldv, n + (size_t)e, m, e + 1, R);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(out + (size_t)r * ldo + 16 * v, m[v], acc[r][v]);
}

static void lcx_pv_f32_avx512(const float *P, size_t ldp, size_t rows, const float *V, size_t ldv, size_t n,
                              int causal, size_t hd, float *out, size_t ldo) {
    for (size_t c = 0; c < hd; c += 64) {
        __mmask16 m[4];
        for (int v = 0; v < 4; v++) {
            size_t c0 = c + 16 * (size_t)v;
            m[v] = c0 >= hd ? 0 : hd - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - c0)) - 1u);
        }
        size_t r = 0;
#define LCX_PV(R) pv_tile(P + r * ldp, ldp, V + c, ldv, n + (causal ? r : 0), causal, m, out + r * ldo + c, ldo, R)
        LCX_BY_4(r, rows, LCX_PV);
#undef LCX_PV
    }
}

void lcx_to_f32_bf16_avx512(const void *srcv, float *dst, size_t n) {
    const uint16_t *src = (const uint16_t *)srcv;
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        _mm512_mask_storeu_ps(dst + j, m, maskload_bf16x16(m, src + j));
    }
}

/* e^x: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial (relative error < 2e-7), times 2^n with
 * vscalefps; x is clamped to [-87, 88] (results below ~1.6e-38 flush to 0, above 1.6e38 saturate there). */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static float lcx_softmax_f32_avx512(float *x, size_t n, float scale) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, x + j));
    }
    const float xmax = _mm512_reduce_max_ps(mx);
    __m512 vmax = _mm512_set1_ps(xmax), vs = _mm512_set1_ps(scale);
    __m512d sum = _mm512_setzero_pd(); /* f64 sums: rows can be 100k+ long */
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_mul_ps(vs, _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vmax))));
        sum = _mm512_add_pd(sum, _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(e)),
                                               _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)))));
        _mm512_mask_storeu_ps(x + j, m, e);
    }
    const double total = _mm512_reduce_add_pd(sum);
    __m512 inv = _mm512_set1_ps((float)(1.0 / total));
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        _mm512_mask_storeu_ps(x + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), inv));
    }
    return (float)((double)scale * xmax + log(total));
}

/* a = silu(a) * b = a / (1 + e^-a) * b; a NaN stays NaN (it is the numerator) */
static void lcx_swiglu_f32_avx512(float *a, const float *b, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, a + j);
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_mask_storeu_ps(a + j, m, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, b + j)));
    }
}

static void lcx_rmsnorm_f32_avx512(const float *x, const float *w, float *out, size_t n, float eps) {
    __m512d s0 = _mm512_setzero_pd(), s1 = s0;
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    __m512 scale = _mm512_set1_ps((float)(1.0 / sqrt((double)(float)(ss / (double)n) + (double)eps)));
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), scale);
        _mm512_mask_storeu_ps(out + j, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + j)));
    }
}

/* dst (n,) bf16 = round-to-nearest-even(src (n,) f32), bit for bit lcx_f32_to_bf16_scalar (NaN kept quiet;
 * denormals rounded, not flushed as vcvtneps2bf16 would), 16 at a time with integer ops (AVX-512 F + BW: no BF16 instruction). */
void lcx_from_f32_bf16_avx512(const float *src, void *dstv, size_t n) {
    uint16_t *dst = (uint16_t *)dstv;
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff), quiet = _mm512_set1_epi32(0x40);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src + j));
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(hi, one))), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, quiet));
        _mm256_mask_storeu_epi16(dst + j, m, _mm512_cvtepi32_epi16(r));
    }
}
/* dst (n,) f32 = src (n,) IEEE half, exact (vcvtph2ps, AVX-512 F): the bf16 / f16 KV cache rows */
void lcx_to_f32_f16_avx512(const void *srcv, float *dst, size_t n) {
    const uint16_t *src = (const uint16_t *)srcv;
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        _mm512_mask_storeu_ps(dst + j, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, src + j)));
    }
}

/* dst (n,) IEEE half = round-to-nearest-even(src (n,) f32) (vcvtps2ph), bit for bit lcx_from_f32_f16_generic */
void lcx_from_f32_f16_avx512(const float *src, void *dstv, size_t n) {
    uint16_t *dst = (uint16_t *)dstv;
    for (size_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(dst + j, m, h);
    }
}

const lcx_kernels lcx_kernels_avx512 = {
    .name = "avx512", .pv_f32 = lcx_pv_f32_avx512, .softmax_f32 = lcx_softmax_f32_avx512,
    .swiglu_f32 = lcx_swiglu_f32_avx512, .rmsnorm_f32 = lcx_rmsnorm_f32_avx512,
};

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else  /* not x86 with GCC/clang: the path is not compiled; the runtime never selects it */
const lcx_kernels lcx_kernels_avx512 = {.name = "avx512"};
#endif

