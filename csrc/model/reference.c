/* The Llama 3 transformer, read top to bottom: one token at a time, one thread, the scalar kernels.
 *
 * This is the learner's read (in the style of llama2.c's run.c), the engine behind `llama-cx trace`, and the
 * oracle the fast forward (csrc/model/forward.c) is held against, stage by stage. Each token goes through
 *   embed -> for each layer: RMSNorm, q/k/v, RoPE, causal GQA attention over the KV cache, wo, residual,
 *   RMSNorm, SwiGLU feed-forward, residual -> RMSNorm -> logits,
 * exactly the order of Meta's llama_models/llama3/model.py (Transformer.forward, TransformerBlock.forward).
 * Shapes in comments are per token. It is slow on purpose: no blocking, no threads, no SIMD. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lcx.h"
#include "model/reference.h"

static const lcx_kernels *const G = &lcx_kernels_generic; /* the scalar kernels, whatever ISA the fast path uses */
#define dot_f32 (lcx_dtypes[LCX_DT_F32].gemm[LCX_ISA_GENERIC]) /* the scalar f32 row product */

/* dst (cols,) f32 <- row `row` of W (rows, cols), converted by its dtype's to_f32 (lcx_dtypes): exact for the
 * float types, the block dequantization for quantized ones. */
static void ref_row(const lcx_mat *W, int64_t cols, int64_t row, float *dst) { lcx_row_to_f32(W, cols, row, dst); }

/* y (d,) = W (d, n) @ x (n,), a row of W at a time widened into wrow (n,) and dotted in index order */
static void ref_matvec(const lcx_mat *W, const float *x, float *y, int64_t d, int64_t n, float *wrow) {
    for (int64_t r = 0; r < d; r++) {
        ref_row(W, n, r, wrow);
        dot_f32(wrow, (size_t)n, x, (size_t)n, y + r, 1, 1, 1, (size_t)n, 0); /* y[r] = wrow . x */
    }
}

/* RoPE on v (n_heads, hd) at position pos: pair (2i, 2i+1) of each head rotated by the angle pos * freqs[i]
 * (Meta's interleaved pairs; freqs already carry the Llama 3.1 scaling, see rope_frequencies in model.py).
 * The angle is a float32 product and cos/sin are rounded to float32, as torch.polar computes them. */
