/* Element-wise and per-row operations (RMSNorm, RoPE, SwiGLU, softmax, argmax), threaded over rows or
 * columns where the problem is large enough: a parallel region costs a few microseconds, more than e.g. an
 * RMSNorm of one token. The per-ISA row kernels of lcx_active() do the arithmetic. */
#include <math.h>

#include "lcx.h"
#include "ops/ops.h"

void lcx_rmsnorm_part(const float *x, const float *w, float *out, size_t t, size_t n, float eps, int tid, int nth) {
    size_t i0, i1;
    lcx_split(t, 1, tid, nth, &i0, &i1);
    const lcx_kernels *k = lcx_active();
    for (size_t i = i0; i < i1; i++) k->rmsnorm_f32(x + i * n, w, out + i * n, n, eps);
}

void lcx_rmsnorm_f32(const float *x, const float *w, float *out, size_t t, size_t n, float eps) {
    int nt = lcx_threads_for(t * n * 8);
#pragma omp parallel num_threads(nt) if (nt > 1)
    lcx_rmsnorm_part(x, w, out, t, n, eps, LCX_THREAD_NUM(), LCX_NUM_THREADS());
}

void lcx_rope_table(const int64_t *pos, size_t t, const float *freqs, size_t half, float *cos_t, float *sin_t) {
    for (size_t r = 0; r < t; r++)
        for (size_t i = 0; i < half; i++) {
            float angle = (float)pos[r] * freqs[i]; /* torch.outer in float32 */
            cos_t[r * half + i] = (float)cos((double)angle);
            sin_t[r * half + i] = (float)sin((double)angle);
        }
}

void lcx_rope_heads(float *x, size_t ldx, size_t t, size_t h0, size_t h1, size_t head_dim, const float *cos_t,
                    const float *sin_t) {
    size_t half = head_dim / 2;
    for (size_t r = 0; r < t; r++) {
        const float *c = cos_t + r * half, *s = sin_t + r * half;
        for (size_t h = h0; h < h1; h++) {
            float *v = x + r * ldx + h * head_dim;
            for (size_t i = 0; i < half; i++) {
                float a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c[i] - b * s[i];
                v[2 * i + 1] = a * s[i] + b * c[i];
            }
        }
    }
}

void lcx_rope_f32(float *x, size_t ldx, size_t t, size_t n_heads, size_t head_dim, const float *cos_t,
                  const float *sin_t) {
    lcx_rope_heads(x, ldx, t, 0, n_heads, head_dim, cos_t, sin_t);
}

void lcx_swiglu_part(float *a, const float *b, size_t n) { lcx_active()->swiglu_f32(a, b, n); }

void lcx_swiglu_f32(float *a, const float *b, size_t n) {
    int nt = lcx_threads_for(n * 16);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        size_t j0, j1;
        lcx_split(n, 16, LCX_THREAD_NUM(), LCX_NUM_THREADS(), &j0, &j1);
        if (j0 < j1) lcx_swiglu_part(a + j0, b + j0, j1 - j0);
    }
}

int64_t lcx_argmax_f32(const float *x, size_t n) {
    int64_t best = -1;
    float bv = 0.0f;
    for (size_t j = 0; j < n; j++)
        if (x[j] == x[j] && (best < 0 || x[j] > bv)) {
            bv = x[j];
            best = (int64_t)j;
        }
    return best < 0 ? 0 : best;
}

void lcx_softmax_f32(float *x, size_t n) { (void)lcx_active()->softmax_f32(x, n, 1.0f); }

