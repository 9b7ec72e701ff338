/* AVX2 + FMA kernels: 8 f32 lanes; column tails done in scalar after the vector loop.
 *
 * Performance notes
 * - gemm: register tile of 4 weight rows x up to 2 tokens = 8 ymm accumulators (16 registers in all);
 *   bf16 widened with vpmovzxwd + shift; the next row group prefetched as in the AVX-512 file.
 * - decode: 4 rows a quarter apart as in the AVX-512 file (LCX_MATVEC_BODY). Forced on the AVX-512 machine
 *   of benchmarks/RESULTS.md it measured the same as one row at a time (SmolLM2, 1 thread, 75-87 against
 *   78-86 tok/s, alternating builds); no AVX2-only CPU was at hand to measure it where it matters.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "lcx.h"

#if LCX_X86
#include <immintrin.h> /* before any target pragma: the intrinsics carry their own targets */
#endif

#if LCX_X86_KERNELS
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define LCX_TT 2
#define LCX_TR 4

static inline __m256 load_bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float wval_bf16(const uint16_t *p) { return lcx_bf16_to_f32_scalar(*p); }
static inline float wval_f32(const float *p) { return *p; }

#define LCX_DEFINE_TILE(NAME, WT, LOADW, WVAL)                                                               \
    static inline __attribute__((always_inline)) void NAME(const WT *W, size_t ldw, const float *X,         \
                                                           size_t ldx, float *Y, size_t ldy, size_t n,       \
                                                           int beta, const int R, const int T,               \
                                                           const WT *next) {                                 \
        __m256 acc[LCX_TR][LCX_TT];                                                                          \
        for (int r = 0; r < R; r++)                                                                          \
            for (int i = 0; i < T; i++) acc[r][i] = _mm256_setzero_ps();                                     \
        size_t j = 0;                                                                                        \
        for (; j + 8 <= n; j += 8) {                                                                         \
            __m256 w[LCX_TR];                                                                                \
            for (int r = 0; r < R; r++) w[r] = LOADW(W + r * ldw + j);                                       \
            if (next && (j * sizeof(WT)) % 64 == 0) /* one line per row of the next group */                 \
                for (int r = 0; r < LCX_TR; r++) _mm_prefetch((const char *)(next + r * ldw + j), _MM_HINT_T0); \
            for (int i = 0; i < T; i++) {                                                                    \
                __m256 x = _mm256_loadu_ps(X + i * ldx + j);                                                 \
                for (int r = 0; r < R; r++) acc[r][i] = _mm256_fmadd_ps(w[r], x, acc[r][i]);                 \
            }                                                                                                \
        }                                                                                                    \
        for (int i = 0; i < T; i++)                                                                          \
            for (int r = 0; r < R; r++) {                                                                    \
                float s = hsum8(acc[r][i]);                                                                  \
                for (size_t k = j; k < n; k++) s += WVAL(W + r * ldw + k) * X[i * ldx + k];                  \
                float *y = Y + i * ldy + r;                                                                  \
                *y = beta ? *y + s : s;                                                                      \
            }                                                                                                \
    }

LCX_DEFINE_TILE(tile_bf16, uint16_t, load_bf16x8, wval_bf16)
LCX_DEFINE_TILE(tile_f32, float, _mm256_loadu_ps, wval_f32)

/* Decode (t = 1): rows dealt by LCX_MATVEC_BODY (S rows a quarter apart, one load of x for S rows; see the
 * AVX-512 file's notes); per row 2 accumulators over 16 columns a step, then hsum8 and the scalar tail. */
#define LCX_DEFINE_ROWDOTS(NAME, WT, LOADW, WVAL)                                                            \
    static inline __attribute__((always_inline)) void NAME(const WT *w, size_t q, const float *x, size_t n,  \
                                                           float *y, const int S) {                         \
        __m256 a[4][2];                                                                                     \
        for (int s = 0; s < S; s++) a[s][0] = a[s][1] = _mm256_setzero_ps();                                \
        size_t j = 0;                                                                                       \
        for (; j + 16 <= n; j += 16) {                                                                      \
            __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);                            \
            for (int s = 0; s < S; s++) {                                                                   \
                a[s][0] = _mm256_fmadd_ps(LOADW(w + s * q + j), x0, a[s][0]);                               \
                a[s][1] = _mm256_fmadd_ps(LOADW(w + s * q + j + 8), x1, a[s][1]);                           \
            }                                                                                               \
        }                                                                                                   \
        for (int s = 0; s < S; s++) {                                                                       \
            float v = hsum8(_mm256_add_ps(a[s][0], a[s][1]));                                               \
            for (size_t k = j; k < n; k++) v += WVAL(w + s * q + k) * x[k];                                 \
            y[s] = v;                                                                                       \
        }                                                                                                   \
    }
LCX_DEFINE_ROWDOTS(rowdots_bf16, uint16_t, load_bf16x8, wval_bf16)
LCX_DEFINE_ROWDOTS(rowdots_f32, float, _mm256_loadu_ps, wval_f32)

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
            if (i < t) TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 1, next); \
        }                                                                                                   \
        for (; r < rows; r++)                                                                               \
            for (size_t i = 0; i < t; i++)                                                                  \
                TILE(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, 1, 1, 0);           \
    }

LCX_DEFINE_GEMM(lcx_gemm_bf16_avx2, uint16_t, tile_bf16, rowdots_bf16)
LCX_DEFINE_GEMM(lcx_gemm_f32_avx2, float, tile_f32, rowdots_f32)

