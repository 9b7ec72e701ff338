/* Scalar kernels: the fallback on every CPU (aarch64 included) and the oracle the SIMD paths are tested
 * against. Plain loops, one f32 accumulator per output in index order. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "lcx.h"

/* W (rows, ldw) bf16, X (t, ldx) f32 -> Y (t, ldy) = beta*Y + X @ W[0:rows]ᵀ over n columns */
void lcx_gemm_bf16_generic(const void *Wv, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                           size_t rows, size_t t, size_t n, int beta) {
    const uint16_t *W = (const uint16_t *)Wv;
    for (size_t i = 0; i < t; i++) {
        const float *x = X + i * ldx;
        for (size_t r = 0; r < rows; r++) {
            const uint16_t *w = W + r * ldw;
            float acc = 0.0f;
            for (size_t j = 0; j < n; j++) acc += lcx_bf16_to_f32_scalar(w[j]) * x[j];
            Y[i * ldy + r] = beta ? Y[i * ldy + r] + acc : acc;
        }
    }
}

/* W (rows, ldw) f32, X (t, ldx) f32 -> Y (t, ldy) = beta*Y + X @ W[0:rows]ᵀ over n columns */
void lcx_gemm_f32_generic(const void *Wv, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                          size_t rows, size_t t, size_t n, int beta) {
    const float *W = (const float *)Wv;
    for (size_t i = 0; i < t; i++) {
        const float *x = X + i * ldx;
        for (size_t r = 0; r < rows; r++) {
            const float *w = W + r * ldw;
            float acc = 0.0f;
            for (size_t j = 0; j < n; j++) acc += w[j] * x[j];
            Y[i * ldy + r] = beta ? Y[i * ldy + r] + acc : acc;
        }
    }
}

/* out (rows, ldo) = P (rows, ldp) @ V[:, :hd], row r over its first n + r (causal) or n rows of V */
static void lcx_pv_f32_generic(const float *P, size_t ldp, size_t rows, const float *V, size_t ldv, size_t n,
                               int causal, size_t hd, float *out, size_t ldo) {
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < hd; c++) {
            float acc = 0.0f;
            for (size_t k = 0; k < n + (causal ? r : 0); k++) acc += P[r * ldp + k] * V[k * ldv + c];
            out[r * ldo + c] = acc;
        }
}

/* dst (n,) f32 = src (n,) bf16 (exact: a shift) */
void lcx_to_f32_bf16_generic(const void *src, float *dst, size_t n) {
    const uint16_t *s = (const uint16_t *)src;
    for (size_t j = 0; j < n; j++) dst[j] = lcx_bf16_to_f32_scalar(s[j]);
}

/* dst (n,) f32 = src (n,) f32 */
void lcx_to_f32_f32_generic(const void *src, float *dst, size_t n) { memcpy(dst, src, n * sizeof(float)); }

/* dst (n,) f32 = src (n,) IEEE half (exact: every f16 is representable), for f16 checkpoints widened at load */
void lcx_to_f32_f16_generic(const void *src, float *dst, size_t n) {
    const uint16_t *s = (const uint16_t *)src;
    for (size_t j = 0; j < n; j++) {
        uint32_t h = s[j], sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ffu, u;
        if (e == 0x1f) {
            u = sign | 0x7f800000u | (mant << 13);
        } else if (e != 0) {
            u = sign | ((e + 112) << 23) | (mant << 13);
        } else if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int shift = 0;
            while (!(mant & 0x400u)) { mant <<= 1; shift++; }
            u = sign | ((uint32_t)(113 - shift) << 23) | ((mant & 0x3ffu) << 13);
        }
        memcpy(dst + j, &u, sizeof u);
    }
}

/* dst (n,) bf16 = round-to-nearest-even(src (n,) f32), NaN kept quiet */
void lcx_from_f32_bf16_generic(const float *src, void *dst, size_t n) {
    uint16_t *d = (uint16_t *)dst;
    for (size_t j = 0; j < n; j++) d[j] = lcx_f32_to_bf16_scalar(src[j]);
}

/* dst (n,) IEEE half = round-to-nearest-even(src (n,) f32): overflow to inf, subnormal halves rounded (not
 * flushed), NaN kept quiet with its top payload bits, as numpy's astype(float16) and x86's vcvtps2ph */
void lcx_from_f32_f16_generic(const float *src, void *dst, size_t n) {
    uint16_t *d = (uint16_t *)dst;
    for (size_t j = 0; j < n; j++) {
        uint32_t u, a;
        memcpy(&u, src + j, sizeof u);
        uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
        a = u & 0x7fffffffu;
        if (a > 0x7f800000u) { /* NaN */
            d[j] = sign | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu);
        } else if (a >= 0x477ff000u) { /* >= 65520 (half-way above the largest half, 65504): inf */
            d[j] = sign | 0x7c00u;
        } else if (a < 0x38800000u) { /* below 2^-14: a subnormal half, units of 2^-24, exact scaling then RNE */
            float f;
            memcpy(&f, &a, sizeof f);
            d[j] = sign | (uint16_t)nearbyintf(f * 16777216.0f); /* 0x400 when it rounds up to the smallest normal */
        } else { /* normal: rebias the exponent (127 -> 15), round the 13 dropped bits to nearest even */
            uint32_t r = a - 0x38000000u;
            r += 0xfffu + ((r >> 13) & 1u);
            d[j] = sign | (uint16_t)(r >> 13);
        }
    }
}

static float lcx_softmax_f32_generic(float *x, size_t n, float scale) {
    float mx = -INFINITY;
    for (size_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < n; j++) {
        x[j] = expf(scale * (x[j] - mx));
        sum += x[j];
    }
    float inv = (float)(1.0 / sum);
    for (size_t j = 0; j < n; j++) x[j] *= inv;
    return (float)((double)scale * mx + log(sum));
}

static void lcx_swiglu_f32_generic(float *a, const float *b, size_t n) {
    for (size_t j = 0; j < n; j++) a[j] = a[j] / (1.0f + expf(-a[j])) * b[j];
}

static void lcx_rmsnorm_f32_generic(const float *x, const float *w, float *out, size_t n, float eps) {
    double ss = 0.0;
    for (size_t j = 0; j < n; j++) ss += (double)x[j] * x[j];
    /* Meta: x * rsqrt(mean(x^2) + eps), then * weight, all in f32 */
    float scale = (float)(1.0 / sqrt((double)(float)(ss / (double)n) + (double)eps));
    for (size_t j = 0; j < n; j++) out[j] = (x[j] * scale) * w[j];
}

const lcx_kernels lcx_kernels_generic = {
    .name = "generic", .pv_f32 = lcx_pv_f32_generic, .softmax_f32 = lcx_softmax_f32_generic,
    .swiglu_f32 = lcx_swiglu_f32_generic, .rmsnorm_f32 = lcx_rmsnorm_f32_generic,
};
