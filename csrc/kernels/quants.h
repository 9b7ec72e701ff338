/* GGUF block-quantized weights: the block layouts (exactly ggml's, ggml-common.h), the kernel contracts and
 * one traits row per weight type and instruction set, for the dtype table to point at.
 *
 * A quantized row of n weights is n / block consecutive blocks; a matrix is rows of row_bytes =
 * n / block * block_bytes, back to back (a GGUF tensor as mapped from the file, never copied).
 * A product W (rows, n) @ x (n,) runs in two steps, as in ggml:
 *   1. quantize x once per matrix into activation blocks (lcx_quant_act: q8_0 for the 32-blocks, q8_K
 *      with block sums for the K-quants), byte for byte as ggml's reference quantize_row_q8_0 / q8_K;
 *   2. one integer dot product per row against those blocks (lcx_dot_<type>_<isa>): int8 x int8 products
 *      summed exactly in int32 within a block, the block's scales applied in f32.
 * Every fast kernel has a scalar twin in generic/quants.c: the fallback and the test oracle.
 */
#ifndef LCX_QUANTS_H
#define LCX_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- block layouts (little-endian, no padding; f16 fields are IEEE half bits) ------------------------ */
#define LCX_QK32 32  /* weights per block of the legacy types */
#define LCX_QK_K 256 /* weights per super-block of the K-quants */

typedef struct { uint16_t d; int8_t qs[32]; } lcx_block_q8_0;                      /* w = d * qs */
typedef struct { uint16_t d; uint8_t qs[16]; } lcx_block_q4_0;                     /* w = d * (nibble - 8) */
typedef struct { uint16_t d, m; uint8_t qs[16]; } lcx_block_q4_1;                  /* w = d * nibble + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } lcx_block_q5_0;      /* w = d * (q5 - 16) */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } lcx_block_q5_1;   /* w = d * q5 + m */
/* Byte j of qs holds weight j (low nibble) and weight j + 16 (high nibble); bit j of qh (a little-endian
 * uint32) is the fifth bit of weight j. */

/* K-quants: 256 weights in sub-blocks of 16 or 32, each with an integer scale (and min) of a few bits,
 * times the f16 super-block scale d (and dmin). */
typedef struct {
    uint8_t scales[16]; /* sub-block j (16 weights): scale = low nibble, min = high nibble */
    uint8_t qs[64];     /* 2-bit quants: 128-weight half h, byte l, shift 2s -> weight 128h + 32s + l */
    uint16_t d, dmin;   /* w = d * scale * q - dmin * min */
} lcx_block_q2_K;
typedef struct {
    uint8_t hmask[32];  /* bit s of byte l, clear: subtract 4 from weight 32s + l */
    uint8_t qs[64];     /* low 2 bits, as Q2_K */
    uint8_t scales[12]; /* 16 6-bit scales, stored + 32 */
    uint16_t d;         /* w = d * (scale - 32) * (q - 4 * !hbit) */
} lcx_block_q3_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 8 6-bit scales and 8 6-bit mins (sub-blocks of 32), packed (get_scale_min_k4) */
    uint8_t qs[128];    /* chunk c (64 weights), byte l: weight 64c + l (low nibble), 64c + 32 + l (high) */
} lcx_block_q4_K;       /* w = d * scale * q - dmin * min */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];     /* bit 2c of byte l: fifth bit of weight 64c + l; bit 2c + 1: of 64c + 32 + l */
    uint8_t qs[128];
} lcx_block_q5_K;
typedef struct {
    uint8_t ql[128];    /* low 4 bits */
    uint8_t qh[64];     /* high 2 bits */
    int8_t scales[16];  /* sub-blocks of 16 */
    uint16_t d;         /* w = d * scale * (q6 - 32) */
} lcx_block_q6_K;

