/* Products over quantized weights: rows split across threads, each thread's rows one contiguous stretch of
 * the matrix (a stream the prefetchers follow), in blocks of 4 (the kernels' row groups).
 *
 * Performance notes (one core, 256 x 4096 matrices in L2, this session's busy 2-vCPU guest, best of 30)
 * - Decode, the two designs of issue 16: integer row dots against x quantized to q8 (kept) against exact f32
 *   panels of W through the f32 gemm tile with x left in f32: Q4_K 19.2 against 4.0 GB/s, Q5_0 15.2 / 5.3,
 *   Q8_0 35.3 / 8.6, Q6_K 28.9 / 6.1 (0.2-0.35x). Widening the weights costs a convert and an FMA per 16
 *   weights where vpdpbusd does 64 products per instruction, so the exact design would stay compute-bound
 *   far below the bandwidth; it remains available (xq = NULL) for accuracy comparisons.
 * - Prompt blocks (t = 128): exact f32 panels + the f32 tile run at 97-128 GFLOP/s (Q4_K 97, Q5_0 128, Q8_0
 *   98, Q6_K 118), the f32-weight product itself at 113-122: the dequantization hides behind the tile once it
 *   is vectorized (the scalar twins gave Q5_0 29 and Q4_K 65 GFLOP/s).
 * - bf16 panels for the AVX512-BF16 tile (Xh given): 96-102 GFLOP/s against 97-111 for the f32 panels, two
 *   alternating runs, Q4_K / Q5_0 / Q8_0 / Q6_K / Q4_1; on this Intel guest the bf16 tile with bf16 weights
 *   itself ran 109-113 (the EPYC of benchmarks/RESULTS.md: ~200). So the exact f32 panels are the default;
 *   the bf16 ones (which round weights of up to 19 significant bits) are there for the machines where the
 *   bf16 tile is ~2x: measure there.
 * - The integer alternative for prompt blocks, measured once the multi-vector dot existed (dotn, 8 rows of q8
 *   activations against each unpacked weight block; benchmarks/quant_dot.py --nx, one core, weights in L2,
 *   quiet machine): Q4_1 1536x576 x 8 rows 116 us = 61 G MAC/s (122 GFLOP/s), Q8_0 100 us = 71 G MAC/s (141
 *   GFLOP/s), Q4_1 576x1536 106 us (134 GFLOP/s); the exact f32 panels above: 97-128 GFLOP/s. So an integer
 *   GEMM of this shape is 1.0-1.4x the panels, and it would round every prompt activation to 8 bits (0.06 x
 *   std of logit error on SmolLM2, tests/test_quant_model.py) where the panels are exact (3e-6). Prefill
 *   already runs at 1.07-1.49x llama.cpp with the panels (benchmarks/RESULTS.md, run R), so they stay; a
 *   wider integer tile (16+ rows, repacked weights) is the way to more prefill speed, not built. */
#include <stdlib.h>

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

/* Rows [r0, r1) of a product with quantized W, for a thread inside a parallel region the caller owns (as
 * lcx_linear_rows): Y (t, ldy)[:, r] (+)= X (t, ldx) @ W row r, Yr0 = where row r0's output for token 0 goes.
 *   xq != NULL and t == 1 (decode): the integer row dots against xq = X quantized by qt->quantize_x; beta = 1
 *     adds through a small stack buffer (the dot kernels write y).
 *   otherwise (prompt blocks, or an exact decode): panels of LCX_QPANEL rows x LCX_QKC columns dequantized
 *     exactly to f32 into `panel` (LCX_QPANEL * LCX_QKC floats, the thread's own), then the f32 gemm tile of
 *     the active ISA; activations stay f32 (no rounding of X), weights exact. Columns in chunks of
 *     LCX_QKC (a multiple of every block size) so the (t, LCX_QKC) slice of X stays in L2, as lcx_linear_rows.
 *     With Xh (t, ldx), X's bf16 copy (bf16 activations on; NULL otherwise), the panels are rounded to bf16
 *     and the AVX512-BF16 tile runs instead: faster, but it rounds the weights too. */
