/* Offline quantizers (contract in kernels/quantize.h): ggml's reference quantizers, rewritten.
 *
 * Each function mirrors ggml-quants.c quantize_row_<type>_ref step by step, in the same float operations and
 * order, so the bytes match llama.cpp's own `llama-quantize` without an importance matrix (quantize_<type>
 * calls the _ref function when quant_weights is NULL) and the `gguf` package's Python quantizer for the
 * 32-blocks. The K-quant search helpers (make_qx_quants, make_q3_quants, make_qkx2_quants) fit a scale (and a
 * min) per sub-block of 16 or 32 by trying a few candidate scales and keeping the one with the least
 * weighted squared (or absolute) error.
 *
 * Performance notes: scalar, rows split across threads; nothing here is per token. Measured (1 thread, rows of
 * 4096, busy 2-core machine): Q8_0 82 M weights/s, Q4_0 124, Q3_K 41, Q6_K 15, Q5_K 10, Q2_K 9, Q4_K 8. The
 * K-quant searches dominate (Q4_K tries 21 scales per sub-block of 32), so an 8B model takes ~15 min per thread
 * in Q4_K_M. Kept scalar on purpose: the same float operations in the same order are what make the bytes equal
 * llama.cpp's; a SIMD version would have to prove it keeps them.
 */
/* No fused multiply-adds even in a LLAMA_CX_NATIVE=1 (this machine only) build: the bytes must be those of ggml's reference */
#pragma GCC optimize("fp-contract=off")

#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/quantize.h"

#define QK 32   /* elements per block of the 32-block types */
#define QK_K 256 /* elements per super-block of the K-quants */
#define GROUP_MAX_EPS 1e-15f

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Block layouts: ggml-common.h, byte for byte (every field naturally aligned, no padding). */
typedef struct { uint16_t d; int8_t qs[QK]; } blk_q8_0;
typedef struct { uint16_t d; uint8_t qs[QK / 2]; } blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[QK / 2]; } blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; } blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; } blk_q5_1;
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; } blk_q2_K;
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; } blk_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } blk_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } blk_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } blk_q6_K;

_Static_assert(sizeof(blk_q8_0) == 34 && sizeof(blk_q4_0) == 18 && sizeof(blk_q4_1) == 20, "32-block sizes");
_Static_assert(sizeof(blk_q5_0) == 22 && sizeof(blk_q5_1) == 24, "32-block sizes");
_Static_assert(sizeof(blk_q2_K) == 84 && sizeof(blk_q3_K) == 110 && sizeof(blk_q4_K) == 144, "K sizes");
_Static_assert(sizeof(blk_q5_K) == 176 && sizeof(blk_q6_K) == 210, "K sizes");

/* ---- half floats ----------------------------------------------------------------------------------- */

