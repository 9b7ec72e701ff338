/* AVX512-BF16 kernels: vdpbf16ps on bf16 weights and bf16 activations (opt-in: the activations are rounded to
 * bf16 first, by lcx_from_f32_bf16_<isa>), products summed in f32.
 *
 * Performance notes (the machine of avx512.c's notes)
 * - The bf16 ceiling: vdpbf16ps chains on bf16 data like the model's reach 220-227 GFLOP/s with 8 to 16
 *   accumulators, with or without loads beside them. tile_dp (4 x 4) runs at 184-194 with everything in
 *   L1 (n = 576), 221 on longer rows (n = 2048): 85-95% of it. Tried and dropped: a packed
 *   broadcast micro-kernel (activations packed in pairs, 8 weight rows x 48 tokens, no horizontal sums):
 *   207-212, not worth a packing pass; 4 x 6, 6 x 4, 5 x 5 and 3 x 8 tiles: 113-157 (register pressure);
 *   cutting the columns (256-2048) or the tokens (16-128) into blocks: no gain on SmolLM2, +2-4% (within
 *   the noise) on the 1B shape's pp128.
 */
#include "kernels/kernels.h"
#include "lcx.h"

#if LCX_X86
#include <immintrin.h> /* before any target pragma: the intrinsics carry their own targets */
#endif

#if LCX_X86_KERNELS
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,bmi2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,bmi2")
#endif

#include "kernels/x86/avx512.h"

/* R weight rows x T tokens; W and X both bf16, 32 values (16 pairs) per step, products summed in f32 */
static inline __attribute__((always_inline)) void tile_dp(const uint16_t *W, size_t ldw, const uint16_t *X,
                                                          size_t ldx, float *Y, size_t ldy, size_t n, int beta,
                                                          const int R, const int T, const uint16_t *next) {
    __m512 acc[LCX_TR][LCX_TT];
    for (int r = 0; r < R; r++)
        for (int i = 0; i < T; i++) acc[r][i] = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m512bh w[LCX_TR];
        for (int r = 0; r < R; r++) w[r] = (__m512bh)_mm512_loadu_si512((const void *)(W + r * ldw + j));
        if (next) /* the next row group, a line per row per step (see LCX_DEFINE_GEMM in avx512.c) */
            for (int r = 0; r < LCX_TR; r++) _mm_prefetch((const char *)(next + r * ldw + j), _MM_HINT_T0);
        for (int i = 0; i < T; i++) {
            __m512bh x = (__m512bh)_mm512_loadu_si512((const void *)(X + i * ldx + j));
            for (int r = 0; r < R; r++) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], w[r], x);
        }
    }
    if (j < n) {
        __mmask32 m = (__mmask32)((1u << (n - j)) - 1u);
        __m512bh w[LCX_TR];
        for (int r = 0; r < R; r++) w[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, W + r * ldw + j);
        for (int i = 0; i < T; i++) {
            __m512bh x = (__m512bh)_mm512_maskz_loadu_epi16(m, X + i * ldx + j);
            for (int r = 0; r < R; r++) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], w[r], x);
        }
    }
    for (int i = 0; i < T; i++) {
        __m512 col[LCX_TR];
        for (int r = 0; r < R; r++) col[r] = acc[r][i];
        store_sums(Y + i * ldy, col, R, beta);
    }
}

/* Decode with bf16 activations: S rows a quarter apart at once, as rowdots_bf16 in avx512.c (one load of x serves
 * S rows), 32 weights a step per row in one accumulator (1 FP op per 32 weights instead of 3 per 16:
 * widen, shift, FMA); the same hsum4 tree for S = 4 and S = 1. Every load masked: the same speed as
 * plain loads and a masked tail (SmolLM2, 1 thread, alternating builds), and one loop. */
static inline __attribute__((always_inline)) void rowdots_dp(const uint16_t *w, size_t q, const uint16_t *x, size_t n,
                                                             float *y, const int S) {
    __m512 a[4];
    for (int s = 0; s < S; s++) a[s] = _mm512_setzero_ps();
    for (size_t j = 0; j < n; j += 32) {
        __mmask32 m = n - j >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (n - j)) - 1u);
        __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + j);
        for (int s = 0; s < S; s++) a[s] = _mm512_dpbf16_ps(a[s], (__m512bh)_mm512_maskz_loadu_epi16(m, w + s * q + j), xv);
    }
    for (int s = S; s < 4; s++) a[s] = _mm512_setzero_ps();
    float out[4];
    _mm_storeu_ps(out, hsum4(a[0], a[1], a[2], a[3]));
    for (int s = 0; s < S; s++) y[s] = out[s];
}

/* Y (t, ldy) = beta*Y + Xb (t, ldx) bf16 @ W[rows]ᵀ bf16 over n columns; one thread; Y must not alias */
void lcx_gemm_bf16bf16_avx512bf16(const void *Wv, size_t ldw, const void *Xv, size_t ldx, float *Y, size_t ldy,
                                  size_t rows, size_t t, size_t n, int beta) {
    const uint16_t *W = (const uint16_t *)Wv, *X = (const uint16_t *)Xv;
    if (t == 1) {
        LCX_MATVEC_BODY(rowdots_dp, W, ldw, X, Y, rows, n, beta);
        return;
    }
    size_t r = 0;
    for (; r + LCX_TR <= rows; r += LCX_TR) {
        const uint16_t *next = r + 2 * LCX_TR <= rows ? W + (r + LCX_TR) * ldw : 0;
        size_t i = 0;
        for (; i + LCX_TT <= t; i += LCX_TT, next = 0)
            tile_dp(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, LCX_TT, next);
        switch (t - i) {
        case 3: tile_dp(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 3, next); break;
        case 2: tile_dp(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 2, next); break;
        case 1: tile_dp(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, LCX_TR, 1, next); break;
        default: break;
        }
    }
    for (; r < rows; r++)
        for (size_t i = 0; i < t; i++) tile_dp(W + r * ldw, ldw, X + i * ldx, ldx, Y + i * ldy + r, ldy, n, beta, 1, 1, 0);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