/* activation blocks */
typedef struct {
    float d;            /* x ~ d * qs */
    int8_t qs[256];
    int16_t bsums[16];  /* sums of qs in groups of 16 (for the K-quants' mins) */
} lcx_block_q8_K;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(lcx_block_q8_0) == 34 && sizeof(lcx_block_q4_0) == 18 && sizeof(lcx_block_q4_1) == 20 &&
               sizeof(lcx_block_q5_0) == 22 && sizeof(lcx_block_q5_1) == 24, "32-block sizes");
_Static_assert(sizeof(lcx_block_q2_K) == 84 && sizeof(lcx_block_q3_K) == 110 && sizeof(lcx_block_q4_K) == 144 &&
               sizeof(lcx_block_q5_K) == 176 && sizeof(lcx_block_q6_K) == 210 && sizeof(lcx_block_q8_K) == 292,
               "K-block sizes");
#endif

/* ---- types and instruction-set paths ---------------------------------------------------------------- */
enum { /* weight types, the index of the traits tables */
    LCX_Q8_0, LCX_Q4_0, LCX_Q4_1, LCX_Q5_0, LCX_Q5_1, LCX_Q2_K, LCX_Q3_K, LCX_Q4_K, LCX_Q5_K, LCX_Q6_K,
    LCX_QTYPE_COUNT
};
enum { LCX_QACT_Q8_0 = 0, LCX_QACT_Q8_K = 1 }; /* activation block types */
enum { /* dot-kernel paths, each a table; avx512 needs F+BW+VL, avx512vnni adds AVX512-VNNI (vpdpbusd) */
    LCX_QISA_GENERIC, LCX_QISA_AVX2, LCX_QISA_AVX512, LCX_QISA_AVX512VNNI, LCX_QISA_COUNT
};

/* dst (n,) f32 = the weights of n / block whole blocks at src, each exactly as ggml's dequantize_row_*
 * computes it (and so bit for bit gguf-py's dequantize). */
typedef void (*lcx_dequant_fn)(const void *src, float *dst, size_t n);
/* xq (n / block blocks) = x (n,) quantized, byte for byte ggml's quantize_row_q8_0_ref / q8_K_ref
 * (a q8_K block of zeros has d = 0 and zero sums). n % block == 0. */
typedef void (*lcx_quant_act_fn)(const float *x, void *xq, size_t n);
/* y[r] = dot(row r of W, x) for r < rows: W (rows, row_bytes) quantized rows, xq the activation blocks of
 * x (n,) from lcx_quant_act of this type's act_type; single-threaded (callers split rows across threads),
 * each row read once front to back. The int8 products of a block are summed exactly; the result differs
 * from the float64 dot of the dequantized operands only by the f32 rounding of the scale products and of
 * the sum over blocks. y must not alias W or xq. n % block == 0. */
