/* The threaded product over quantized weights (decode): rows split across threads, each thread's rows one
 * contiguous stretch of the matrix (a stream the prefetchers follow), in blocks of 4 (the kernels' row
 * groups). The activation blocks xq are shared, read-only. */
#include "lcx.h"
#include "kernels/quants.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void lcx_linear_quant(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const void *xq, float *y,
                      size_t rows, size_t n, int nthreads) {
    if (nthreads < 1) nthreads = 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        size_t r0, r1;
        lcx_split(rows, 4, tid, nth, &r0, &r1);
        if (r0 < r1) qt->dot((const uint8_t *)W + r0 * row_bytes, row_bytes, xq, y + r0, r1 - r0, n);
    }
}
