/* The Llama 3 transformer over a block of tokens, top to bottom as in Meta's model.py:
 *   embed -> for each layer: RMSNorm, q/k/v, RoPE, causal GQA attention over the KV cache, out-proj +
 *   residual, RMSNorm, SwiGLU FFN + residual -> RMSNorm -> logits.
 * One call per decoded token (t = 1) or per prompt block (t > 1, matrix-matrix products). */
#include <stddef.h>

#include "lcx.h"
#include "model/model.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void lcx_row_to_f32(const lcx_mat *table, int64_t cols, int64_t row, float *dst) {
    const unsigned char *data = (const unsigned char *)table->data;
    lcx_to_f32_kernel(table->dtype)(data + lcx_dtype_bytes(table->dtype, (size_t)row * cols), dst, (size_t)cols);
}

/* one token's input a (n,) converted to activation type `type` in this thread's slot for it (lcx_xq_cache,
 * model/model.h; a slot holds xq_bytes) */
static const void *lcx_xq_get(lcx_xq_cache *c, const float *a, size_t n, int type) {
    int i;
    if (lcx_xq_slot(c, a, type, &i)) lcx_from_f32_kernel(type)(a, c->buf[i], n);
    return c->buf[i];
}

/* Rows [r0, r1) of the product A (t, n) @ Wᵀ (+)= into Yr0, where row r0's output for token 0 goes (rows
 * follow at +1, tokens at +ldy). In a one-token step (xq non-NULL), a weight type whose one-token products read
 * converted activations (lcx_dtypes: act_decode) gets A quantized through xq; a prompt block (xq NULL) reads
 * them exactly, its last row's logits too; with rounded activations on, A was already converted
 * into `ah` (t, n) of the model's act_type, and a weight type that reads such activations (gemm_act, e.g.
 * AVX512-BF16 for bf16) takes them; otherwise the f32-activation kernels. */
static void lcx_product_to(const lcx_model *m, const lcx_mat *W, const float *A, const void *ah, lcx_xq_cache *xq,
                           float *Yr0, size_t ldy, size_t r0, size_t r1, size_t n, size_t t, int beta) {
    const lcx_dtype_traits *d = &lcx_dtypes[W->dtype];
    const int own_act = xq && t == 1 && d->act_decode;
    const lcx_gemm_act_fn gemm_act =
        own_act || (ah && d->act_type == m->act_type) ? lcx_gemm_act_kernel(W->dtype) : 0;
    if (gemm_act) {
        const unsigned char *w = (const unsigned char *)W->data + lcx_dtype_bytes(W->dtype, r0 * n);
        if (own_act) ah = lcx_xq_get(xq, A, n, d->act_type);
        if (r0 < r1) gemm_act(w, n, ah, n, Yr0, ldy, r1 - r0, t, n, beta);
    } else {
        lcx_linear_rows(W->data, W->dtype, A, n, Yr0, ldy, r0, r1, n, t, beta);
    }
}

/* rows [r0, r1) of Y (t, ldy) (+)= A @ Wᵀ */
static void lcx_product(const lcx_model *m, const lcx_mat *W, const float *A, const void *ah, lcx_xq_cache *xq,
                        float *Y, size_t ldy, size_t r0, size_t r1, size_t n, size_t t, int beta) {
    lcx_product_to(m, W, A, ah, xq, Y + r0, ldy, r0, r1, n, t, beta);
}

/* Rows [r0, r1) of wk or wv (kv_dim rows: n_kv heads of hd) into the head-major cache of one layer,
 * (n_kv, n_ctx, hd) of kv_dtype: head g's rows for positions pos0.. at cache + (g * n_ctx + pos0) * hd. With
 * rope, [r0, r1) are whole heads and each is rotated once written. A cache of another type than f32 gets the
 * rows computed in f32 into tmp (t, hd), rounded on the way in (from_f32 of its row in lcx_dtypes). */