typedef void (*lcx_dot_fn)(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
/* The same product for nx activation vectors at once (continuous batching: several sequences, one weight
 * pass): y[j * ldy + r] = dot(row r of W, vector j) for j < nx, r < rows, vector j's blocks at
 * (const uint8_t *)xq + j * xq_stride. Each row of W is read once and each weight block unpacked once for
 * all the vectors (groups of up to LCX_DOTN_GROUP held in registers; more are split into groups). Bit for
 * bit what dot gives each vector alone, on every path: dot is dotn with nx = 1 (one body, one order of
 * operations per (row, vector) whatever nx). y must not alias W or xq. n % block == 0.
 * Performance (one core, SmolLM2 shapes in L2/L3, avx512vnni, notes in quants_avx512.c): 8 vectors in one
 * call take 2.2-3.2x less than 8 dot calls for Q4_1 / Q4_0 / Q5_0 / Q8_0 / Q4_K / Q5_K, 1.9x for Q6_K;
 * Q2_K / Q3_K (every path) and the K-quants on avx2 loop over dot (no sharing yet). */
typedef void (*lcx_dotn_fn)(const void *W, size_t row_bytes, const void *xq, size_t xq_stride, size_t nx, float *y,
                            size_t ldy, size_t rows, size_t n);
#define LCX_DOTN_GROUP 8

typedef struct {
    const char *name;     /* "Q4_K" */
    int ggml_type;        /* ggml.h enum ggml_type */
    uint32_t block;       /* weights per block */
    uint32_t block_bytes; /* bytes per block */
    int act_type;         /* LCX_QACT_*: how x is quantized for dot */
    lcx_quant_act_fn quantize_x; /* that quantizer, this path's (every path's bytes are the same) */
    lcx_dequant_fn to_f32;  /* this path's dequantizer (all paths give the same bits) */
    lcx_dot_fn dot;       /* this path's kernel (the generic twin where the path has none for the type) */
    lcx_dotn_fn dotn;     /* this path's multi-vector kernel (dot == dotn with nx = 1) */
} lcx_quant_traits;

typedef struct {
    const char *name;     /* "Q8_0" */
    uint32_t block, block_bytes;
    lcx_quant_act_fn quantize;
} lcx_qact_traits;

extern const lcx_qact_traits lcx_qact[2];                  /* by LCX_QACT_* */
extern const lcx_quant_traits lcx_quant_generic[LCX_QTYPE_COUNT];
/* the x86 tables, NULL rows never: a path's table exists only where the compiler built it
 * (lcx_quant_table answers NULL otherwise) */
extern const lcx_quant_traits lcx_quant_avx2[LCX_QTYPE_COUNT];
extern const lcx_quant_traits lcx_quant_avx512[LCX_QTYPE_COUNT];
extern const lcx_quant_traits lcx_quant_avx512vnni[LCX_QTYPE_COUNT];
extern const int lcx_quant_x86_compiled; /* 1 when the three x86 tables hold SIMD kernels */

/* ---- selection (kernels/quants_select.c) ------------------------------------------------------------- */
int lcx_quant_isa_supported(int qisa);    /* compiled, and this CPU/OS runs it (F16C included) */
int lcx_quant_isa_best(void);             /* the fastest supported path */
/* the table of path qisa (NULL when not supported), or of the best path for qisa < 0 */
const lcx_quant_traits *lcx_quant_table(int qisa);
const char *lcx_quant_isa_name(int qisa);
/* the row of ggml type id ggml_type in table t, NULL when the type is not one of these */
const lcx_quant_traits *lcx_quant_find(const lcx_quant_traits *t, int ggml_type);

/* ---- the generic twins by name (generic/quants.c) ----------------------------------------------------- */
void lcx_quant_act_q8_0(const float *x, void *xq, size_t n);
void lcx_quant_act_q8_K(const float *x, void *xq, size_t n);
void lcx_dequant_q8_0(const void *src, float *dst, size_t n);
void lcx_dequant_q4_0(const void *src, float *dst, size_t n);
void lcx_dequant_q4_1(const void *src, float *dst, size_t n);
void lcx_dequant_q5_0(const void *src, float *dst, size_t n);
void lcx_dequant_q5_1(const void *src, float *dst, size_t n);
void lcx_dequant_q2_K(const void *src, float *dst, size_t n);
void lcx_dequant_q3_K(const void *src, float *dst, size_t n);
void lcx_dequant_q4_K(const void *src, float *dst, size_t n);
void lcx_dequant_q5_K(const void *src, float *dst, size_t n);
void lcx_dequant_q6_K(const void *src, float *dst, size_t n);
void lcx_dot_q8_0_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q4_0_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q4_1_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q5_0_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q5_1_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q2_K_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q3_K_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q4_K_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q5_K_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
void lcx_dot_q6_K_generic(const void *W, size_t row_bytes, const void *xq, float *y, size_t rows, size_t n);
#define LCX_DOTN_GENERIC_DECLARE(t)                                                                               \
    void lcx_dotn_##t##_generic(const void *W, size_t row_bytes, const void *xq, size_t xq_stride, size_t nx, float *y, \
                                size_t ldy, size_t rows, size_t n);
