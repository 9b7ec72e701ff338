/* STREAM-like read-bandwidth probe for the llama_cx benchmarks.
 *
 * usage: stream MIB THREADS REPS   ->  one JSON line on stdout
 *   {"bytes": N, "threads": T, "reps": R, "best_gbs": x, "gbs": [...], "checksum": c}
 *
 * A sum-reduction over a MIB-mebibyte array of uint64 words, split statically across THREADS
 * OpenMP threads, best of REPS passes. Decode in an LLM engine is the same access pattern (every weight
 * byte read once per token, nothing written), so bandwidth / weight bytes per token is the decode roofline.
 *
 * Why uint64 and eight accumulators: the benchmarks compile this with plain `cc -O2 -fopenmp` (no
 * -march, no -ffast-math), where a single floating-point accumulator is latency-bound (~one add per
 * 4 cycles, about 6 GB/s on a 3 GHz core, below one core's DRAM bandwidth). Integer adds are 1-cycle
 * and eight independent sums keep two loads per cycle in flight, so the loop measures memory, not ALUs.
 * Pages are first touched by the thread that later reads them (same static schedule).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a (n,) u64, n % 8 == 0 -> sum of all words; reads every byte once */
static uint64_t sum_u64(const uint64_t *a, long n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (long i = 0; i < n; i += 8) {
        s0 += a[i + 0]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3];
        s4 += a[i + 4]; s5 += a[i + 5]; s6 += a[i + 6]; s7 += a[i + 7];
    }
    return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MIB THREADS REPS\n", argv[0]);
        return 2;
    }
    long mib = atol(argv[1]);
    int threads = atoi(argv[2]), reps = atoi(argv[3]);
    if (mib <= 0 || threads <= 0 || reps <= 0 || reps > 1000) {
        fprintf(stderr, "stream: MIB, THREADS and REPS must be positive\n");
        return 2;
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    threads = 1;
#endif
    const long n = mib * (1L << 20) / 8;  /* words; a multiple of 8 */
    const int chunks = threads;            /* one contiguous chunk of n / chunks words per thread */
    const long per = (n / chunks) & ~7L;
    uint64_t *a = NULL;
    if (posix_memalign((void **)&a, 4096, (size_t)n * 8) != 0) {
        fprintf(stderr, "stream: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < chunks; c++)
        for (long i = c * per; i < (c + 1) * per; i++) a[i] = (uint64_t)i * 2654435761u;

    double best = 0.0, *gbs = malloc(sizeof(double) * (size_t)reps);
    uint64_t check = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t total = 0;
        double t0 = now_s();
        #pragma omp parallel for schedule(static) reduction(+ : total)
        for (int c = 0; c < chunks; c++) total += sum_u64(a + c * per, per);
        double dt = now_s() - t0;
        check ^= total;  /* keeps the reduction live */
        gbs[r] = (double)(per * chunks * 8) / dt / 1e9;
        if (gbs[r] > best) best = gbs[r];
    }
    printf("{\"bytes\": %ld, \"threads\": %d, \"reps\": %d, \"best_gbs\": %.3f, \"gbs\": [", per * chunks * 8,
           threads, reps, best);
    for (int r = 0; r < reps; r++) printf("%s%.3f", r ? ", " : "", gbs[r]);
    printf("], \"checksum\": %llu}\n", (unsigned long long)check);
    free(gbs);
    free(a);
    return 0;
}
