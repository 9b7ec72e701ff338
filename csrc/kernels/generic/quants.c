/* Scalar twins of the quantized kernels: dequantizers, activation quantizers and row dots for every GGUF
 * block type llama_cx runs. They are the fallback on every CPU and the oracle the SIMD paths
 * (kernels/x86/quants_*.c) are tested against. Plain loops; each weight's value and each block's integer
 * sums written out as ggml's reference code (ggml-quants.c) defines them.
 *
 * Why the dequantizers are bit-exact on any compiler: every product below (an f16 scale times integers of at
 * most 6 + 6 bits, or (d * scale) * q for Q6_K in ggml's order) is computed in the order ggml and gguf-py
 * use, and the only additions (the mins of Q4_1, Q5_1, Q2_K, Q4_K, Q5_K) follow an exact product, so
 * contracting them into an FMA cannot change a result.
 */
#include <math.h>
#include <string.h>

#include "lcx.h"
#include "kernels/simd.h"
#include "kernels/quants.h"

#define F16(h) lcx_f16_to_f32_scalar(h)

/* ---- activation quantizers (ggml-quants.c quantize_row_q8_0_ref, quantize_row_q8_K_ref) --------------- */
void lcx_quant_act_q8_0(const float *x, void *xq, size_t n) {
    lcx_block_q8_0 *y = (lcx_block_q8_0 *)xq;
    for (size_t b = 0; b < n / LCX_QK32; b++, x += LCX_QK32) {
        float amax = 0.0f;
        for (int j = 0; j < LCX_QK32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = lcx_f32_to_f16_scalar(d); /* the f32 d quantizes, its f16 rounding is stored (as ggml) */
        for (int j = 0; j < LCX_QK32; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ggml's nearest_int: round to nearest even through the 1.5 * 2^23 trick (|f| < 2^22) */
static inline int lcx_nearest_int(float f) {
    LCX_ROUNDED(f); /* the product that made f is rounded first, as in ggml (no FMA into the add) */
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

void lcx_quant_act_q8_K(const float *x, void *xq, size_t n) {
    lcx_block_q8_K *y = (lcx_block_q8_K *)xq;
    for (size_t b = 0; b < n / LCX_QK_K; b++, x += LCX_QK_K) {
        float max = 0.0f, amax = 0.0f; /* max: the value of largest magnitude, sign kept */
        for (int j = 0; j < LCX_QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue; /* ggml leaves the sums unwritten here; zeros are what they sum to */
        const float iscale = -127.0f / max;
        for (int j = 0; j < LCX_QK_K; j++) {
            int v = lcx_nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)s;
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ---- integer weights of one block: q (block,) int8 and the factors that turn them into w -------------- */
/* 32-blocks: w[j] = d * q[j] + m (m = 0 for the symmetric types) */
static float q8_0_ints(const void *blk, int8_t *q, float *m) {
    const lcx_block_q8_0 *b = (const lcx_block_q8_0 *)blk;
    memcpy(q, b->qs, 32);
    *m = 0.0f;
    return F16(b->d);
}
static float q4_0_ints(const void *blk, int8_t *q, float *m) {
    const lcx_block_q4_0 *b = (const lcx_block_q4_0 *)blk;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) - 8);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    *m = 0.0f;
    return F16(b->d);
}
static float q4_1_ints(const void *blk, int8_t *q, float *m) {
    const lcx_block_q4_1 *b = (const lcx_block_q4_1 *)blk;
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(b->qs[j] & 15);
        q[j + 16] = (int8_t)(b->qs[j] >> 4);
    }
    *m = F16(b->m);
    return F16(b->d);
}
static uint32_t lcx_load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static float q5_0_ints(const void *blk, int8_t *q, float *m) {
    const lcx_block_q5_0 *b = (const lcx_block_q5_0 *)blk;
    uint32_t qh = lcx_load_u32(b->qh);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((b->qs[j] & 15) | ((qh >> j) & 1) << 4) - 16);
        q[j + 16] = (int8_t)(((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
    }
    *m = 0.0f;
    return F16(b->d);
}
static float q5_1_ints(const void *blk, int8_t *q, float *m) {
    const lcx_block_q5_1 *b = (const lcx_block_q5_1 *)blk;
    uint32_t qh = lcx_load_u32(b->qh);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) | ((qh >> j) & 1) << 4);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
    }
    *m = F16(b->m);
    return F16(b->d);
}

/* K-quants: w[j] = d * sc[j / sub] * q[j] - dmin * mn[j / sub], sub = 256 / n_sub weights per sub-block.
 * Returns n_sub (16 or 8); d, dmin the f16 super-block scales (dmin 0 for the types without mins). */
static int q2_K_ints(const void *blk, int8_t *q, int *sc, int *mn, float *d, float *dmin) {
    const lcx_block_q2_K *b = (const lcx_block_q2_K *)blk;
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) q[128 * h + 32 * s + l] = (int8_t)((b->qs[32 * h + l] >> (2 * s)) & 3);
    for (int j = 0; j < 16; j++) {
        sc[j] = b->scales[j] & 15;
        mn[j] = b->scales[j] >> 4;
    }
    *d = F16(b->d);
    *dmin = F16(b->dmin);
    return 16;
}
/* the 16 6-bit scales of Q3_K (ggml's kmask shuffle of the 12 bytes), still + 32 */
static void q3_K_scales(const uint8_t *s12, int *sc) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? s12[j] & 15 : s12[j - 8] >> 4;
        int hi = (s12[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = lo | hi << 4;
    }
}
static int q3_K_ints(const void *blk, int8_t *q, int *sc, int *mn, float *d, float *dmin) {
    const lcx_block_q3_K *b = (const lcx_block_q3_K *)blk;
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                int low = (b->qs[32 * h + l] >> (2 * s)) & 3, hbit = (b->hmask[l] >> (4 * h + s)) & 1;
                q[128 * h + 32 * s + l] = (int8_t)(low - (hbit ? 0 : 4));
            }
    q3_K_scales(b->scales, sc);
    for (int j = 0; j < 16; j++) {
        sc[j] -= 32;
        mn[j] = 0;
    }
    *d = F16(b->d);
    *dmin = 0.0f;
    return 16;
}
/* ggml's get_scale_min_k4: scale and min of sub-block j (of 8) of Q4_K / Q5_K */
static void k4_scale_min(int j, const uint8_t *s, int *sc, int *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
static int q4_K_ints(const void *blk, int8_t *q, int *sc, int *mn, float *d, float *dmin) {
    const lcx_block_q4_K *b = (const lcx_block_q4_K *)blk;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)(b->qs[32 * c + l] & 15);
            q[64 * c + 32 + l] = (int8_t)(b->qs[32 * c + l] >> 4);
        }
    for (int j = 0; j < 8; j++) k4_scale_min(j, b->scales, &sc[j], &mn[j]);
    *d = F16(b->d);
    *dmin = F16(b->dmin);
    return 8;
}
static int q5_K_ints(const void *blk, int8_t *q, int *sc, int *mn, float *d, float *dmin) {
    const lcx_block_q5_K *b = (const lcx_block_q5_K *)blk;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)((b->qs[32 * c + l] & 15) | ((b->qh[l] >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + l] = (int8_t)((b->qs[32 * c + l] >> 4) | ((b->qh[l] >> (2 * c + 1)) & 1) << 4);
        }
    for (int j = 0; j < 8; j++) k4_scale_min(j, b->scales, &sc[j], &mn[j]);
    *d = F16(b->d);
    *dmin = F16(b->dmin);
    return 8;
}
static int q6_K_ints(const void *blk, int8_t *q, int *sc, int *mn, float *d, float *dmin) {
    const lcx_block_q6_K *b = (const lcx_block_q6_K *)blk;
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *y = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            y[l] = (int8_t)(((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32);
            y[l + 32] = (int8_t)(((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32);
            y[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
            y[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
        }
    }
    for (int j = 0; j < 16; j++) {
        sc[j] = b->scales[j];
        mn[j] = 0;
    }
    *d = F16(b->d);
    *dmin = 0.0f;
    return 16;
}

/* ---- dequantizers --------------------------------------------------------------------------------------- */
typedef float (*ints32_fn)(const void *, int8_t *, float *);
typedef int (*intsK_fn)(const void *, int8_t *, int *, int *, float *, float *);

static inline void dequant32(const uint8_t *src, size_t bytes, float *dst, size_t n, ints32_fn ints, int has_m) {
    int8_t q[32];
    float m;
    for (size_t b = 0; b < n / LCX_QK32; b++, src += bytes, dst += LCX_QK32) {
        float d = ints(src, q, &m);
        if (has_m)
            for (int j = 0; j < 32; j++) dst[j] = d * (float)q[j] + m;
        else
            for (int j = 0; j < 32; j++) dst[j] = d * (float)q[j];
    }
}

/* ggml's order: (d * scale) * q - (dmin * min), each factor rounded to f32 as it goes */
static inline void dequantK(const uint8_t *src, size_t bytes, float *dst, size_t n, intsK_fn ints) {
    int8_t q[256];
    int sc[16], mn[16];
    float d, dmin;
    for (size_t b = 0; b < n / LCX_QK_K; b++, src += bytes, dst += LCX_QK_K) {
        int n_sub = ints(src, q, sc, mn, &d, &dmin), sub = 256 / n_sub;
        for (int j = 0; j < n_sub; j++) {
            const float dl = d * (float)sc[j], ml = dmin * (float)mn[j];
            for (int i = j * sub; i < (j + 1) * sub; i++) dst[i] = dl * (float)q[i] - ml;
        }
    }
}

void lcx_dequant_q8_0(const void *s, float *d, size_t n) { dequant32(s, 34, d, n, q8_0_ints, 0); }
void lcx_dequant_q4_0(const void *s, float *d, size_t n) { dequant32(s, 18, d, n, q4_0_ints, 0); }
void lcx_dequant_q4_1(const void *s, float *d, size_t n) { dequant32(s, 20, d, n, q4_1_ints, 1); }
void lcx_dequant_q5_0(const void *s, float *d, size_t n) { dequant32(s, 22, d, n, q5_0_ints, 0); }
void lcx_dequant_q5_1(const void *s, float *d, size_t n) { dequant32(s, 24, d, n, q5_1_ints, 1); }
void lcx_dequant_q2_K(const void *s, float *d, size_t n) { dequantK(s, 84, d, n, q2_K_ints); }
void lcx_dequant_q3_K(const void *s, float *d, size_t n) { dequantK(s, 110, d, n, q3_K_ints); }
void lcx_dequant_q4_K(const void *s, float *d, size_t n) { dequantK(s, 144, d, n, q4_K_ints); }
void lcx_dequant_q5_K(const void *s, float *d, size_t n) { dequantK(s, 176, d, n, q5_K_ints); }
void lcx_dequant_q6_K(const void *s, float *d, size_t n) { dequantK(s, 210, d, n, q6_K_ints); }

/* ---- row dots ------------------------------------------------------------------------------------------- */
/* 32-blocks x q8_0, nx activation vectors: per row and block the integer weights are unpacked once, then for
 * each vector the exact int sums S = sum(q * xq) and X = sum(xq) and y += (d * dx) * S + (m * dx) * X in f32,
 * blocks in order. The same expression for every vector whatever nx: dot (nx = 1) gives each vector's bits. */
static inline void dotn32(const uint8_t *W, size_t row_bytes, size_t bytes, const void *xq, size_t xs, size_t nx,
                          float *y, size_t ldy, size_t rows, size_t n, ints32_fn ints) {
    int8_t q[32];
    float m;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *w = W + r * row_bytes;
        for (size_t j0 = 0; j0 < nx; j0 += LCX_DOTN_GROUP) {
            const size_t g = nx - j0 < LCX_DOTN_GROUP ? nx - j0 : LCX_DOTN_GROUP;
            float acc[LCX_DOTN_GROUP] = {0.0f};
            for (size_t b = 0; b < n / LCX_QK32; b++) {
                const float d = ints(w + b * bytes, q, &m);
                for (size_t j = 0; j < g; j++) {
                    const lcx_block_q8_0 *x = (const lcx_block_q8_0 *)((const uint8_t *)xq + (j0 + j) * xs) + b;
                    const float dx = F16(x->d);
                    int32_t s = 0, sx = 0;
                    for (int i = 0; i < 32; i++) {
                        s += (int32_t)q[i] * x->qs[i];
                        sx += x->qs[i];
                    }
                    acc[j] += (d * dx) * (float)s + (m * dx) * (float)sx;
                }
            }
            for (size_t j = 0; j < g; j++) y[(j0 + j) * ldy + r] = acc[j];
        }
    }
}

/* K-quants x q8_K: per block S = sum_j sc[j] * sum_(i in j) q[i] * xq[i] and M = sum_j mn[j] * (the q8_K block
 * sums of sub-block j), exact in int32, then y += (d * dx) * S - (dmin * dx) * M; unpacked once per row and
 * block for the nx vectors, as dotn32. */
static inline void dotnK(const uint8_t *W, size_t row_bytes, size_t bytes, const void *xq, size_t xs, size_t nx,
                         float *y, size_t ldy, size_t rows, size_t n, intsK_fn ints) {
    int8_t q[256];
    int sc[16], mn[16];
    float d, dmin;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *w = W + r * row_bytes;
        for (size_t j0 = 0; j0 < nx; j0 += LCX_DOTN_GROUP) {
            const size_t g = nx - j0 < LCX_DOTN_GROUP ? nx - j0 : LCX_DOTN_GROUP;
            float acc[LCX_DOTN_GROUP] = {0.0f};
            for (size_t b = 0; b < n / LCX_QK_K; b++) {
                const int n_sub = ints(w + b * bytes, q, sc, mn, &d, &dmin), sub = 256 / n_sub;
                for (size_t j = 0; j < g; j++) {
                    const lcx_block_q8_K *x = (const lcx_block_q8_K *)((const uint8_t *)xq + (j0 + j) * xs) + b;
                    int32_t s = 0, msum = 0;
                    for (int k = 0; k < n_sub; k++) {
                        int32_t sk = 0;
                        for (int i = k * sub; i < (k + 1) * sub; i++) sk += (int32_t)q[i] * x->qs[i];
                        s += sc[k] * sk;
                        int32_t bs = 0; /* the block sums come in 16s */
                        for (int gs = k * sub / 16; gs < (k + 1) * sub / 16; gs++) bs += x->bsums[gs];
                        msum += mn[k] * bs;
                    }
                    acc[j] += (d * x->d) * (float)s - (dmin * x->d) * (float)msum;
                }
            }
            for (size_t j = 0; j < g; j++) y[(j0 + j) * ldy + r] = acc[j];
        }
    }
}

#define LCX_DOT_GENERIC(T, BYTES, BODY)                                                                        \
    void lcx_dotn_##T##_generic(const void *W, size_t rb, const void *xq, size_t xs, size_t nx, float *y,     \
                                size_t ldy, size_t rows, size_t n) {                                          \
        BODY((const uint8_t *)W, rb, BYTES, xq, xs, nx, y, ldy, rows, n, T##_ints);                           \
    }                                                                                                          \
    void lcx_dot_##T##_generic(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {  \
        lcx_dotn_##T##_generic(W, rb, xq, 0, 1, y, 0, rows, n);                                                \
    }
LCX_DOT_GENERIC(q8_0, 34, dotn32)
LCX_DOT_GENERIC(q4_0, 18, dotn32)
LCX_DOT_GENERIC(q4_1, 20, dotn32)
LCX_DOT_GENERIC(q5_0, 22, dotn32)
LCX_DOT_GENERIC(q5_1, 24, dotn32)
LCX_DOT_GENERIC(q2_K, 84, dotnK)
LCX_DOT_GENERIC(q3_K, 110, dotnK)
LCX_DOT_GENERIC(q4_K, 144, dotnK)
LCX_DOT_GENERIC(q5_K, 176, dotnK)
LCX_DOT_GENERIC(q6_K, 210, dotnK)

const lcx_qact_traits lcx_qact[2] = {
    {"Q8_0", LCX_QK32, 34, lcx_quant_act_q8_0},
    {"Q8_K", LCX_QK_K, 292, lcx_quant_act_q8_K},
};

const lcx_quant_traits lcx_quant_generic[LCX_QTYPE_COUNT] = LCX_QUANT_TABLE_GENERIC;

/* ---- prefill panels ------------------------------------------------------------------------------------- */
void lcx_dequant_rows_f32(const lcx_quant_traits *qt, const void *W, size_t row_bytes, size_t r0, size_t r1,
                          size_t n, float *dst, size_t ldd) {
    for (size_t r = r0; r < r1; r++) qt->to_f32((const uint8_t *)W + r * row_bytes, dst + (r - r0) * ldd, n);
}

void lcx_dequant_rows_bf16(const lcx_quant_traits *qt, const void *W, size_t row_bytes, size_t r0, size_t r1,
                           size_t n, uint16_t *dst, size_t ldd) {
    float buf[LCX_QK_K];
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *w = (const uint8_t *)W + r * row_bytes;
        uint16_t *o = dst + (r - r0) * ldd;
        for (size_t b = 0; b < n / qt->block; b++) { /* a block at a time: the f32 copy stays in L1 */
            qt->to_f32(w + b * qt->block_bytes, buf, qt->block);
            for (uint32_t j = 0; j < qt->block; j++) o[b * qt->block + j] = lcx_f32_to_bf16_scalar(buf[j]);
        }
    }
}