/* f32 -> IEEE half, round to nearest even; overflow -> inf, NaN kept NaN (ggml_compute_fp32_to_fp16) */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u);            /* NaN */
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);           /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                               /* subnormal half (or zero) */
        if (ax < 0x33000000u) return (uint16_t)sign;                      /* below half the smallest: 0 */
        const uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u;
        const int shift = 126 - (int)(ax >> 23);                          /* 14..24 */
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((ax >> 13) - (112u << 10));                            /* rebias 127 -> 15 */
    const uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;              /* may carry into the exponent: fine */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FFu;
    uint32_t x;
    if (e == 0) {
        if (m == 0) {
            x = sign;
        } else { /* subnormal: m * 2^-24 */
            float v = (float)m * 5.9604644775390625e-08f;
            memcpy(&x, &v, 4);
            x |= sign;
        }
    } else if (e == 31) {
        x = sign | 0x7F800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* round to nearest (ties to even) for |fval| <= 4194303, by the float-add trick ggml uses */
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- the 32-blocks ---------------------------------------------------------------------------------- */

static void q8_0_row(const float *x, blk_q8_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = MAX(amax, fabsf(x[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        for (int j = 0; j < QK; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* the value of largest magnitude (its sign kept): the symmetric types scale by it so it lands on -8 / -16 */
static float signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void q4_0_row(const float *x, blk_q4_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK; i++, x += QK) {
        const float d = signed_absmax(x) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t lo = MIN(15, (int8_t)(x[j] * id + 8.5f));
            const uint8_t hi = MIN(15, (int8_t)(x[QK / 2 + j] * id + 8.5f));
            y[i].qs[j] = lo | (uint8_t)(hi << 4);
        }
    }
}

static void min_max(const float *x, float *min, float *max) {
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < *min) *min = x[j];
        if (x[j] > *max) *max = x[j];
    }
}

static void q4_1_row(const float *x, blk_q4_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK; i++, x += QK) {
        float min, max;
        min_max(x, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        y[i].m = f32_to_f16(min);
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t lo = MIN(15, (int8_t)((x[j] - min) * id + 0.5f));
            const uint8_t hi = MIN(15, (int8_t)((x[QK / 2 + j] - min) * id + 0.5f));
            y[i].qs[j] = lo | (uint8_t)(hi << 4);
        }
    }
}

static void q5_0_row(const float *x, blk_q5_0 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK; i++, x += QK) {
        const float d = signed_absmax(x) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t lo = MIN(31, (int8_t)(x[j] * id + 16.5f));
            const uint8_t hi = MIN(31, (int8_t)(x[QK / 2 + j] * id + 16.5f));
            y[i].qs[j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
            qh |= ((lo & 0x10u) >> 4) << j;            /* the 5th bits: element j at bit j */
            qh |= ((hi & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void q5_1_row(const float *x, blk_q5_1 *y, int64_t k) {
    for (int64_t i = 0; i < k / QK; i++, x += QK) {
        float min, max;
        min_max(x, &min, &max);
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        y[i].m = f32_to_f16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK / 2; j++) {
            const uint8_t lo = (uint8_t)((x[j] - min) * id + 0.5f);
            const uint8_t hi = (uint8_t)((x[QK / 2 + j] - min) * id + 0.5f);
            y[i].qs[j] = (lo & 0x0F) | ((hi & 0x0F) << 4);
            qh |= ((lo & 0x10u) >> 4) << j;
            qh |= ((hi & 0x10u) >> 4) << (j + QK / 2);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

/* ---- K-quant scale searches (ggml-quants.c, same names) --------------------------------------------- */

/* Symmetric levels L[i] in [0, 2*nmax) for x (n,): tries scales -(nmax + 0.1*is)/max, is = -9..9, weighting
 * each element by x^2 (rmse_type 1, the only one the reference quantizers use); returns the scale. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = MAX(-nmax, MIN(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + MAX(-nmax, MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's sub-block fit: start from the absmax scale, then move single levels while the x^2-weighted
 * least-squares error drops (at most 5 sweeps). L[i] in [0, 2*nmax); returns the scale. */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax - 1, l));
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = nearest_int(x[i] * sl2 / slx);
                new_l = MAX(-nmax, MIN(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric levels L[i] in [0, nmax] for x (n,) with weights: x ~ scale*L - the_min. Tries nstep+1 scales
 * (rmin + rdelta*is + nmax)/(max - min), solving scale and min by weighted least squares for each, and keeps the
 * least weighted error (absolute if use_mad). Returns the scale, *the_min >= 0. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = MAX(0, MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* 6-bit scale j and min j of Q4_K / Q5_K's 12 packed bytes */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

/* ---- K-quants ------------------------------------------------------------------------------------------ */

/* 16 sub-blocks of 16: 2-bit levels, 4-bit scale and 4-bit min per sub-block, f16 super-scales d, dmin */
static void q2_K_row(const float *x, blk_q2_K *y, int64_t k) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    const float q4scale = 15.f;
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float max_scale = 0, max_min = 0; /* the min is subtracted, so scales are never negative */
        for (int j = 0; j < QK_K / 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
            y[i].d = f32_to_f16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] = 0;
            y[i].d = f32_to_f16(0.f);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; j++) y[i].scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = f32_to_f16(max_min / q4scale);
        } else {
            y[i].dmin = f32_to_f16(0.f);
        }
        /* re-level against the rounded scales (a zero scale keeps the search's levels) */
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = f16_to_f32(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = f16_to_f32(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)MAX(0, MIN(3, l));
            }
        }
        /* byte l of each 32-byte group holds elements l, l+32, l+64, l+96 of its 128 */
        for (int j = 0; j < QK_K; j += 128)
            for (int l = 0; l < 32; l++)
                y[i].qs[j / 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
    }
}

/* 16 sub-blocks of 16: 3-bit symmetric levels (2 low bits in qs, the high bit in hmask), 6-bit scales */
static void q3_K_row(const float *x, blk_q3_K *y, int64_t k) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            const float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; j++) {
                int8_t l = (int8_t)nearest_int(iscale * scales[j]);
                l = (int8_t)(MAX(-32, MIN(31, l)) + 32);
                if (j < 8) y[i].scales[j] = l & 0xF;
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l >>= 4;
                y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[i].d = f32_to_f16(1 / iscale);
        } else {
            y[i].d = f32_to_f16(0.f);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int8_t sc = (int8_t)(j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4);
            sc = (int8_t)((sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
            const float d = f16_to_f32(y[i].d) * sc;
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(MAX(-4, MIN(3, l)) + 4);
            }
        }
        /* high bit of element j: bit j / 32 of hmask[j % 32] */
        memset(y[i].hmask, 0, QK_K / 8);
        int m = 0;
        uint8_t hm = 1;
        for (int j = 0; j < QK_K; j++) {
            if (L[j] > 3) {
                y[i].hmask[m] |= hm;
                L[j] -= 4;
            }
            if (++m == QK_K / 8) {
                m = 0;
                hm <<= 1;
            }
        }
        for (int j = 0; j < QK_K; j += 128)
            for (int l = 0; l < 32; l++)
                y[i].qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
}

/* Q4_K and Q5_K share everything but the level count (15 / 31), the search range and the bit packing: 8
 * sub-blocks of 32 with a 6-bit scale and 6-bit min each, weighted by sqrt(mean x^2) + |x|. */
static void k_scale_min_levels(const float *x, int nmax, float rmin, int nstep, uint8_t *L, uint8_t *scales_out,
                               uint16_t *d_out, uint16_t *dmin_out) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, 0);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = MIN(63, ls);
        lm = MIN(63, lm);
        if (j < 4) {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            scales_out[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales_out[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *d_out = f32_to_f16(max_scale / 63.f);
    *dmin_out = f32_to_f16(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales_out, &sc, &m);
        const float d = f16_to_f32(*d_out) * sc;
        if (!d) continue;
        const float dm = f16_to_f32(*dmin_out) * m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)MAX(0, MIN(nmax, l));
        }
    }
}

static void q4_K_row(const float *x, blk_q4_K *y, int64_t k) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        k_scale_min_levels(x, 15, -1.f, 20, L, y[i].scales, &y[i].d, &y[i].dmin);
        /* 64 elements per 32 bytes: low nibbles the first 32, high nibbles the next 32 */
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void q5_K_row(const float *x, blk_q5_K *y, int64_t k) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        k_scale_min_levels(x, 31, -0.5f, 15, L, y[i].scales, &y[i].d, &y[i].dmin);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2; /* the 5th bit of element n + j (n + j + 32) goes to bit n/32 (+1) of qh[j] */
        for (int n = 0; n < QK_K; n += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[n + j], l2 = L[n + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/* 16 sub-blocks of 16: 6-bit symmetric levels (4 low bits in ql, 2 high in qh), int8 scales, f16 d */
static void q6_K_row(const float *x, blk_q6_K *y, int64_t k) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < k / QK_K; i++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof(blk_q6_K));
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = f32_to_f16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) y[i].scales[ib] = (int8_t)MIN(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = f16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(MAX(-32, MIN(31, l)) + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* ---- entry points ---------------------------------------------------------------------------------------- */

typedef void (*row_fn)(const float *x, void *y, int64_t k);

static int type_info(int type, row_fn *fn, int *block, int *bytes) {
    switch (type) {
    case LCX_GGML_Q8_0: *fn = (row_fn)q8_0_row; *block = QK; *bytes = sizeof(blk_q8_0); return 1;
    case LCX_GGML_Q4_0: *fn = (row_fn)q4_0_row; *block = QK; *bytes = sizeof(blk_q4_0); return 1;
    case LCX_GGML_Q4_1: *fn = (row_fn)q4_1_row; *block = QK; *bytes = sizeof(blk_q4_1); return 1;
    case LCX_GGML_Q5_0: *fn = (row_fn)q5_0_row; *block = QK; *bytes = sizeof(blk_q5_0); return 1;
    case LCX_GGML_Q5_1: *fn = (row_fn)q5_1_row; *block = QK; *bytes = sizeof(blk_q5_1); return 1;
    case LCX_GGML_Q2_K: *fn = (row_fn)q2_K_row; *block = QK_K; *bytes = sizeof(blk_q2_K); return 1;
    case LCX_GGML_Q3_K: *fn = (row_fn)q3_K_row; *block = QK_K; *bytes = sizeof(blk_q3_K); return 1;
    case LCX_GGML_Q4_K: *fn = (row_fn)q4_K_row; *block = QK_K; *bytes = sizeof(blk_q4_K); return 1;
    case LCX_GGML_Q5_K: *fn = (row_fn)q5_K_row; *block = QK_K; *bytes = sizeof(blk_q5_K); return 1;
    case LCX_GGML_Q6_K: *fn = (row_fn)q6_K_row; *block = QK_K; *bytes = sizeof(blk_q6_K); return 1;
    default: return 0;
    }
}

size_t lcx_quant_row_bytes(int type, int64_t n_per_row) {
    row_fn fn;
    int block, bytes;
    if (!type_info(type, &fn, &block, &bytes) || n_per_row <= 0 || n_per_row % block) return 0;
    return (size_t)(n_per_row / block) * (size_t)bytes;
}

size_t lcx_quantize_rows(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row) {
    row_fn fn;
    int block, bytes;
    const size_t row_bytes = lcx_quant_row_bytes(type, n_per_row);
    if (!row_bytes || nrows < 0 || !type_info(type, &fn, &block, &bytes)) return 0;
    #pragma omp parallel for schedule(dynamic, 16)
    for (int64_t r = 0; r < nrows; r++) fn(src + r * n_per_row, (char *)dst + (size_t)r * row_bytes, n_per_row);
    return (size_t)nrows * row_bytes;
}