LCX_DOTN_GENERIC_DECLARE(q8_0) LCX_DOTN_GENERIC_DECLARE(q4_0) LCX_DOTN_GENERIC_DECLARE(q4_1)
LCX_DOTN_GENERIC_DECLARE(q5_0) LCX_DOTN_GENERIC_DECLARE(q5_1) LCX_DOTN_GENERIC_DECLARE(q2_K)
LCX_DOTN_GENERIC_DECLARE(q3_K) LCX_DOTN_GENERIC_DECLARE(q4_K) LCX_DOTN_GENERIC_DECLARE(q5_K)
LCX_DOTN_GENERIC_DECLARE(q6_K)

/* One traits row; the tables list the types in enum order with these constants (ggml.h type ids); A0 / AK
 * are the path's q8_0 / q8_K activation quantizers. */
#define LCX_QROW_Q8_0(A0, AK, DOT, DOTN, DEQ) {"Q8_0", 8, 32, 34, LCX_QACT_Q8_0, A0, DEQ, DOT, DOTN}
#define LCX_QROW_Q4_0(A0, AK, DOT, DOTN, DEQ) {"Q4_0", 2, 32, 18, LCX_QACT_Q8_0, A0, DEQ, DOT, DOTN}
#define LCX_QROW_Q4_1(A0, AK, DOT, DOTN, DEQ) {"Q4_1", 3, 32, 20, LCX_QACT_Q8_0, A0, DEQ, DOT, DOTN}
#define LCX_QROW_Q5_0(A0, AK, DOT, DOTN, DEQ) {"Q5_0", 6, 32, 22, LCX_QACT_Q8_0, A0, DEQ, DOT, DOTN}
#define LCX_QROW_Q5_1(A0, AK, DOT, DOTN, DEQ) {"Q5_1", 7, 32, 24, LCX_QACT_Q8_0, A0, DEQ, DOT, DOTN}
#define LCX_QROW_Q2_K(A0, AK, DOT, DOTN, DEQ) {"Q2_K", 10, 256, 84, LCX_QACT_Q8_K, AK, DEQ, DOT, DOTN}
#define LCX_QROW_Q3_K(A0, AK, DOT, DOTN, DEQ) {"Q3_K", 11, 256, 110, LCX_QACT_Q8_K, AK, DEQ, DOT, DOTN}
#define LCX_QROW_Q4_K(A0, AK, DOT, DOTN, DEQ) {"Q4_K", 12, 256, 144, LCX_QACT_Q8_K, AK, DEQ, DOT, DOTN}
#define LCX_QROW_Q5_K(A0, AK, DOT, DOTN, DEQ) {"Q5_K", 13, 256, 176, LCX_QACT_Q8_K, AK, DEQ, DOT, DOTN}
#define LCX_QROW_Q6_K(A0, AK, DOT, DOTN, DEQ) {"Q6_K", 14, 256, 210, LCX_QACT_Q8_K, AK, DEQ, DOT, DOTN}
/* a path's whole table: its two activation quantizers, its ten dot kernels, its ten dotn kernels, then its ten
 * dequantizers */
#define LCX_QUANT_TABLE(A0, AK, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, N8_0, N4_0, N4_1, \
                        N5_0, N5_1, N2_K, N3_K, N4_K, N5_K, N6_K, D8_0, D4_0, D4_1, D5_0, D5_1, D2_K, D3_K,   \
                        D4_K, D5_K, D6_K)                                                                     \
    {                                                                                                         \
        LCX_QROW_Q8_0(A0, AK, Q8_0, N8_0, D8_0), LCX_QROW_Q4_0(A0, AK, Q4_0, N4_0, D4_0),                    \
        LCX_QROW_Q4_1(A0, AK, Q4_1, N4_1, D4_1), LCX_QROW_Q5_0(A0, AK, Q5_0, N5_0, D5_0),                     \
        LCX_QROW_Q5_1(A0, AK, Q5_1, N5_1, D5_1), LCX_QROW_Q2_K(A0, AK, Q2_K, N2_K, D2_K),                     \
        LCX_QROW_Q3_K(A0, AK, Q3_K, N3_K, D3_K), LCX_QROW_Q4_K(A0, AK, Q4_K, N4_K, D4_K),                     \
        LCX_QROW_Q5_K(A0, AK, Q5_K, N5_K, D5_K), LCX_QROW_Q6_K(A0, AK, Q6_K, N6_K, D6_K),                     \
    }
