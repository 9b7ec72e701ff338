/* Threaded operations: OpenMP splits rows (matrices), heads (attention) or tokens; the per-ISA row
 * kernels of lcx_active() do the arithmetic. Small problems stay on one thread (a parallel region costs
 * a few microseconds, more than e.g. an RMSNorm of one token).
 *
 * Performance notes
 * - lcx_linear: weight rows are split in blocks of 4 (the register tile) evenly across threads; for
 *   t > 1 the columns are cut in chunks of LCX_KC so a (t, LCX_KC) activation panel stays in L2 while
 *   each thread streams its weight rows past it.
 * - attention: scores of a block of LCX_ATT_QB queries are one product; P @ V runs 4 queries per tile, so each
 *   V row is loaded once per 4 queries (one query at a time, SmolLM2 pp512 spent 12% there; now 4-6%).
 * - decode attention: one work item per (kv head, its query heads, 512 keys), so the query heads sharing a
 *   kv head read each K and V row once, and two threads share the keys of SmolLM2's 3 kv heads evenly.
 *   Before, one item per query head (9 on 2 threads: 5 against 4), each reading K and V itself, and at
 *   position 3800 attention took more time than the weights. SmolLM2 decode, 2 threads, alternating
 *   builds: position 3800 27.5-33.6 -> 42.1-47.6 tok/s, 2000 34.8-51.8 -> 57.3-58.4, 1000 65.0-68.9 ->
 *   77.7-78.7, position 16 unchanged (within the noise, 1B shape too). The KV caches on transparent huge
 *   pages (lcx_alloc_kv) then gave 1.1-1.2x more at positions 2000-3800 (alternating builds). What was left
 *   was the layout: one core read a kv head's rows 3 heads apart (768-byte rows, 256 bytes used) at ~7 GB/s
 *   and the same bytes contiguous at ~15 (harness, 1 thread; prefetching V to L2 during QK changed
 *   nothing). The caches are now head-major (lcx_kv_view): SmolLM2 decode at positions 1000-3800 another
 *   1.1-1.5x (alternating builds), prompts unchanged.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcx.h"
#include "lcx_simd.h"

#ifdef _OPENMP
#include <omp.h>
#define LCX_THREAD_NUM() omp_get_thread_num()
#define LCX_NUM_THREADS() omp_get_num_threads()
#else
#define LCX_THREAD_NUM() 0
#define LCX_NUM_THREADS() 1
#endif

#define LCX_KC 1024
/* below this many multiply-adds a matrix product runs on one thread */
#define LCX_PAR_MIN_WORK (1u << 15)

static int lcx_threads_for(size_t work) {
    int nt = lcx_get_num_threads();
    return work < LCX_PAR_MIN_WORK ? 1 : nt;
}

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
    const lcx_kernels *k = lcx_active();
    size_t kc = t > 1 ? LCX_KC : n;
    for (size_t c0 = 0; c0 < n; c0 += kc) {
        size_t cn = n - c0 < kc ? n - c0 : kc;
        int b = c0 == 0 ? beta : 1;
        if (wtype == LCX_BF16)
            k->gemm_bf16((const uint16_t *)W + r0 * n + c0, n, X + c0, ldx, Yr0, ldy, r1 - r0, t, cn, b);
        else
            k->gemm_f32((const float *)W + r0 * n + c0, n, X + c0, ldx, Yr0, ldy, r1 - r0, t, cn, b);
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

/* Work items (head h, block of up to LCX_ATT_QB queries) dealt round robin to threads (later blocks see
 * more keys). Per item: scores S (nq, n_keys) = Q_blk @ K[0:n_keys]ᵀ as one matrix product (the gemm
 * tile kernel), causal mask by row length, softmax per row, out rows = S @ V as one causal product (the
 * pv kernel: each row of V it loads serves several queries). */
void lcx_attention_part(const float *q, const lcx_kv_view *kv, float *out, uint16_t *outh, size_t t,
                        size_t pos0, size_t n_heads, size_t n_kv, size_t hd, float *S, int tid, int nth) {
    const lcx_kernels *k = lcx_active();
    size_t n_rep = n_heads / n_kv, q_dim = n_heads * hd, ld = kv->row_stride;
    size_t n_blocks = (t + LCX_ATT_QB - 1) / LCX_ATT_QB;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t idx = (size_t)tid; idx < n_heads * n_blocks; idx += (size_t)nth) {
        size_t h = idx % n_heads, i0 = (idx / n_heads) * LCX_ATT_QB;
        size_t nq = t - i0 < LCX_ATT_QB ? t - i0 : LCX_ATT_QB;
        size_t n_keys = pos0 + i0 + nq; /* the block's last query sees keys 0 .. pos0 + i0 + nq - 1 */
        const float *kh = kv->k + (h / n_rep) * kv->head_stride, *vh = kv->v + (h / n_rep) * kv->head_stride;
        k->gemm_f32(kh, ld, q + i0 * q_dim + h * hd, q_dim, S, n_keys, n_keys, nq, hd, 0); /* S (nq, n_keys) */
        for (size_t i = 0; i < nq; i++) k->softmax_f32(S + i * n_keys, pos0 + i0 + i + 1, scale); /* causal */
        k->pv_f32(S, n_keys, nq, vh, ld, pos0 + i0 + 1, 1, hd, out + i0 * q_dim + h * hd, q_dim);
        for (size_t i = 0; outh && i < nq; i++) /* the bf16 copy for the next product, while the rows are hot */
            lcx_round_bf16(out + (i0 + i) * q_dim + h * hd, outh + (i0 + i) * q_dim + h * hd, hd);
    }
}

