/* Scalar kernels: the fallback on every CPU (aarch64 included) and the oracle the SIMD paths are tested
 * against. Plain loops, one f32 accumulator per output in index order. */
#include <math.h>
#include <string.h>

#include "lcx.h"
#include "lcx_simd.h"

/* W (rows, ldw) bf16, X (t, ldx) f32 -> Y (t, ldy) = beta*Y + X @ W[0:rows]ᵀ over n columns */
static void lcx_gemm_bf16_generic(const uint16_t *W, size_t ldw, const float *X, size_t ldx, float *Y,
                                  size_t ldy, size_t rows, size_t t, size_t n, int beta) {
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
static void lcx_gemm_f32_generic(const float *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                                 size_t rows, size_t t, size_t n, int beta) {
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

static void lcx_bf16_to_f32_generic(const uint16_t *src, float *dst, size_t n) {
    for (size_t j = 0; j < n; j++) dst[j] = lcx_bf16_to_f32_scalar(src[j]);
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
    "generic", lcx_gemm_bf16_generic, lcx_gemm_f32_generic, lcx_pv_f32_generic, lcx_bf16_to_f32_generic,
    lcx_softmax_f32_generic, lcx_swiglu_f32_generic, lcx_rmsnorm_f32_generic,
};
