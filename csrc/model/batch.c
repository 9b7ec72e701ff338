/* Continuous batching: one forward step over several sequences, each with its own KV cache and positions.
 * Every sequence brings one token (a decode step) or a chunk of its prompt; all rows of the step go through
 * each weight matrix in one product (t = rows of the step: the gemm tile, so the weights are read once per
 * step, not once per sequence), while attention runs per sequence over its own cache, causal within a chunk.
 * The same layer as lcx_forward (model/forward.c), top to bottom:
 *   embed -> for each layer: RMSNorm, q/k/v for all rows, RoPE at each row's position, K/V rows into each
 *   sequence's cache, attention per sequence, out-proj + residual, RMSNorm, SwiGLU FFN + residual ->
 *   RMSNorm of each sequence's last row -> logits.
 * A sequence's rows get the same arithmetic as in lcx_forward alone (lcx_product_rows), so its logits are the
 * same bits, whatever the other sequences of the step; f32 activations throughout (the bf16-activation
 * switches of lcx_forward are not applied here).
 *
 * Performance notes
 * - One-token rows over quantized weights: the rows' inputs quantized once per input and thread (a cache, as
 *   lcx_forward's), then each run of consecutive one-token rows through one gemm_act call, i.e. the
 *   multi-vector dot (dotn: a weight block unpacked once for up to 8 sequences). SmolLM2 Q4_1, 2 threads, quiet
 *   Xeon, aggregate tok/s for 1 / 2 / 4 / 8 sequences: 212 / 255 / 274 / 287 with one dot per sequence over a
 *   64 KiB block of rows (the first version), 249 / 380 / 415 / 567 now (benchmarks/RESULTS.md, sixth session).
 * - Steps of at most LCX_BATCH_OWN_ROWS rows: every thread normalises all rows and merges every one-token
 *   sequence's attention itself, 5 barriers per layer instead of 8 (the step's scratch: one allocation).
 * - An earlier measurement (bf16 SmolLM2, 1 thread, loaded machine): the gemm tile for all rows, not bit-exact,
 *   ran at the speed of the per-row matvec, so the exact path stayed for f32 / bf16 weights.
 */
#include <string.h>

#include <stdlib.h>

#include "lcx.h"
#include "model/model.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* the attention work items of a sequence of n rows at pos0 (as lcx_attention_part / _decode_part deal them) */
static size_t lcx_att_items(const lcx_model *m, int64_t n, int64_t pos0) {
    if (n == 1) {
        size_t n_rep = (size_t)(m->n_heads / m->n_kv_heads), n_sub = (n_rep + LCX_ATT_QB - 1) / LCX_ATT_QB;
        return (size_t)m->n_kv_heads * n_sub * (((size_t)pos0 + 1 + LCX_DEC_KC - 1) / LCX_DEC_KC);
    }
    return (size_t)m->n_heads * (((size_t)n + LCX_ATT_QB - 1) / LCX_ATT_QB);
}

/* Rows [lo, hi) of kv_dim (within whole heads or not) of the step's new rows src (T, kv_dim), rows r0 .. r0 + n
 * of sequence s, into its head-major cache of layer l (n_kv, n_ctx, hd) of kv_dtype at positions pos0 ..
 * pos0 + n, rounded when it is not f32. */
static void lcx_store_kv(void *cache, int kv_dtype, int64_t n_ctx, size_t hd, const float *src, size_t kv_dim,
                         size_t r0, int64_t n, int64_t pos0, size_t lo, size_t hi) {
    const lcx_from_f32_fn round_kv = kv_dtype == LCX_DT_F32 ? 0 : lcx_from_f32_kernel(kv_dtype);
    for (size_t g = lo / hd; g * hd < hi; g++) {
        size_t a = g * hd > lo ? g * hd : lo, b = (g + 1) * hd < hi ? (g + 1) * hd : hi;
        for (int64_t j = 0; j < n; j++) {
            size_t at = (g * (size_t)n_ctx + (size_t)(pos0 + j)) * hd + (a - g * hd);
            const float *row = src + (r0 + (size_t)j) * kv_dim + a;
            if (round_kv)
                round_kv(row, (unsigned char *)cache + lcx_dtype_bytes(kv_dtype, at), b - a);
            else
                memcpy((float *)cache + at, row, (b - a) * sizeof(float));
        }
    }
}

/* bytes of weight rows per block of the one-token products over f32 / bf16 weights: read from memory for the
 * first token of the step and from L2 for the others */