void lcx_linear_quant_rows(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const float *X,
                           const uint16_t *Xh, size_t ldx, const void *xq, float *Yr0, size_t ldy, size_t r0,
                           size_t r1, size_t n, size_t t, int beta, float *panel) {
    const uint8_t *Wb = (const uint8_t *)W;
    if (r0 >= r1) return;
    if (xq && t == 1) { /* (xq with t > 1 would be a caller bug: those rows take the exact path below) */
        float buf[64];
        for (size_t r = r0; r < r1; r += 64) {
            size_t m = r1 - r < 64 ? r1 - r : 64;
            float *dst = beta ? buf : Yr0 + (r - r0);
            qt->dot(Wb + r * row_bytes, row_bytes, xq, dst, m, n);
            if (beta)
                for (size_t i = 0; i < m; i++) Yr0[r - r0 + i] += buf[i];
        }
        return;
    }
    const lcx_gemm_fn gemm_f32 = lcx_gemm_kernel(LCX_DT_F32);
    const lcx_gemm_act_fn gemm_bf16bf16 = Xh ? lcx_gemm_act_kernel(LCX_DT_BF16) : 0; /* NULL without AVX512-BF16 */
    const lcx_from_f32_fn round_bf16 = lcx_from_f32_kernel(LCX_DT_BF16);
    const int bf16 = gemm_bf16bf16 != 0;
    uint16_t *ph = (uint16_t *)panel; /* the bf16 panel takes the first half of the f32 one */
    float row[LCX_QKC];               /* one row's chunk in f32 before its bf16 rounding */
    for (size_t c0 = 0; c0 < n; c0 += LCX_QKC) {
        const size_t cn = n - c0 < LCX_QKC ? n - c0 : LCX_QKC;
        const size_t boff = c0 / qt->block * qt->block_bytes; /* c0 is a multiple of the block */
        for (size_t r = r0; r < r1; r += LCX_QPANEL) {
            const size_t m = r1 - r < LCX_QPANEL ? r1 - r : LCX_QPANEL;
            const int b = c0 == 0 ? beta : 1;
            if (bf16) {
                for (size_t i = 0; i < m; i++) {
                    qt->to_f32(Wb + (r + i) * row_bytes + boff, row, cn);
                    round_bf16(row, ph + i * cn, cn);
                }
                gemm_bf16bf16(ph, cn, Xh + c0, ldx, Yr0 + (r - r0), ldy, m, t, cn, b);
            } else {
                for (size_t i = 0; i < m; i++) qt->to_f32(Wb + (r + i) * row_bytes + boff, panel + i * cn, cn);
                gemm_f32(panel, cn, X + c0, ldx, Yr0 + (r - r0), ldy, m, t, cn, b);
            }
        }
    }
}

int lcx_linear_quant_t(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const float *X,
                       const uint16_t *Xh, const void *xq, float *Y, size_t rows, size_t n, size_t t, int beta,
                       int nthreads) {
    if (nthreads < 1) nthreads = 1;
    float *panels = xq ? NULL : (float *)malloc((size_t)nthreads * LCX_QPANEL * LCX_QKC * sizeof(float));
    if (!xq && !panels) return -1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        size_t r0, r1;
        lcx_split(rows, 4, tid, nth, &r0, &r1);
        lcx_linear_quant_rows(qt, W, row_bytes, X, Xh, n, xq, Y + r0, rows, r0, r1, n, t, beta,
                              panels ? panels + (size_t)tid * LCX_QPANEL * LCX_QKC : NULL);
    }
    free(panels);
    return 0;
}

/* ---- the block types' kernels as rows of the dtype table (csrc/dtypes.c) ------------------------------------ */