static void lcx_product_kv(const lcx_model *m, const lcx_mat *W, const float *A, const void *ah, lcx_xq_cache *xq,
                           void *cache, int kv_dtype, size_t n_ctx, size_t pos0, size_t hd, size_t r0, size_t r1, size_t n,
                           size_t t, const float *cos_t, const float *sin_t, float *tmp) {
    const lcx_from_f32_fn round_kv = kv_dtype == LCX_DT_F32 ? 0 : lcx_from_f32_kernel(kv_dtype);
    for (size_t g = r0 / hd; g * hd < r1; g++) {
        size_t lo = g * hd > r0 ? g * hd : r0, hi = (g + 1) * hd < r1 ? (g + 1) * hd : r1;
        size_t at = (g * n_ctx + pos0) * hd; /* the head's rows for this block, (t, hd) */
        float *head = round_kv ? tmp : (float *)cache + at;
        lcx_product_to(m, W, A, ah, xq, head + (lo - g * hd), hd, lo, hi, n, t, 0);
        if (cos_t) lcx_rope_heads(head, hd, t, 0, 1, hd, cos_t, sin_t);
        for (size_t i = 0; round_kv && i < t; i++)
            round_kv(head + i * hd + (lo - g * hd),
                     (unsigned char *)cache + lcx_dtype_bytes(kv_dtype, at + i * hd + (lo - g * hd)), hi - lo);
    }
}

/* element i of a buffer of the model's act_type. Today's act types are element types (bf16); a block type
 * (the 8-bit activation blocks of a quantized row) also needs every conversion below to start on a block:
 * lcx_round_part's 64-element split and the per-head / per-row starts are multiples of 32, not of 256. */
static unsigned char *lcx_act_at(const lcx_model *m, unsigned char *buf, size_t i) {
    return buf + lcx_act_bytes(m, i);
}

/* ah (t, n) = a (t, n) converted to the model's act_type by `to_act`, rows split over the threads; NULL
 * (nothing done) when rounded activations are off (to_act NULL). The caller puts a barrier between this and
 * the first use of ah. */
static const void *lcx_round_part(const lcx_model *m, lcx_from_f32_fn to_act, const float *a, unsigned char *ah,
                                  size_t t, size_t n, int tid, int nth) {
    if (!to_act) return NULL;
    size_t i0, i1;
    lcx_split(t * n, 64, tid, nth, &i0, &i1);
    if (i0 < i1) to_act(a + i0, lcx_act_at(m, ah, i0), i1 - i0);
    return ah;
}

/* The act_type copy of a shared input a (t, n) of the next product (NULL when rounded activations are off):
 * for one token each thread rounds all n values into its own buffer `own`, which is cheaper than a barrier;
 * a prompt block's copy `shared` was rounded by the step that produced a, each thread its own part
 * (attention heads, SwiGLU rows), before the barrier that ends that step. */
static const void *lcx_input_act(const lcx_model *m, lcx_from_f32_fn to_act, const float *a, unsigned char *shared,
                                 unsigned char *own, size_t t, size_t n) {
    return t == 1 ? lcx_round_part(m, to_act, a, own, 1, n, 0, 1) : to_act ? shared : NULL;
}

/* The normalised input xn (t, dim) = rmsnorm(x) of the next products, and its act_type copy xnh when rounded
 * activations are on. For one token every thread normalises x into its own buffers (t * dim operations,
 * cheaper than a barrier); for a prompt block the threads split the rows of one shared copy and meet at a
 * barrier. The caller passes the buffers that match (see `shared_norm` in lcx_forward). */
static const void *lcx_norm_input(const lcx_model *m, lcx_from_f32_fn to_act, const float *x, const float *w,
                                  float *xn, unsigned char *xnh, size_t t, size_t dim, float eps, int shared, int tid,
                                  int nth) {
    if (!shared) {
        lcx_rmsnorm_part(x, w, xn, t, dim, eps, 0, 1);
        return lcx_round_part(m, to_act, xn, xnh, t, dim, 0, 1);
    }
    size_t i0, i1;
    lcx_split(t, 1, tid, nth, &i0, &i1); /* the rows lcx_rmsnorm_part gives this thread */
    lcx_rmsnorm_part(x, w, xn, t, dim, eps, tid, nth);
    if (to_act && i0 < i1) to_act(xn + i0 * dim, lcx_act_at(m, xnh, i0 * dim), (i1 - i0) * dim);
#pragma omp barrier
    return to_act ? xnh : NULL;
}

/* One OpenMP region per call: every thread walks the layers, does its share of each step (rows of a
 * matrix, heads of attention), and meets the others at a barrier only where a step needs all of the
 * previous one: 5 per layer for one token. No barrier is needed
 *   - before a product with a normalised input, for one token: each thread normalises x into its own xb
 *     (a prompt block is normalised once, rows split, at the price of a barrier: 7 per layer);
 *   - before RoPE: q and k rows are split between threads in whole heads, so a thread rotates the heads
 *     it has just computed;
 *   - before SwiGLU: a thread gates exactly the rows of w1/w3 it computed.
 * Measured (SmolLM2 decode, 2 threads, old and new alternated in one process): going from 8 barriers per
 * layer to 5 gained 1.5%; dropping every barrier (wrong results, timing only) gained 0.8% more. The two
 * threads share one memory bus, so while one waits the other streams faster: waiting costs little.
 * Prompt blocks (timing each phase per thread, SmolLM2 and the 1B shape): one vCPU ran the same tiles 5-7%
 * faster than the other and waited that long at the barriers. Dealing 64-row blocks and attention items
 * dynamically (omp for schedule(dynamic), costliest items first) measured 0.79-1.04x pp512 / pp128 against
 * this static split, alternating builds: dropped. */
