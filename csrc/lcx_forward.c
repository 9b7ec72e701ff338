/* The Llama 3 transformer over a block of tokens, top to bottom as in Meta's model.py:
 *   embed -> for each layer: RMSNorm, q/k/v, RoPE, causal GQA attention over the KV cache, out-proj +
 *   residual, RMSNorm, SwiGLU FFN + residual -> RMSNorm -> logits.
 * One call per decoded token (t = 1) or per prompt block (t > 1, matrix-matrix products). */
#include <stdlib.h>
#include <string.h>

#include "lcx.h"
#include "lcx_simd.h"

static int64_t lcx_q_dim(const lcx_model *m) { return m->n_heads * m->head_dim; }
static int64_t lcx_kv_dim(const lcx_model *m) { return m->n_kv_heads * m->head_dim; }

size_t lcx_state_bytes(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads) {
    size_t f = sizeof(float);
    size_t act = (size_t)B * (2 * (size_t)m->dim + 2 * (size_t)lcx_q_dim(m) + 2 * (size_t)m->hidden_dim + (size_t)m->head_dim);
    size_t kv = 2 * (size_t)m->n_layers * (size_t)n_ctx * (size_t)lcx_kv_dim(m);
    size_t scratch = (size_t)n_threads * (size_t)n_ctx;
    return (act + kv + scratch) * f + (size_t)B * sizeof(int64_t);
}

void lcx_state_free(lcx_state *s) {
    if (!s) return;
    free(s->x); free(s->xb); free(s->q); free(s->att); free(s->hb); free(s->hb2);
    free(s->k_cache); free(s->v_cache); free(s->scratch); free(s->pos); free(s->rope_cos); free(s->rope_sin);
    free(s);
}

static float *lcx_alloc_f32(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

lcx_state *lcx_state_new(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads) {
    if (n_ctx < 1 || B < 1 || n_threads < 1) return NULL;
    lcx_state *s = (lcx_state *)calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_ctx = n_ctx;
    s->max_batch = B;
    s->n_scratch_threads = n_threads;
    size_t kv = (size_t)m->n_layers * (size_t)n_ctx * (size_t)lcx_kv_dim(m);
    s->x = lcx_alloc_f32((size_t)B * m->dim);
    s->xb = lcx_alloc_f32((size_t)B * m->dim);
    s->q = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->att = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->hb = lcx_alloc_f32((size_t)B * m->hidden_dim);
    s->hb2 = lcx_alloc_f32((size_t)B * m->hidden_dim);
    s->k_cache = lcx_alloc_f32(kv);
    s->v_cache = lcx_alloc_f32(kv);
    s->scratch = lcx_alloc_f32((size_t)n_threads * n_ctx);
    s->pos = (int64_t *)calloc((size_t)B, sizeof(int64_t));
    s->rope_cos = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    s->rope_sin = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    if (!s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->k_cache || !s->v_cache || !s->scratch ||
        !s->pos || !s->rope_cos || !s->rope_sin) {
        lcx_state_free(s);
        return NULL;
    }
    return s;
}

void lcx_row_to_f32(const lcx_mat *table, int64_t cols, int64_t row, float *dst) {
    if (table->dtype == LCX_BF16)
        lcx_active()->bf16_to_f32((const uint16_t *)table->data + (size_t)row * cols, dst, (size_t)cols);
    else
        memcpy(dst, (const float *)table->data + (size_t)row * cols, (size_t)cols * sizeof(float));
}

int lcx_forward(const lcx_model *m, lcx_state *s, const int32_t *tokens, int64_t t, int64_t pos0, float *logits,
                int all_logits) {
    if (t < 1 || t > s->max_batch || pos0 < 0 || pos0 + t > s->n_ctx) return -1;
    for (int64_t i = 0; i < t; i++)
        if (tokens[i] < 0 || tokens[i] >= m->vocab_size) return -1;

    const int64_t dim = m->dim, hd = m->head_dim, q_dim = lcx_q_dim(m), kv_dim = lcx_kv_dim(m);
    const int64_t hidden = m->hidden_dim, half = hd / 2;
    float *x = s->x, *xb = s->xb, *q = s->q, *att = s->att, *hb = s->hb, *hb2 = s->hb2;

    for (int64_t i = 0; i < t; i++) {
        lcx_row_to_f32(&m->tok_embeddings, dim, tokens[i], x + i * dim); /* x (t, dim) */
        s->pos[i] = pos0 + i;
    }
    lcx_rope_table(s->pos, (size_t)t, m->rope_freqs, (size_t)half, s->rope_cos, s->rope_sin);

    for (int64_t l = 0; l < m->n_layers; l++) {
        const lcx_layer *L = &m->layers[l];
        float *kc = s->k_cache + (size_t)l * s->n_ctx * kv_dim; /* (n_ctx, kv_dim) */
        float *vc = s->v_cache + (size_t)l * s->n_ctx * kv_dim;
        float *k_new = kc + (size_t)pos0 * kv_dim, *v_new = vc + (size_t)pos0 * kv_dim; /* (t, kv_dim) */

        /* attention block */
        lcx_rmsnorm_f32(x, L->attn_norm, xb, (size_t)t, (size_t)dim, m->norm_eps);
        lcx_linear(L->wq.data, L->wq.dtype, xb, dim, q, q_dim, q_dim, dim, t, 0);       /* q (t, q_dim) */
        lcx_linear(L->wk.data, L->wk.dtype, xb, dim, k_new, kv_dim, kv_dim, dim, t, 0); /* k (t, kv_dim) */
        lcx_linear(L->wv.data, L->wv.dtype, xb, dim, v_new, kv_dim, kv_dim, dim, t, 0); /* v (t, kv_dim) */
        lcx_rope_f32(q, q_dim, t, m->n_heads, hd, s->rope_cos, s->rope_sin);
        lcx_rope_f32(k_new, kv_dim, t, m->n_kv_heads, hd, s->rope_cos, s->rope_sin);
        lcx_attention_f32(q, kc, vc, att, t, pos0, m->n_heads, m->n_kv_heads, hd, s->scratch, s->n_ctx,
                          (int)s->n_scratch_threads);
        lcx_linear(L->wo.data, L->wo.dtype, att, q_dim, x, dim, dim, q_dim, t, 1); /* x += att @ woᵀ */

        /* feed-forward block: x += w2(silu(w1 xb) * w3 xb) */
        lcx_rmsnorm_f32(x, L->ffn_norm, xb, (size_t)t, (size_t)dim, m->norm_eps);
        lcx_linear(L->w1.data, L->w1.dtype, xb, dim, hb, hidden, hidden, dim, t, 0);  /* (t, hidden) */
        lcx_linear(L->w3.data, L->w3.dtype, xb, dim, hb2, hidden, hidden, dim, t, 0); /* (t, hidden) */
        lcx_swiglu_f32(hb, hb2, (size_t)(t * hidden));
        lcx_linear(L->w2.data, L->w2.dtype, hb, hidden, x, dim, dim, hidden, t, 1);
    }

    if (!logits) return 0;
    int64_t first = all_logits ? 0 : t - 1, nrows = t - first;
    lcx_rmsnorm_f32(x + first * dim, m->norm, xb, (size_t)nrows, (size_t)dim, m->norm_eps);
    lcx_linear(m->output.data, m->output.dtype, xb, dim, logits, m->vocab_size, m->vocab_size, dim, nrows, 0);
    return 0;
}
