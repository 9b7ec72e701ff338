/* What the threaded ops share: thread ids inside a parallel region, and when a problem is worth threads. */
#ifndef LCX_OPS_H
#define LCX_OPS_H
#include <stddef.h>

#include "lcx.h"

#ifdef _OPENMP
#include <omp.h>
#define LCX_THREAD_NUM() omp_get_thread_num()
#define LCX_NUM_THREADS() omp_get_num_threads()
#else
#define LCX_THREAD_NUM() 0
#define LCX_NUM_THREADS() 1
#endif

/* below this many multiply-adds a matrix product runs on one thread */
#define LCX_PAR_MIN_WORK (1u << 15)

static inline int lcx_threads_for(size_t work) {
    int nt = lcx_get_num_threads();
    return work < LCX_PAR_MIN_WORK ? 1 : nt;
}

#endif
