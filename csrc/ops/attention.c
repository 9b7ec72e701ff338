/* Causal GQA attention over the KV cache: prompt blocks (lcx_attention_part) and one-token decode steps in
 * parts merged by log-sum-exp (lcx_attention_decode_part, lcx_attention_merge). Threads take work items
 * (heads x query blocks, or kv heads x key parts) round robin; the f32 gemm of lcx_dtypes (the caches are f32)
 * and the per-ISA pv / softmax row kernels do the arithmetic.
 *
 * Performance notes
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
#include <string.h>

#include "lcx.h"
#include "ops/ops.h"

/* f32 rows [j0, j0 + n) of kv head g's keys (which 0) or values (1), and their row stride *ld: the cache itself
 * when it is f32, else the rows widened into the thread's conv (bf16 / f16 caches: half the bytes read from
 * memory, widened in cache) */
static const float *lcx_kv_rows(const lcx_kv_view *kv, int which, size_t g, size_t j0, size_t n, size_t hd,
                                size_t *ld) {
    const void *base = which ? kv->v : kv->k;
    size_t at = g * kv->head_stride + j0 * kv->row_stride;
    if (kv->dtype == LCX_DT_F32) {
        *ld = kv->row_stride;
        return (const float *)base + at;
    }
    float *dst = kv->conv + (which ? kv->conv_stride : 0);
    lcx_to_f32_kernel(kv->dtype)((const unsigned char *)base + lcx_dtype_bytes(kv->dtype, at), dst, n * hd);
    *ld = hd;
    return dst;
}

/* Work items (head h, block of up to LCX_ATT_QB queries) dealt round robin to threads (later blocks see
 * more keys). Per item: scores S (nq, n_keys) = Q_blk @ K[0:n_keys]ᵀ as one matrix product (the gemm
 * tile kernel), causal mask by row length, softmax per row, out rows = S @ V as one causal product (the
 * pv kernel: each row of V it loads serves several queries). */
void lcx_attention_part(const float *q, const lcx_kv_view *kv, float *out, void *outh, int act_type, size_t t,
                        size_t pos0, size_t n_heads, size_t n_kv, size_t hd, float *S, int tid, int nth) {
    const lcx_kernels *k = lcx_active();
    const lcx_gemm_fn gemm_f32 = lcx_gemm_kernel(LCX_DT_F32);
    const lcx_from_f32_fn to_act = outh ? lcx_from_f32_kernel(act_type) : 0;
    size_t n_rep = n_heads / n_kv, q_dim = n_heads * hd, ld, ldv;
    size_t n_blocks = (t + LCX_ATT_QB - 1) / LCX_ATT_QB;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t idx = (size_t)tid; idx < n_heads * n_blocks; idx += (size_t)nth) {
        size_t h = idx % n_heads, i0 = (idx / n_heads) * LCX_ATT_QB;
        size_t nq = t - i0 < LCX_ATT_QB ? t - i0 : LCX_ATT_QB;
        size_t n_keys = pos0 + i0 + nq; /* the block's last query sees keys 0 .. pos0 + i0 + nq - 1 */
        const float *kh = lcx_kv_rows(kv, 0, h / n_rep, 0, n_keys, hd, &ld);
        const float *vh = lcx_kv_rows(kv, 1, h / n_rep, 0, n_keys, hd, &ldv);
        gemm_f32(kh, ld, q + i0 * q_dim + h * hd, q_dim, S, n_keys, n_keys, nq, hd, 0); /* S (nq, n_keys) */
        for (size_t i = 0; i < nq; i++) k->softmax_f32(S + i * n_keys, pos0 + i0 + i + 1, scale); /* causal */
        k->pv_f32(S, n_keys, nq, vh, ldv, pos0 + i0 + 1, 1, hd, out + i0 * q_dim + h * hd, q_dim);
        for (size_t i = 0; to_act && i < nq; i++) { /* the act_type copy for the next product, while the rows are hot */
            size_t at = (i0 + i) * q_dim + h * hd;
            to_act(out + at, (unsigned char *)outh + lcx_dtype_bytes(act_type, at), hd);
        }
    }
}

void lcx_attention_decode_part(const float *q, const lcx_kv_view *kv, size_t n_keys, size_t n_heads,
                               size_t n_kv, size_t hd, float *S, float *part, int tid, int nth) {
    const lcx_kernels *k = lcx_active();
    const lcx_gemm_fn gemm_f32 = lcx_gemm_kernel(LCX_DT_F32);
    const size_t n_rep = n_heads / n_kv, n_sub = (n_rep + LCX_ATT_QB - 1) / LCX_ATT_QB;
    const size_t n_parts = (n_keys + LCX_DEC_KC - 1) / LCX_DEC_KC;
    const float scale = 1.0f / sqrtf((float)hd);
    for (size_t idx = (size_t)tid; idx < n_kv * n_sub * n_parts; idx += (size_t)nth) {
        size_t c = idx % n_parts, b = idx / n_parts % n_sub, g = idx / n_parts / n_sub;
        size_t h0 = g * n_rep + b * LCX_ATT_QB, nr = n_rep - b * LCX_ATT_QB < LCX_ATT_QB ? n_rep - b * LCX_ATT_QB : LCX_ATT_QB;
        size_t k0 = c * LCX_DEC_KC, len = n_keys - k0 < LCX_DEC_KC ? n_keys - k0 : LCX_DEC_KC;
        float *o = part + (c * n_heads + h0) * (hd + 1); /* (nr, hd + 1): weighted values, then the lse */
        /* S (nr, len) = the group's query heads (consecutive in q) @ K[k0 : k0 + len]ᵀ */
        size_t ldk, ldv;
        const float *kr = lcx_kv_rows(kv, 0, g, k0, len, hd, &ldk), *vr = lcx_kv_rows(kv, 1, g, k0, len, hd, &ldv);
        gemm_f32(kr, ldk, q + h0 * hd, hd, S, len, len, nr, hd, 0);
        for (size_t r = 0; r < nr; r++) o[r * (hd + 1) + hd] = k->softmax_f32(S + r * len, len, scale);
        k->pv_f32(S, len, nr, vr, ldv, len, 0, hd, o, hd + 1);
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
    const lcx_kv_view kv = {kc, vc, hd, n_kv * hd, LCX_DT_F32, NULL, 0}; /* row-major (n_keys, n_kv * hd) caches */
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
    const lcx_kv_view kv = {kc, vc, hd, n_kv * hd, LCX_DT_F32, NULL, 0}; /* row-major (pos0 + t, n_kv * hd) caches */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = LCX_THREAD_NUM();
        lcx_attention_part(q, &kv, out, NULL, -1, t, pos0, n_heads, n_kv, hd,
                           scratch + (size_t)tid * scratch_stride, tid, LCX_NUM_THREADS());
    }
}