/* gemm slot, prompt blocks: Y (t, ldy) (+)= X (t, ldx) f32 @ W[0:rows]ᵀ over n columns, W rows of ldw weights
 * of type qt; exact f32 panels of W through the active f32 tile (lcx_linear_quant_rows), single-threaded. The
 * panel (64 KiB) lives on the calling thread's stack. */
static void lcx_qgemm_act(const lcx_quant_traits *qt, const void *W, size_t ldw, const void *Xa, size_t ldx,
                          float *Y, size_t ldy, size_t rows, size_t t, size_t n, int beta);

/* bytes of weight rows per block of the q8 prompt path: a block stays in L2 while every token passes it */
#define LCX_Q8P_BLOCK_BYTES (128u << 10)

/* The q8 prompt path (lcx_set_q8_prefill): X's t rows quantized into qt's activation blocks (this thread's
 * copy), then blocks of weight rows through the multi-vector dot for all of them. Each (row, token) sum is
 * that token's one-token dot: prompt rows get the bits of decode steps. 0 when there is no memory (the
 * caller takes the exact panels). */
static int lcx_qgemm_q8(const lcx_quant_traits *qt, const void *W, size_t ldw, const float *X, size_t ldx, float *Y,
                        size_t ldy, size_t rows, size_t t, size_t n, int beta) {
    const lcx_qact_traits *a = &lcx_qact[qt->act_type];
    const size_t xb = n / a->block * a->block_bytes, row_bytes = ldw / qt->block * qt->block_bytes;
    uint8_t *xa = (uint8_t *)malloc(t * xb + 1);
    if (!xa) return 0;
    for (size_t i = 0; i < t; i++) qt->quantize_x(X + i * ldx, xa + i * xb, n);
    size_t blk = LCX_Q8P_BLOCK_BYTES / row_bytes / 4 * 4;
    if (blk < 4) blk = 4;
    for (size_t r = 0; r < rows; r += blk)
        lcx_qgemm_act(qt, (const uint8_t *)W + r * row_bytes, ldw, xa, n, Y + r, ldy, rows - r < blk ? rows - r : blk,
                      t, n, beta);
    free(xa);
    return 1;
}

static void lcx_qgemm(const lcx_quant_traits *qt, const void *W, size_t ldw, const float *X, size_t ldx, float *Y,
                      size_t ldy, size_t rows, size_t t, size_t n, int beta) {
    if (t > 1 && lcx_get_q8_prefill() && lcx_qgemm_q8(qt, W, ldw, X, ldx, Y, ldy, rows, t, n, beta)) return;
    float panel[LCX_QPANEL * LCX_QKC];
    lcx_linear_quant_rows(qt, W, ldw / qt->block * qt->block_bytes, X, NULL, ldx, NULL, Y, ldy, 0, rows, n, t, beta,
                          panel);
}

/* gemm_act slot, decode products of t tokens (t sequences of a batch, or one): Y (t, ldy) (+)= Xa @
 * W[0:rows]ᵀ, Xa (t, ldx) already quantized into qt's activation blocks (ldx in elements); the multi-vector
 * row dots (qt->dotn): each row read once and each weight block unpacked once for up to LCX_DOTN_GROUP
 * tokens, every token's row bits exactly those of a lone dot. beta = 1 adds through a stack buffer of 64
 * rows x LCX_DOTN_GROUP tokens. */