static void ref_rope(float *v, int64_t n_heads, int64_t hd, int64_t pos, const float *freqs) {
    for (int64_t i = 0; i < hd / 2; i++) {
        float angle = (float)pos * freqs[i];
        float c = (float)cos((double)angle), s = (float)sin((double)angle);
        for (int64_t h = 0; h < n_heads; h++) {
            float *p = v + h * hd + 2 * i, a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

/* row pos of a traced stage (T, n) = src (n,), when that stage is kept */
static void keep(float *stage, int64_t pos, const float *src, int64_t n) {
    if (stage) memcpy(stage + pos * n, src, (size_t)n * sizeof(float));
}
static float *layer_stage(float *const *stage, int64_t l) { return stage ? stage[l] : NULL; }

int lcx_forward_reference(const lcx_model *m, const int32_t *tokens, int64_t T, const lcx_trace *tr) {
    const int64_t dim = m->dim, hd = m->head_dim, n_heads = m->n_heads, n_kv = m->n_kv_heads;
    const int64_t q_dim = n_heads * hd, kv_dim = n_kv * hd, hidden = m->hidden_dim, vocab = m->vocab_size;
    const int64_t n_rep = n_heads / n_kv; /* query heads that share one key/value head (GQA) */
    const float eps = m->norm_eps, scale = 1.0f / sqrtf((float)hd);
    if (T < 1) return -1;
    for (int64_t i = 0; i < T; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab) return -1;

    /* run state, as in run.c: activations of one token, the KV cache of T positions, a widened weight row */
    int64_t widest = dim > q_dim ? dim : q_dim;
    widest = widest > hidden ? widest : hidden;
    const size_t kv_floats = (size_t)m->n_layers * (size_t)T * (size_t)kv_dim;
    float *x = calloc((size_t)dim, sizeof(float));           /* (dim,) the residual stream */
    float *xb = calloc((size_t)dim, sizeof(float));          /* (dim,) a normalised x, or a block's output */
    float *q = calloc((size_t)q_dim, sizeof(float));         /* (n_heads, hd) */
    float *att = calloc((size_t)q_dim, sizeof(float));       /* (n_heads, hd) attention output of each head */
    float *hb = calloc((size_t)hidden, sizeof(float));       /* (hidden,) w1 xb, then silu(w1 xb) * w3 xb */
    float *hb2 = calloc((size_t)hidden, sizeof(float));      /* (hidden,) w3 xb */
    float *scores = calloc((size_t)T, sizeof(float));        /* (pos + 1,) one head's attention weights */
    float *wrow = calloc((size_t)widest, sizeof(float));     /* one weight row in f32 */
    float *logits = calloc((size_t)vocab, sizeof(float));    /* (vocab,) */
    float *key_cache = calloc(kv_floats, sizeof(float));     /* (n_layers, T, n_kv, hd) rotated keys */
    float *value_cache = calloc(kv_floats, sizeof(float));   /* (n_layers, T, n_kv, hd) */
    int rc = -2;
    if (!x || !xb || !q || !att || !hb || !hb2 || !scores || !wrow || !logits || !key_cache || !value_cache) goto done;

    for (int64_t pos = 0; pos < T; pos++) {
        /* embedding: x (dim,) = row tokens[pos] of tok_embeddings (vocab, dim) */
        ref_row(&m->tok_embeddings, dim, tokens[pos], x);
        keep(tr->tok_embeddings, pos, x, dim);

        for (int64_t l = 0; l < m->n_layers; l++) {
            const lcx_layer *L = &m->layers[l];
            float *k = key_cache + ((size_t)l * T + pos) * kv_dim;   /* (n_kv, hd) this token's key ... */
            float *v = value_cache + ((size_t)l * T + pos) * kv_dim; /* ... and value, written into the cache */

            /* attention block: xb = attention_norm(x) */
            G->rmsnorm_f32(x, L->attn_norm, xb, (size_t)dim, eps);
            keep(layer_stage(tr->attention_norm, l), pos, xb, dim);
            ref_matvec(&L->wq, xb, q, q_dim, dim, wrow);  /* q (n_heads, hd) = wq (q_dim, dim) @ xb */
            ref_matvec(&L->wk, xb, k, kv_dim, dim, wrow); /* k (n_kv, hd)    = wk (kv_dim, dim) @ xb */
            ref_matvec(&L->wv, xb, v, kv_dim, dim, wrow); /* v (n_kv, hd)    = wv (kv_dim, dim) @ xb */
            ref_rope(q, n_heads, hd, pos, m->rope_freqs);
            ref_rope(k, n_kv, hd, pos, m->rope_freqs);

            /* causal attention: query head h reads kv head h / n_rep at positions 0..pos */
            for (int64_t h = 0; h < n_heads; h++) {
                const float *qh = q + h * hd;
                const int64_t g = h / n_rep;
                for (int64_t t = 0; t <= pos; t++) { /* scores (pos + 1,) = q_h . k_t */
                    const float *kt = key_cache + ((size_t)l * T + t) * kv_dim + g * hd;
                    float dot = 0.0f;
                    for (int64_t i = 0; i < hd; i++) dot += qh[i] * kt[i];
                    scores[t] = dot;
                }
                G->softmax_f32(scores, (size_t)pos + 1, scale); /* softmax(scores / sqrt(hd)) */
                float *out = att + h * hd;                      /* out (hd,) = scores @ v[0..pos] */
                for (int64_t i = 0; i < hd; i++) out[i] = 0.0f;
                for (int64_t t = 0; t <= pos; t++) {
                    const float *vt = value_cache + ((size_t)l * T + t) * kv_dim + g * hd;
                    for (int64_t i = 0; i < hd; i++) out[i] += scores[t] * vt[i];
                }
            }
            ref_matvec(&L->wo, att, xb, dim, q_dim, wrow); /* xb (dim,) = wo (dim, q_dim) @ att */
            keep(layer_stage(tr->attention, l), pos, xb, dim);
            for (int64_t i = 0; i < dim; i++) x[i] += xb[i]; /* residual */

            /* feed-forward block: xb = ffn_norm(x); x += w2 (silu(w1 xb) * w3 xb) */
            G->rmsnorm_f32(x, L->ffn_norm, xb, (size_t)dim, eps);
            keep(layer_stage(tr->ffn_norm, l), pos, xb, dim);
            ref_matvec(&L->w1, xb, hb, hidden, dim, wrow);  /* hb (hidden,)  = w1 (hidden, dim) @ xb */
            ref_matvec(&L->w3, xb, hb2, hidden, dim, wrow); /* hb2 (hidden,) = w3 (hidden, dim) @ xb */
            G->swiglu_f32(hb, hb2, (size_t)hidden);         /* hb = silu(hb) * hb2 */
            ref_matvec(&L->w2, hb, xb, dim, hidden, wrow);  /* xb (dim,) = w2 (dim, hidden) @ hb */
            keep(layer_stage(tr->feed_forward, l), pos, xb, dim);
            for (int64_t i = 0; i < dim; i++) x[i] += xb[i]; /* residual */
            keep(layer_stage(tr->layers, l), pos, x, dim);
        }

        /* xb = norm(x); logits (vocab,) = output (vocab, dim) @ xb */
        G->rmsnorm_f32(x, m->norm, xb, (size_t)dim, eps);
        keep(tr->norm, pos, xb, dim);
        if (tr->output) {
            ref_matvec(&m->output, xb, logits, vocab, dim, wrow);
            keep(tr->output, pos, logits, vocab);
        }
    }
    rc = 0;
done:
    free(x); free(xb); free(q); free(att); free(hb); free(hb2); free(scores); free(wrow); free(logits);
    free(key_cache); free(value_cache);
    return rc;
}