int lcx_forward(const lcx_model *m, lcx_state *s, const int32_t *tokens, int64_t t, int64_t pos0, float *logits,
                int all_logits) {
    if (t < 1 || t > s->max_batch || pos0 < 0 || pos0 + t > s->n_ctx) return -1;
    for (int64_t i = 0; i < t; i++)
        if (tokens[i] < 0 || tokens[i] >= m->vocab_size) return -1;

    const size_t dim = (size_t)m->dim, hd = (size_t)m->head_dim, q_dim = (size_t)lcx_q_dim(m);
    const size_t kv_dim = (size_t)lcx_kv_dim(m), hidden = (size_t)m->hidden_dim, T = (size_t)t;
    const size_t n_heads = (size_t)m->n_heads, n_kv = (size_t)m->n_kv_heads, vocab = (size_t)m->vocab_size;
    float *x = s->x, *q = s->q, *att = s->att, *hb = s->hb, *hb2 = s->hb2;
    const float eps = m->norm_eps;

    for (int64_t i = 0; i < t; i++) {
        lcx_row_to_f32(&m->tok_embeddings, m->dim, tokens[i], x + i * dim); /* x (t, dim) */
        s->pos[i] = pos0 + i;
    }
    lcx_rope_table(s->pos, T, m->rope_freqs, hd / 2, s->rope_cos, s->rope_sin);

    int nt = lcx_get_num_threads();
    if (nt > s->n_scratch_threads) nt = (int)s->n_scratch_threads;
    if (s->max_threads > 0 && nt > s->max_threads) nt = (int)s->max_threads; /* the decode thread tuner's pick */
    if ((size_t)m->dim * (size_t)m->dim * T < (1u << 15)) nt = 1; /* toy sizes: not worth the threads */
    int64_t first = all_logits ? 0 : t - 1;
    /* activations rounded to the model's act_type for this call's products (opt-in, separately for prompt
     * blocks and single tokens: the bf16-activation switches); NULL: f32 activations */
    const int dp = m->act_type >= 0 && (t > 1 ? lcx_get_bf16_prefill() : lcx_get_bf16_decode());
    const lcx_from_f32_fn to_act = dp ? lcx_from_f32_kernel(m->act_type) : 0;
    size_t nrows = (size_t)(t - first);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        float *scores = s->scratch + (size_t)tid * LCX_ATT_QB * (size_t)s->n_ctx;
        /* (2, n_ctx, hd) widened K / V rows of a bf16 / f16 cache, and the new rows before rounding */
        float *conv = s->kvconv ? s->kvconv + (size_t)tid * 2 * (size_t)s->n_ctx * hd : NULL;
        /* normalised inputs: one shared copy for a prompt block, each thread's own for one token */
        const int shared_norm = T > 1 && nth > 1;
        const size_t slot = shared_norm ? 0 : (size_t)tid;
        float *xb = s->xb + slot * (size_t)s->max_batch * dim;                       /* (t, dim) */
        unsigned char *xbh = lcx_act_at(m, s->xbh, slot * (size_t)s->max_batch * dim); /* (t, dim) act_type */
        unsigned char *xh1 = lcx_act_at(m, s->xh1, (size_t)tid * lcx_widest(m)); /* one token's input, this thread's */
        float *att1 = s->att1 + (size_t)tid * q_dim;                   /* one token's attention, this thread's */
        unsigned char *xh = dp && T > 1 ? s->xh : NULL; /* a prompt block's shared input, rounded by its producer */
        lcx_xq_cache xq; /* this thread's quantized one-token inputs (one-token steps only) */
        lcx_xq_cache *step_xq = T == 1 ? &xq : NULL;
        for (int i = 0; i < LCX_XQ_SLOTS; i++) {
            xq.buf[i] = s->xq + ((size_t)tid * LCX_XQ_SLOTS + (size_t)i) * s->xq_bytes;
            xq.src[i] = NULL;
            xq.type[i] = -1;
        }
        const lcx_layer_share my = lcx_layer_share_of(m, tid, nth);
        const size_t qh0 = my.qh0, qh1 = my.qh1, kh0 = my.kh0, kh1 = my.kh1, b0 = my.b0, b1 = my.b1;
        const size_t c0 = my.c0, c1 = my.c1, d0 = my.d0, d1 = my.d1;

        for (int64_t l = 0; l < m->n_layers; l++) {
            const lcx_layer *L = &m->layers[l];
            const size_t off = lcx_dtype_bytes(s->kv_dtype, (size_t)l * (size_t)s->n_ctx * kv_dim);
            void *kc = (unsigned char *)s->k_cache + off; /* (n_kv, n_ctx, hd) of kv_dtype: head-major */
            void *vc = (unsigned char *)s->v_cache + off;
            const lcx_kv_view kv = {kc, vc, (size_t)s->n_ctx * hd, hd, s->kv_dtype, conv, (size_t)s->n_ctx * hd};

            /* attention block: xb = norm(x); q, k, v = xb @ wq/wk/wv ᵀ; rope; attend; x += att @ woᵀ */
            const void *ah = lcx_norm_input(m, to_act, x, L->attn_norm, xb, xbh, T, dim, eps, shared_norm, tid, nth);
            lcx_xq_forget(&xq);
            lcx_product(m, &L->wq, xb, ah, step_xq, q, q_dim, qh0 * hd, qh1 * hd, dim, T, 0);
            lcx_rope_heads(q, q_dim, T, qh0, qh1, hd, s->rope_cos, s->rope_sin);
            lcx_product_kv(m, &L->wk, xb, ah, step_xq, kc, s->kv_dtype, (size_t)s->n_ctx, (size_t)pos0, hd, kh0 * hd, kh1 * hd,
                           dim, T, s->rope_cos, s->rope_sin, conv);
            lcx_product_kv(m, &L->wv, xb, ah, step_xq, vc, s->kv_dtype, (size_t)s->n_ctx, (size_t)pos0, hd, b0, b1, dim, T,
                           NULL, NULL, conv);
#pragma omp barrier
            const float *a = att; /* (t, q_dim) attention output: shared, or this thread's merge of the parts */
            if (T == 1) {
                lcx_attention_decode_part(q, &kv, (size_t)pos0 + 1, n_heads, n_kv, hd, scores, s->part, tid, nth);
#pragma omp barrier
                lcx_attention_merge(s->part, (size_t)pos0 + 1, n_heads, hd, att1);
                a = att1;
            } else {
                lcx_attention_part(q, &kv, att, xh, m->act_type, T, (size_t)pos0, n_heads, n_kv, hd, scores, tid, nth);
#pragma omp barrier
            }
            ah = lcx_input_act(m, to_act, a, xh, xh1, T, q_dim);
            lcx_product(m, &L->wo, a, ah, step_xq, x, dim, c0, c1, q_dim, T, 1);
#pragma omp barrier

            /* feed-forward block: xb = norm(x); x += w2(silu(w1 xb) * w3 xb) */
            ah = lcx_norm_input(m, to_act, x, L->ffn_norm, xb, xbh, T, dim, eps, shared_norm, tid, nth);
            lcx_xq_forget(&xq);
            lcx_product(m, &L->w1, xb, ah, step_xq, hb, hidden, d0, d1, dim, T, 0);
            lcx_product(m, &L->w3, xb, ah, step_xq, hb2, hidden, d0, d1, dim, T, 0);
            for (size_t i = 0; i < T && d0 < d1; i++) {
                lcx_swiglu_part(hb + i * hidden + d0, hb2 + i * hidden + d0, d1 - d0);
                if (xh) to_act(hb + i * hidden + d0, lcx_act_at(m, xh, i * hidden + d0), d1 - d0);
            }
#pragma omp barrier
            ah = lcx_input_act(m, to_act, hb, xh, xh1, T, hidden);
            lcx_product(m, &L->w2, hb, ah, step_xq, x, dim, c0, c1, hidden, T, 1);
#pragma omp barrier
        }

        if (logits) {
            const void *ah = lcx_norm_input(m, to_act, x + (size_t)first * dim, m->norm, xb, xbh, nrows, dim, eps,
                                            shared_norm, tid, nth);
            lcx_xq_forget(&xq);
            size_t v0, v1;
            lcx_split(vocab, 4, tid, nth, &v0, &v1);
            lcx_product(m, &m->output, xb, ah, step_xq, logits, vocab, v0, v1, dim, nrows, 0);
        }
    }
    return 0;
}