static void lcx_qgemm_act(const lcx_quant_traits *qt, const void *W, size_t ldw, const void *Xa, size_t ldx,
                          float *Y, size_t ldy, size_t rows, size_t t, size_t n, int beta) {
    const size_t row_bytes = ldw / qt->block * qt->block_bytes;
    const size_t xbytes = ldx / lcx_qact[qt->act_type].block * lcx_qact[qt->act_type].block_bytes;
    if (!beta) { /* straight into Y: one call over all the rows and tokens, the kernel deals them as it likes */
        qt->dotn(W, row_bytes, Xa, xbytes, t, Y, ldy, rows, n);
        return;
    }
    float buf[LCX_DOTN_GROUP * 64]; /* (group, 64) */
    for (size_t r = 0; r < rows; r += 64) {
        const size_t m = rows - r < 64 ? rows - r : 64;
        for (size_t j0 = 0; j0 < t; j0 += LCX_DOTN_GROUP) {
            const size_t g = t - j0 < LCX_DOTN_GROUP ? t - j0 : LCX_DOTN_GROUP;
            qt->dotn((const uint8_t *)W + r * row_bytes, row_bytes, (const uint8_t *)Xa + j0 * xbytes, xbytes, g, buf,
                     64, m, n);
            for (size_t j = 0; j < g; j++)
                for (size_t i = 0; i < m; i++) Y[(j0 + j) * ldy + r + i] += buf[j * 64 + i];
        }
    }
}

#define LCX_QDT_DEFINE_ISA(t, T, isa, ISA)                                                                       \
    void lcx_to_f32_##t##_##isa(const void *src, float *dst, size_t n) {                                         \
        lcx_quant_for_isa(ISA)[T].to_f32(src, dst, n);                                                           \
    }                                                                                                            \
    void lcx_gemm_##t##_##isa(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,       \
                              size_t rows, size_t t_, size_t n, int beta) {                                     \
        lcx_qgemm(&lcx_quant_for_isa(ISA)[T], W, ldw, X, ldx, Y, ldy, rows, t_, n, beta);                        \
    }                                                                                                            \
    void lcx_gemm_act_##t##_##isa(const void *W, size_t ldw, const void *Xa, size_t ldx, float *Y, size_t ldy,   \
                                  size_t rows, size_t t_, size_t n, int beta) {                                 \
        lcx_qgemm_act(&lcx_quant_for_isa(ISA)[T], W, ldw, Xa, ldx, Y, ldy, rows, t_, n, beta);                   \
    }
#define LCX_QDT_DEFINE(t, T)                                                                                     \
    LCX_QDT_DEFINE_ISA(t, T, generic, LCX_ISA_GENERIC)                                                           \
    LCX_QDT_DEFINE_ISA(t, T, avx2, LCX_ISA_AVX2) LCX_QDT_DEFINE_ISA(t, T, avx512, LCX_ISA_AVX512)
LCX_QDT_DEFINE(q8_0, LCX_Q8_0) LCX_QDT_DEFINE(q4_0, LCX_Q4_0) LCX_QDT_DEFINE(q4_1, LCX_Q4_1)
LCX_QDT_DEFINE(q5_0, LCX_Q5_0) LCX_QDT_DEFINE(q5_1, LCX_Q5_1) LCX_QDT_DEFINE(q2_k, LCX_Q2_K)
LCX_QDT_DEFINE(q3_k, LCX_Q3_K) LCX_QDT_DEFINE(q4_k, LCX_Q4_K) LCX_QDT_DEFINE(q5_k, LCX_Q5_K)
LCX_QDT_DEFINE(q6_k, LCX_Q6_K)

/* the activation quantizers: every type of one act_type shares its path's quantizer (Q8_0's for q8_0 blocks,
 * Q4_K's for q8_K) */
#define LCX_QACT_DEFINE(isa, ISA)                                                                                \
    void lcx_from_f32_q8_0_##isa(const float *x, void *xq, size_t n) {                                           \
        lcx_quant_for_isa(ISA)[LCX_Q8_0].quantize_x(x, xq, n);                                                   \
    }                                                                                                            \
    void lcx_from_f32_q8_k_##isa(const float *x, void *xq, size_t n) {                                           \
        lcx_quant_for_isa(ISA)[LCX_Q4_K].quantize_x(x, xq, n);                                                   \
    }
LCX_QACT_DEFINE(generic, LCX_ISA_GENERIC) LCX_QACT_DEFINE(avx2, LCX_ISA_AVX2) LCX_QACT_DEFINE(avx512, LCX_ISA_AVX512)
