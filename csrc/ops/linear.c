/* Matrix products with threads: rows of W split evenly across threads in blocks of 4 (the register tile), the
 * row kernel of the weight type (lcx_dtypes) for the active instruction set doing the arithmetic.
 *
 * Performance notes
 * - lcx_linear: weight rows are split in blocks of 4 (the register tile) evenly across threads; for
 *   t > 1 the columns are cut in chunks of LCX_KC so a (t, LCX_KC) activation panel stays in L2 while
 *   each thread streams its weight rows past it.
 */
#include "lcx.h"
#include "ops/ops.h"

/* columns per chunk of a prompt block's product: a (t, LCX_KC) activation panel stays in L2 */
#define LCX_KC 1024

void lcx_split(size_t n, size_t align, int tid, int nth, size_t *lo, size_t *hi) {
    size_t blocks = (n + align - 1) / align;
    *lo = align * (blocks * (size_t)tid / (size_t)nth);
    *hi = align * (blocks * (size_t)(tid + 1) / (size_t)nth);
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

void lcx_linear_rows(const void *W, int wtype, const float *X, size_t ldx, float *Yr0, size_t ldy, size_t r0,
                     size_t r1, size_t n, size_t t, int beta) {
    if (r0 >= r1) return;
    const lcx_gemm_fn gemm = lcx_gemm_kernel(wtype);
    const unsigned char *w = (const unsigned char *)W + lcx_dtype_bytes(wtype, r0 * n); /* row r0 */
    /* (the q8-prefill path reads its activations as 8-bit blocks, t x n bytes: whole rows fit in L2, and then
     * each row's dot is its one-token dot) */
    size_t kc = t > 1 && !(lcx_dtypes[wtype].act_decode && lcx_get_q8_prefill()) ? LCX_KC : n;
    for (size_t c0 = 0; c0 < n; c0 += kc) {
        size_t cn = n - c0 < kc ? n - c0 : kc;
        int b = c0 == 0 ? beta : 1;
        gemm(w + lcx_dtype_bytes(wtype, c0), n, X + c0, ldx, Yr0, ldy, r1 - r0, t, cn, b);
    }
}

void lcx_linear(const void *W, int wtype, const float *X, size_t ldx, float *Y, size_t ldy, size_t d,
                size_t n, size_t t, int beta) {
    int nt = lcx_threads_for(d * n * t);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        size_t r0, r1;
        lcx_split(d, 4, LCX_THREAD_NUM(), LCX_NUM_THREADS(), &r0, &r1);
        lcx_linear_rows(W, wtype, X, ldx, Y + r0, ldy, r0, r1, n, t, beta);
    }
}