void lcx_attention_decode_part(const float *q, const lcx_kv_view *kv, size_t n_keys, size_t n_heads,
                               size_t n_kv, size_t hd, float *S, float *part, int tid, int nth) {
    const lcx_kernels *k = lcx_active();
    const size_t n_rep = n_heads / n_kv, ld = kv->row_stride, n_sub = (n_rep + LCX_ATT_QB - 1) / LCX_ATT_QB;
    const size_t n_parts = (n_keys + LCX_DEC_KC - 1) / LCX_DEC_KC;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t idx = (size_t)tid; idx < n_kv * n_sub * n_parts; idx += (size_t)nth) {
        size_t c = idx % n_parts, b = idx / n_parts % n_sub, g = idx / n_parts / n_sub;
        size_t h0 = g * n_rep + b * LCX_ATT_QB, nr = n_rep - b * LCX_ATT_QB < LCX_ATT_QB ? n_rep - b * LCX_ATT_QB : LCX_ATT_QB;
        size_t k0 = c * LCX_DEC_KC, len = n_keys - k0 < LCX_DEC_KC ? n_keys - k0 : LCX_DEC_KC;
        float *o = part + (c * n_heads + h0) * (hd + 1); /* (nr, hd + 1): weighted values, then the lse */
        /* S (nr, len) = the group's query heads (consecutive in q) @ K[k0 : k0 + len]ᵀ */
        k->gemm_f32(kv->k + g * kv->head_stride + k0 * ld, ld, q + h0 * hd, hd, S, len, len, nr, hd, 0);
        for (size_t r = 0; r < nr; r++) o[r * (hd + 1) + hd] = k->softmax_f32(S + r * len, len, scale);
        k->pv_f32(S, len, nr, kv->v + g * kv->head_stride + k0 * ld, ld, len, 0, hd, o, hd + 1);
    }
}

void lcx_attention_merge(const float *part, size_t n_keys, size_t n_heads, size_t hd, float *out) {
    const size_t n_parts = (n_keys + LCX_DEC_KC - 1) / LCX_DEC_KC;
    for (size_t h = 0; h < n_heads; h++) {
        const float *o = part + h * (hd + 1);
        float *y = out + h * hd;
        if (n_parts == 1) {
            memcpy(y, o, hd * sizeof(float));
            continue;
        }
        double mx = -INFINITY, wsum = 0.0;
        for (size_t c = 0; c < n_parts; c++) {
            double lse = o[c * n_heads * (hd + 1) + hd];
            mx = lse > mx ? lse : mx;
        }
        for (size_t c = 0; c < n_parts; c++) wsum += exp(o[c * n_heads * (hd + 1) + hd] - mx);
        for (size_t i = 0; i < hd; i++) y[i] = 0.0f;
        for (size_t c = 0; c < n_parts; c++) { /* part c's share of the whole softmax */
            const float *oc = o + c * n_heads * (hd + 1);
            float w = (float)(exp(oc[hd] - mx) / wsum);
            for (size_t i = 0; i < hd; i++) y[i] += w * oc[i];
        }
    }
}

void lcx_attention_decode_f32(const float *q, const float *kc, const float *vc, float *out, size_t n_keys,
                              size_t n_heads, size_t n_kv, size_t hd, float *scratch, float *part, int n_scratch) {
    int nt = lcx_threads_for(n_heads * n_keys * hd * 2);
    if (nt > n_scratch) nt = n_scratch;
    const lcx_kv_view kv = {kc, vc, hd, n_kv * hd}; /* row-major (n_keys, n_kv * hd) caches */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = LCX_THREAD_NUM();
        lcx_attention_decode_part(q, &kv, n_keys, n_heads, n_kv, hd, scratch + (size_t)tid * LCX_ATT_QB * LCX_DEC_KC,
                                  part, tid, LCX_NUM_THREADS());
    }
    lcx_attention_merge(part, n_keys, n_heads, hd, out);
}

void lcx_attention_f32(const float *q, const float *kc, const float *vc, float *out, size_t t, size_t pos0,
                       size_t n_heads, size_t n_kv, size_t hd, float *scratch, size_t scratch_stride,
                       int n_scratch) {
    int nt = lcx_threads_for(n_heads * t * (pos0 + t) * hd * 2);
    if (nt > n_scratch) nt = n_scratch;
    const lcx_kv_view kv = {kc, vc, hd, n_kv * hd}; /* row-major (pos0 + t, n_kv * hd) caches */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = LCX_THREAD_NUM();
        lcx_attention_part(q, &kv, out, NULL, t, pos0, n_heads, n_kv, hd, scratch + (size_t)tid * scratch_stride,
                           tid, LCX_NUM_THREADS());
    }
}

/* IEEE half -> f32 (exact: every f16 is representable), for f16 checkpoints converted at load. */
void lcx_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t j = 0; j < n; j++) {
        uint32_t h = src[j], sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ffu, u;
        if (e == 0x1f) {
            u = sign | 0x7f800000u | (mant << 13);
        } else if (e != 0) {
            u = sign | ((e + 112) << 23) | (mant << 13);
        } else if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int shift = 0;
            while (!(mant & 0x400u)) { mant <<= 1; shift++; }
            u = sign | ((uint32_t)(113 - shift) << 23) | ((mant & 0x3ffu) << 13);
        }
        memcpy(dst + j, &u, sizeof u);
    }
}