#define LCX_BATCH_BLOCK_BYTES (64u << 10)
/* steps of at most this many rows skip the barriers of a shared RMSNorm and attention merge: every thread
 * normalises all rows and merges every one-token sequence itself (a few microseconds each), as lcx_forward
 * does for one token */
#define LCX_BATCH_OWN_ROWS 64


/* The one-token rows of a product's input, as lcx_product_rows reads them: row j (the j-th one-token row of
 * the step) at X1 + j * ldx1 when X1 is given (a thread's own copy, e.g. its merged attention), else at the
 * step's row r of X. */
typedef struct {
    const float *X1;
    size_t ldx1;
} lcx_one_rows;

/* the step's one-token rows of (X, ldx) or of `one` quantized to activation type `type`, this thread's copy
 * (lcx_xq_cache, model/model.h: here a slot holds the one-token rows, at most n_seq, of
 * lcx_dtype_bytes(type, n) bytes each, back to back) */
static const unsigned char *lcx_batch_xq_get(lcx_xq_cache *c, const float *X, size_t ldx, const lcx_one_rows *one,
                                             const int64_t *n_tok, int64_t n_seq, size_t n, int type) {
    int i;
    if (lcx_xq_slot(c, one ? one->X1 : X, type, &i)) {
        const lcx_from_f32_fn quant = lcx_from_f32_kernel(type);
        const size_t xb = lcx_dtype_bytes(type, n);
        int64_t r = 0, j = 0;
        for (int64_t s = 0; s < n_seq; r += n_tok ? n_tok[s] : 1, s++) {
            if (n_tok && n_tok[s] != 1) continue;
            quant(one ? one->X1 + (size_t)j * one->ldx1 : X + (size_t)r * ldx, c->buf[i] + (size_t)j * xb, n);
            j++;
        }
    }
    return c->buf[i];
}

/* Rows [r0, r1) of Y (t, ldy) (+)= X (t, ldx) @ Wᵀ over n columns, for the step's rows as lcx_forward computes
 * them for each sequence alone, so a batched sequence gets the same bits: a prompt chunk's rows as one block
 * (the gemm tile, whose per-row sums do not depend on the other rows), each one-token row as a one-token step
 * (one is NULL: its input is its row of X; else the thread's own copy, see lcx_one_rows).
 * - Weight types whose one-token products read quantized activations (act_decode: the GGUF block types): the
 *   one-token rows quantized once per input (xq), then each run of consecutive one-token rows in one gemm_act
 *   call (the multi-vector dot: a weight block read and unpacked once for all of them; each row's sums as its
 *   one-token dot alone).
 * - Otherwise: a block of LCX_BATCH_BLOCK_BYTES of weight rows at a time through the matvec kernel for every
 *   one-token row, so the block comes from memory once per step and from cache for the others (the matvec
 *   sums a row the same way whatever the block: see LCX_MATVEC_BODY).
 * n_tok NULL: n_seq rows of one token each. */
static void lcx_product_rows(const lcx_mat *W, const float *X, size_t ldx, const lcx_one_rows *one, float *Y,
                             size_t ldy, size_t r0, size_t r1, size_t n, const int64_t *n_tok, int64_t n_seq, int beta,
                             lcx_xq_cache *xq) {
    if (r0 >= r1) return;
    int64_t r = 0, n_one = 0;
    for (int64_t i = 0; n_tok && i < n_seq; r += n_tok[i], i++)
        if (n_tok[i] > 1)
            lcx_linear_rows(W->data, W->dtype, X + (size_t)r * ldx, ldx, Y + (size_t)r * ldy + r0, ldy, r0, r1, n,
                            (size_t)n_tok[i], beta);
    for (int64_t i = 0; i < n_seq; i++) n_one += !n_tok || n_tok[i] == 1;
    if (!n_one) return;
    const lcx_dtype_traits *d = &lcx_dtypes[W->dtype];
    if (d->act_decode) {
        const lcx_gemm_act_fn gemm_act = lcx_gemm_act_kernel(W->dtype);
        const unsigned char *xqr = lcx_batch_xq_get(xq, X, ldx, one, n_tok, n_seq, n, d->act_type);
        const size_t xb = lcx_dtype_bytes(d->act_type, n);
        const void *wr0 = (const unsigned char *)W->data + lcx_dtype_bytes(W->dtype, r0 * n);
        int64_t i = 0, j = 0;
        r = 0;
        while (i < n_seq) { /* runs of consecutive one-token sequences */
            if (n_tok && n_tok[i] != 1) {
                r += n_tok[i++];
                continue;
            }
            int64_t i1 = i;
            while (i1 < n_seq && (!n_tok || n_tok[i1] == 1)) i1++;
            gemm_act(wr0, n, xqr + (size_t)j * xb, n, Y + (size_t)r * ldy + r0, ldy, r1 - r0, (size_t)(i1 - i), n, beta);
            r += i1 - i;
            j += i1 - i;
            i = i1;
        }
        return;
    }
    const lcx_gemm_fn gemm = lcx_gemm_kernel(W->dtype);
    size_t row_bytes = lcx_dtype_bytes(W->dtype, n), blk = LCX_BATCH_BLOCK_BYTES / (row_bytes ? row_bytes : 1) / 4 * 4;
    if (blk < 4) blk = 4;
    for (size_t b0 = r0; b0 < r1; b0 += blk) {
        size_t rows = r1 - b0 < blk ? r1 - b0 : blk;
        const void *wb = (const unsigned char *)W->data + lcx_dtype_bytes(W->dtype, b0 * n);
        r = 0;
        for (int64_t i = 0, j = 0; i < n_seq; r += n_tok ? n_tok[i] : 1, i++) {
            if (n_tok && n_tok[i] != 1) continue;
            const float *xr = one ? one->X1 + (size_t)j++ * one->ldx1 : X + (size_t)r * ldx;
            gemm(wb, n, xr, ldx, Y + (size_t)r * ldy + b0, ldy, rows, 1, n, beta);
        }
    }
}