/* acc[r] += P[r][k] * V row k (16 columns from 2 ymm, masked by m0/m1) for the rows r0 <= r < R */
static inline __attribute__((always_inline)) void pv_key(__m256 acc[4][2], const float *P, size_t ldp,
                                                         const float *vk, size_t k, __m256i m0, __m256i m1, int r0,
                                                         const int R) {
    __m256 v0 = _mm256_maskload_ps(vk, m0), v1 = _mm256_maskload_ps(vk + 8, m1);
    for (int r = 0; r < R; r++) {
        if (r < r0) continue;
        __m256 p = _mm256_set1_ps(P[(size_t)r * ldp + k]);
        acc[r][0] = _mm256_fmadd_ps(p, v0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(p, v1, acc[r][1]);
    }
}

/* One tile of P @ V: R (<= 4) rows x 16 columns = 8 accumulators; row r sums the first n + r rows of V
 * when causal, the first n otherwise (as the AVX-512 tile) */
static inline __attribute__((always_inline)) void pv_tile(const float *P, size_t ldp, const float *V, size_t ldv,
                                                          size_t n, int causal, __m256i m0, __m256i m1, float *out,
                                                          size_t ldo, const int R) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (size_t k = 0; k < n; k++) pv_key(acc, P, ldp, V + k * ldv, k, m0, m1, 0, R);
    for (int e = 0; causal && e + 1 < R; e++) pv_key(acc, P, ldp, V + (n + (size_t)e) * ldv, n + (size_t)e, m0, m1, e + 1, R);
    for (int r = 0; r < R; r++) {
        _mm256_maskstore_ps(out + (size_t)r * ldo, m0, acc[r][0]);
        _mm256_maskstore_ps(out + (size_t)r * ldo + 8, m1, acc[r][1]);
    }
}

/* lanes [0, k) of a mask vector, k in [0, 8] */
static inline __m256i first_lanes(size_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static void lcx_pv_f32_avx2(const float *P, size_t ldp, size_t rows, const float *V, size_t ldv, size_t n,
                            int causal, size_t hd, float *out, size_t ldo) {
    for (size_t c = 0; c < hd; c += 16) {
        size_t left = hd - c;
        __m256i m0 = first_lanes(left >= 8 ? 8 : left), m1 = first_lanes(left >= 16 ? 8 : left > 8 ? left - 8 : 0);
        size_t r = 0;
#define LCX_PV(R) pv_tile(P + r * ldp, ldp, V + c, ldv, n + (causal ? r : 0), causal, m0, m1, out + r * ldo + c, ldo, R)
        LCX_BY_4(r, rows, LCX_PV);
#undef LCX_PV
    }
}

void lcx_to_f32_bf16_avx2(const void *srcv, float *dst, size_t n) {
    const uint16_t *src = (const uint16_t *)srcv;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dst + j, load_bf16x8(src + j));
    for (; j < n; j++) dst[j] = lcx_bf16_to_f32_scalar(src[j]);
}

/* e^x as the AVX-512 version, x clamped to [-87, 88]; 2^n built in the exponent bits (-126 <= n <= 127) */
static inline __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static float lcx_softmax_f32_avx2(float *x, size_t n, float scale) {
    float mx = -INFINITY;
    for (size_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    __m256 vmax = _mm256_set1_ps(mx), vs = _mm256_set1_ps(scale);
    __m256d acc = _mm256_setzero_pd(); /* f64 sums: rows can be 100k+ long */
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp_ps(_mm256_mul_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(x + j), vmax)));
        acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(e)), _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1))));
        _mm256_storeu_ps(x + j, e);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, acc);
    double sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; j < n; j++) {
        x[j] = expf(scale * (x[j] - mx));
        sum += x[j];
    }
    float inv = (float)(1.0 / sum);
    for (j = 0; j < n; j++) x[j] *= inv;
    return (float)((double)scale * mx + log(sum));
}

/* a = silu(a) * b = a / (1 + e^-a) * b; a NaN stays NaN (it is the numerator) */
static void lcx_swiglu_f32_avx2(float *a, const float *b, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (size_t j = 0; j < n; j += 8) {
        __m256i m = first_lanes(n - j >= 8 ? 8 : n - j);
        __m256 v = _mm256_maskload_ps(a + j, m);
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_maskstore_ps(a + j, m, _mm256_mul_ps(s, _mm256_maskload_ps(b + j, m)));
    }
}

static void lcx_rmsnorm_f32_avx2(const float *x, const float *w, float *out, size_t n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (size_t j = 0; j < n; j += 8) {
        __m256i m = first_lanes(n - j >= 8 ? 8 : n - j);
        __m256 v = _mm256_maskload_ps(x + j, m);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    __m256 scale = _mm256_set1_ps((float)(1.0 / sqrt((double)(float)(ss / (double)n) + (double)eps)));
    for (size_t j = 0; j < n; j += 8) {
        __m256i m = first_lanes(n - j >= 8 ? 8 : n - j);
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + j, m), scale);
        _mm256_maskstore_ps(out + j, m, _mm256_mul_ps(v, _mm256_maskload_ps(w + j, m)));
    }
}

const lcx_kernels lcx_kernels_avx2 = {
    .name = "avx2", .pv_f32 = lcx_pv_f32_avx2, .softmax_f32 = lcx_softmax_f32_avx2,
    .swiglu_f32 = lcx_swiglu_f32_avx2, .rmsnorm_f32 = lcx_rmsnorm_f32_avx2,
};

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
const lcx_kernels lcx_kernels_avx2 = {.name = "avx2"}; /* not compiled: the runtime never selects it */
#endif