#define LCX_QUANT_TABLE_GENERIC                                                                                 \
    LCX_QUANT_TABLE(lcx_quant_act_q8_0, lcx_quant_act_q8_K, lcx_dot_q8_0_generic, lcx_dot_q4_0_generic,         \
                    lcx_dot_q4_1_generic, lcx_dot_q5_0_generic, lcx_dot_q5_1_generic, lcx_dot_q2_K_generic,     \
                    lcx_dot_q3_K_generic, lcx_dot_q4_K_generic, lcx_dot_q5_K_generic, lcx_dot_q6_K_generic,     \
                    lcx_dotn_q8_0_generic, lcx_dotn_q4_0_generic, lcx_dotn_q4_1_generic, lcx_dotn_q5_0_generic, \
                    lcx_dotn_q5_1_generic, lcx_dotn_q2_K_generic, lcx_dotn_q3_K_generic, lcx_dotn_q4_K_generic, \
                    lcx_dotn_q5_K_generic, lcx_dotn_q6_K_generic, lcx_dequant_q8_0, lcx_dequant_q4_0,           \
                    lcx_dequant_q4_1, lcx_dequant_q5_0, lcx_dequant_q5_1, lcx_dequant_q2_K, lcx_dequant_q3_K,   \
                    lcx_dequant_q4_K, lcx_dequant_q5_K, lcx_dequant_q6_K)

/* Prefill helper: dst (r1 - r0, ldd) f32 / bf16 = rows [r0, r1) of W (rows, row_bytes) dequantized (n
 * columns each), a panel for the f32 / bf16 gemm tiles; bf16 rounded to nearest even. Single-threaded. */
void lcx_dequant_rows_f32(const lcx_quant_traits *qt, const void *W, size_t row_bytes, size_t r0, size_t r1,
                          size_t n, float *dst, size_t ldd);
void lcx_dequant_rows_bf16(const lcx_quant_traits *qt, const void *W, size_t row_bytes, size_t r0, size_t r1,
                           size_t n, uint16_t *dst, size_t ldd);

/* ---- the threaded op (ops/linear_quant.c) --------------------------------------------------------------- */
/* y (rows,) = W (rows, n) @ x with xq = x quantized by lcx_qact[qt->act_type]; rows split across nthreads
 * OpenMP threads in blocks of 4, each streaming its rows contiguously. */
void lcx_linear_quant(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const void *xq, float *y,
                      size_t rows, size_t n, int nthreads);
/* One thread's rows [r0, r1) of Y (t, ldy) (+)= X (t, ldx) @ Wᵀ, quantized W (see linear_quant.c): integer
 * row dots against xq when xq != NULL and t == 1, else exact f32 panels of W through the f32 gemm tile, or
 * bf16 panels through the AVX512-BF16 tile when Xh (X's bf16 copy) is given (panel: LCX_QPANEL * LCX_QKC
 * floats of the calling thread's own). */
#define LCX_QPANEL 16
#define LCX_QKC 1024
void lcx_linear_quant_rows(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const float *X,
                           const uint16_t *Xh, size_t ldx, const void *xq, float *Yr0, size_t ldy, size_t r0,
                           size_t r1, size_t n, size_t t, int beta, float *panel);
/* Y (t, rows) (+)= X (t, n) @ Wᵀ over nthreads threads (rows split in blocks of 4), each with its own panel:
 * lcx_linear_quant_rows as the forward pass would call it, for tests and benchmarks. -1: no memory. */
int lcx_linear_quant_t(const lcx_quant_traits *qt, const void *W, size_t row_bytes, const float *X,
                       const uint16_t *Xh, const void *xq, float *Y, size_t rows, size_t n, size_t t, int beta,
                       int nthreads);

/* ---- the block types' rows of the dtype table (ops/linear_quant.c), one set per type and instruction set:
 * to_f32 = the path's dequantizer, gemm = exact f32 panels (prompt blocks), gemm_act = integer row dots over
 * the input quantized by the type's act_type row, whose from_f32 is the activation quantizer. The x86 paths
 * fall back to the generic twins where the CPU lacks F16C; the avx512 slot takes VNNI where the CPU has it. */