int lcx_forward_batch(const lcx_model *m, lcx_state *w, lcx_state *const *states, const int32_t *tokens,
                      const int64_t *n_tok, const int64_t *pos0, int64_t n_seq, float *logits, int all_logits) {
    if (n_seq < 1 || w->kvb == NULL) return -1;
    int64_t t = 0, n_one = 0;
    for (int64_t i = 0; i < n_seq; i++) {
        const lcx_state *s = states[i];
        if (!s || s->kvb || (s->kv_dtype != LCX_DT_F32 && !w->kvconv) || n_tok[i] < 1 || pos0[i] < 0 || pos0[i] + n_tok[i] > s->n_ctx || s->n_ctx > w->n_ctx)
            return -1;
        for (int64_t k = 0; k < i; k++)
            if (states[k] == s) return -1; /* one sequence per cache */
        t += n_tok[i];
        n_one += n_tok[i] == 1;
        if (t > w->max_batch) return -1;
    }
    for (int64_t r = 0; r < t; r++)
        if (tokens[r] < 0 || tokens[r] >= m->vocab_size) return -1;

    const size_t dim = (size_t)m->dim, hd = (size_t)m->head_dim, q_dim = (size_t)lcx_q_dim(m);
    const size_t kv_dim = (size_t)lcx_kv_dim(m), hidden = (size_t)m->hidden_dim, T = (size_t)t;
    const size_t n_heads = (size_t)m->n_heads, n_kv = (size_t)m->n_kv_heads, vocab = (size_t)m->vocab_size;
    float *x = w->x, *q = w->q, *att = w->att, *hb = w->hb, *hb2 = w->hb2;
    float *kb = w->kvb, *vb = w->kvb + T * kv_dim; /* (t, kv_dim) each: the step's new K and V rows */
    const float eps = m->norm_eps;

    for (int64_t i = 0, r = 0; i < n_seq; i++)
        for (int64_t j = 0; j < n_tok[i]; j++, r++) {
            lcx_row_to_f32(&m->tok_embeddings, m->dim, tokens[r], x + r * m->dim); /* x (t, dim) */
            w->pos[r] = pos0[i] + j;
        }
    lcx_rope_table(w->pos, T, m->rope_freqs, hd / 2, w->rope_cos, w->rope_sin); /* each row at its position */

    int nt = lcx_get_num_threads();
    if (nt > w->n_scratch_threads) nt = (int)w->n_scratch_threads;
    if (dim * dim * T < (1u << 15)) nt = 1; /* toy sizes: not worth the threads */
    /* each thread's own scratch for this step: its one-token rows quantized (LCX_XQ_SLOTS x (n_seq, xq_bytes):
     * the logits take each sequence's last row as one) and, in a small step, its merge of the one-token rows'
     * attention (n_one, q_dim) */
    const int own = T <= LCX_BATCH_OWN_ROWS; /* no shared RMSNorm / merge: see LCX_BATCH_OWN_ROWS */
    const size_t xq_part = (size_t)n_seq * w->xq_bytes, att_part = own ? (size_t)n_one * q_dim * sizeof(float) : 0;
    const size_t per_thread = ((size_t)LCX_XQ_SLOTS * xq_part + att_part + 63) / 64 * 64;
    unsigned char *scratch_own = (unsigned char *)aligned_alloc(64, (size_t)nt * per_thread);
    if (!scratch_own) return -2;

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        float *scores = w->scratch + (size_t)tid * LCX_ATT_QB * (size_t)w->n_ctx;
        float *conv = w->kvconv ? w->kvconv + (size_t)tid * 2 * (size_t)w->n_ctx * hd : NULL; /* (2, n_ctx, hd) */
        /* normalised inputs (t, dim): each thread's own in a small step, else one shared copy */
        float *xb = w->xb + (own ? (size_t)tid * (size_t)w->max_batch * dim : 0);
        unsigned char *mine = scratch_own ? scratch_own + (size_t)tid * per_thread : NULL;
        lcx_xq_cache xq;
        for (int i = 0; i < LCX_XQ_SLOTS; i++) {
            xq.buf[i] = mine ? mine + (size_t)i * xq_part : NULL;
            xq.src[i] = NULL;
            xq.type[i] = -1;
        }
        /* a small step's one-token attention rows, merged by this thread: (n_one, q_dim) */
        float *att_mine = own && n_one ? (float *)(mine + (size_t)LCX_XQ_SLOTS * xq_part) : NULL;
        const lcx_one_rows att_own = {att_mine, q_dim};
        const lcx_one_rows *att_one = att_mine ? &att_own : NULL;
        const lcx_layer_share my = lcx_layer_share_of(m, tid, nth);
        const size_t qh0 = my.qh0, qh1 = my.qh1, kh0 = my.kh0, kh1 = my.kh1, b0 = my.b0, b1 = my.b1;
        const size_t c0 = my.c0, c1 = my.c1, d0 = my.d0, d1 = my.d1;

        for (int64_t l = 0; l < m->n_layers; l++) {
            const lcx_layer *L = &m->layers[l];

            /* attention block: xb = norm(x); q, k, v = xb @ wq/wk/wv ᵀ; rope; K/V rows to the caches */
            if (own) {
                lcx_rmsnorm_part(x, L->attn_norm, xb, T, dim, eps, 0, 1);
            } else {
                lcx_rmsnorm_part(x, L->attn_norm, xb, T, dim, eps, tid, nth);
#pragma omp barrier
            }
            lcx_xq_forget(&xq);
            lcx_product_rows(&L->wq, xb, dim, NULL, q, q_dim, qh0 * hd, qh1 * hd, dim, n_tok, n_seq, 0, &xq);
            lcx_rope_heads(q, q_dim, T, qh0, qh1, hd, w->rope_cos, w->rope_sin);
            lcx_product_rows(&L->wk, xb, dim, NULL, kb, kv_dim, kh0 * hd, kh1 * hd, dim, n_tok, n_seq, 0, &xq);
            lcx_rope_heads(kb, kv_dim, T, kh0, kh1, hd, w->rope_cos, w->rope_sin);
            lcx_product_rows(&L->wv, xb, dim, NULL, vb, kv_dim, b0, b1, dim, n_tok, n_seq, 0, &xq);
            for (int64_t i = 0, r = 0; i < n_seq; r += n_tok[i], i++) { /* the rows this thread computed */
                const lcx_state *s = states[i];
                const size_t off = lcx_dtype_bytes(s->kv_dtype, (size_t)l * (size_t)s->n_ctx * kv_dim);
                void *kc = (unsigned char *)s->k_cache + off, *vc = (unsigned char *)s->v_cache + off; /* (n_kv, n_ctx, hd) */
                lcx_store_kv(kc, s->kv_dtype, s->n_ctx, hd, kb, kv_dim, (size_t)r, n_tok[i], pos0[i], kh0 * hd, kh1 * hd);
                lcx_store_kv(vc, s->kv_dtype, s->n_ctx, hd, vb, kv_dim, (size_t)r, n_tok[i], pos0[i], b0, b1);
            }
#pragma omp barrier
            /* attention per sequence: decode steps in parts (merged below), prompt chunks causal */
            size_t rot = 0;
            for (int64_t i = 0, r = 0; i < n_seq; r += n_tok[i], i++) {
                const lcx_state *s = states[i];
                const size_t off = lcx_dtype_bytes(s->kv_dtype, (size_t)l * (size_t)s->n_ctx * kv_dim);
                const lcx_kv_view kv = {(unsigned char *)s->k_cache + off, (unsigned char *)s->v_cache + off,
                                        (size_t)s->n_ctx * hd, hd, s->kv_dtype, conv, (size_t)w->n_ctx * hd};
                const int me = (int)(((size_t)tid + rot) % (size_t)nth); /* deal on from the last sequence */
                if (n_tok[i] == 1)
                    lcx_attention_decode_part(q + (size_t)r * q_dim, &kv, (size_t)pos0[i] + 1, n_heads, n_kv, hd,
                                              scores, s->part, me, nth);
                else
                    lcx_attention_part(q + (size_t)r * q_dim, &kv, att + (size_t)r * q_dim, NULL, -1,
                                       (size_t)n_tok[i], (size_t)pos0[i], n_heads, n_kv, hd, scores, me, nth);
                rot += lcx_att_items(m, n_tok[i], pos0[i]);
            }
#pragma omp barrier
            /* the one-token rows' parts merged: by every thread into its own rows (a small step), or each
             * sequence by one thread into att, then a barrier */
            for (int64_t i = 0, r = 0, k = 0; i < n_seq; r += n_tok[i], i++) {
                if (n_tok[i] != 1) continue;
                if (att_one)
                    lcx_attention_merge(states[i]->part, (size_t)pos0[i] + 1, n_heads, hd, att_mine + (size_t)k * q_dim);
                else if (k % (int64_t)nth == tid)
                    lcx_attention_merge(states[i]->part, (size_t)pos0[i] + 1, n_heads, hd, att + (size_t)r * q_dim);
                k++;
            }
            if (!att_one) {
#pragma omp barrier
            }
            lcx_product_rows(&L->wo, att, q_dim, att_one, x, dim, c0, c1, q_dim, n_tok, n_seq, 1, &xq);
#pragma omp barrier

            /* feed-forward block: xb = norm(x); x += w2(silu(w1 xb) * w3 xb) */
            if (own) {
                lcx_rmsnorm_part(x, L->ffn_norm, xb, T, dim, eps, 0, 1);
            } else {
                lcx_rmsnorm_part(x, L->ffn_norm, xb, T, dim, eps, tid, nth);
#pragma omp barrier
            }
            lcx_xq_forget(&xq);
            lcx_product_rows(&L->w1, xb, dim, NULL, hb, hidden, d0, d1, dim, n_tok, n_seq, 0, &xq);
            lcx_product_rows(&L->w3, xb, dim, NULL, hb2, hidden, d0, d1, dim, n_tok, n_seq, 0, &xq);
            for (size_t i = 0; i < T && d0 < d1; i++) lcx_swiglu_part(hb + i * hidden + d0, hb2 + i * hidden + d0, d1 - d0);
#pragma omp barrier
            lcx_product_rows(&L->w2, hb, hidden, NULL, x, dim, c0, c1, hidden, n_tok, n_seq, 1, &xq);
#pragma omp barrier
        }

        if (logits) {
            if (all_logits) { /* xb = norm(x), all rows */
                if (own) {
                    lcx_rmsnorm_part(x, m->norm, xb, T, dim, eps, 0, 1);
                } else {
                    lcx_rmsnorm_part(x, m->norm, xb, T, dim, eps, tid, nth);
#pragma omp barrier
                }
            } else { /* xb row i = norm(the last row of sequence i) */
                size_t i0 = 0, i1 = (size_t)n_seq;
                if (!own) lcx_split((size_t)n_seq, 1, tid, nth, &i0, &i1);
                for (int64_t i = 0, r = 0; i < n_seq; i++) {
                    r += n_tok[i];
                    if ((size_t)i >= i0 && (size_t)i < i1)
                        lcx_rmsnorm_part(x + (size_t)(r - 1) * dim, m->norm, xb + (size_t)i * dim, 1, dim, eps, 0, 1);
                }
                if (!own) {
#pragma omp barrier
                }
            }
            lcx_xq_forget(&xq);
            size_t v0, v1;
            lcx_split(vocab, 4, tid, nth, &v0, &v1);
            /* all rows: grouped as the sequences' blocks; last rows: one token each, as lcx_forward's logits */
            lcx_product_rows(&m->output, xb, dim, NULL, logits, vocab, v0, v1, dim, all_logits ? n_tok : NULL, n_seq, 0,
                             &xq);
        }
    }
    free(scratch_own);
    return 0;
}