const lcx_quant_traits *lcx_quant_for_isa(int isa); /* isa: LCX_ISA_*; never NULL */
#define LCX_QDT_DECLARE_ISA(t, isa)                                                                               \
    void lcx_to_f32_##t##_##isa(const void *src, float *dst, size_t n);                                          \
    void lcx_gemm_##t##_##isa(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,        \
                              size_t rows, size_t t_, size_t n, int beta);                                      \
    void lcx_gemm_act_##t##_##isa(const void *W, size_t ldw, const void *Xa, size_t ldx, float *Y, size_t ldy,    \
                                  size_t rows, size_t t_, size_t n, int beta);
#define LCX_QDT_DECLARE(t) LCX_QDT_DECLARE_ISA(t, generic) LCX_QDT_DECLARE_ISA(t, avx2) LCX_QDT_DECLARE_ISA(t, avx512)
LCX_QDT_DECLARE(q8_0) LCX_QDT_DECLARE(q4_0) LCX_QDT_DECLARE(q4_1) LCX_QDT_DECLARE(q5_0) LCX_QDT_DECLARE(q5_1)
LCX_QDT_DECLARE(q2_k) LCX_QDT_DECLARE(q3_k) LCX_QDT_DECLARE(q4_k) LCX_QDT_DECLARE(q5_k) LCX_QDT_DECLARE(q6_k)
/* the activation quantizers as from_f32 kernels (q8_0 blocks for the 32-blocks, q8_K for the K-quants) */
void lcx_from_f32_q8_0_generic(const float *x, void *xq, size_t n);
void lcx_from_f32_q8_0_avx2(const float *x, void *xq, size_t n);
void lcx_from_f32_q8_0_avx512(const float *x, void *xq, size_t n);
void lcx_from_f32_q8_k_generic(const float *x, void *xq, size_t n);
void lcx_from_f32_q8_k_avx2(const float *x, void *xq, size_t n);
void lcx_from_f32_q8_k_avx512(const float *x, void *xq, size_t n);

/* Keeps a float (or vector) value as rounded: the compiler may not fuse the product that made it into a
 * later add (an FMA would skip that rounding, and the activation quantizers must round as ggml does). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LCX_ROUNDED(v) __asm__("" : "+v"(v))
#elif defined(__GNUC__) && defined(__aarch64__)
#define LCX_ROUNDED(v) __asm__("" : "+w"(v))
#else
#define LCX_ROUNDED(v) do { volatile float lcx_t_ = (v); (v) = lcx_t_; } while (0)
#endif

/* ---- scalar helpers shared by the kernel files --------------------------------------------------------- */
/* IEEE half -> f32, exact for every input (subnormals, inf, NaN) */
static inline float lcx_f16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (mant << 13);
    } else if (e != 0) {
        u = sign | ((e + 112) << 23) | (mant << 13);
    } else {
        float f = (float)mant * 5.9604644775390625e-08f; /* mant * 2^-24, exact */
        return sign ? -f : f;
    }
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}

/* f32 -> IEEE half, round to nearest even (overflow to inf, NaN kept a NaN), as numpy's astype(float16)
 * and ggml's GGML_FP32_TO_FP16 */
static inline uint16_t lcx_f32_to_f16_scalar(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | (a >> 13));    /* NaN: quiet */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                 /* rounds to >= 65520: inf */
    if (a >= 0x38800000u) {                                                  /* normal half */
        uint32_t r = a - 0x38000000u;                                        /* rebias exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a < 0x33000000u) return (uint16_t)sign;                              /* below half the least subnormal */
    /* subnormal half: value = m * 2^-24, m = round(a_val * 2^24) to nearest even */
    uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                                                /* 14 .. 24 */
    uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1u))) m++;
    return (uint16_t)(sign | m);
}

#ifdef __cplusplus
}
#endif
#endif
