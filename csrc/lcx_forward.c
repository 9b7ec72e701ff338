/* The Llama 3 transformer over a block of tokens, top to bottom as in Meta's model.py:
 *   embed -> for each layer: RMSNorm, q/k/v, RoPE, causal GQA attention over the KV cache, out-proj +
 *   residual, RMSNorm, SwiGLU FFN + residual -> RMSNorm -> logits.
 * One call per decoded token (t = 1) or per prompt block (t > 1, matrix-matrix products). */
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SANITIZE_ADDRESS__) /* GCC */
#define LCX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang */
#define LCX_ASAN 1
#endif
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(LCX_ASAN)
#define LCX_KV_MMAP 1 /* see lcx_alloc_kv */
#endif

#include "lcx.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int64_t lcx_q_dim(const lcx_model *m) { return m->n_heads * m->head_dim; }
static int64_t lcx_kv_dim(const lcx_model *m) { return m->n_kv_heads * m->head_dim; }
static size_t lcx_widest(const lcx_model *m) {
    size_t w = (size_t)m->dim;
    if ((size_t)lcx_q_dim(m) > w) w = (size_t)lcx_q_dim(m);
    if ((size_t)m->hidden_dim > w) w = (size_t)m->hidden_dim;
    return w;
}

/* a * b, or SIZE_MAX when it overflows (sizes below are saturating: SIZE_MAX = "cannot exist") */
static size_t lcx_mul(size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}
static size_t lcx_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

size_t lcx_state_bytes(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads) {
    size_t f = sizeof(float);
    size_t act = lcx_mul((size_t)B, (size_t)m->dim + 2 * (size_t)lcx_q_dim(m) + 2 * (size_t)m->hidden_dim + (size_t)m->head_dim);
    size_t priv = lcx_mul(lcx_mul((size_t)n_threads, (size_t)B), (size_t)m->dim); /* xb and xbh, per thread */
    size_t own1 = lcx_mul((size_t)n_threads, lcx_widest(m));                     /* xh1, per thread */
    size_t kv = lcx_mul(lcx_mul(2 * (size_t)m->n_layers, (size_t)n_ctx), (size_t)lcx_kv_dim(m));
    size_t scratch = lcx_mul(lcx_mul((size_t)n_threads, LCX_ATT_QB), (size_t)n_ctx);
    size_t parts = lcx_add(lcx_mul(lcx_mul(((size_t)n_ctx + LCX_DEC_KC - 1) / LCX_DEC_KC, (size_t)m->n_heads),
                                   (size_t)m->head_dim + 1),
                           lcx_mul((size_t)n_threads, (size_t)lcx_q_dim(m))); /* part, att1 */
    size_t floats = lcx_mul(lcx_add(lcx_add(lcx_add(lcx_add(act, priv), kv), scratch), parts), f);
    return lcx_add(lcx_add(lcx_add(floats, lcx_mul(priv, sizeof(uint16_t))), lcx_mul(own1, sizeof(uint16_t))),
                   lcx_mul((size_t)B, sizeof(int64_t) + 2 * lcx_widest(m)));
}

static float *lcx_alloc_f32(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

/* n zeroed floats for the KV caches. On Linux: an anonymous mapping of its own with MADV_HUGEPAGE, since a
 * decode step reads every cached row of every layer, one TLB miss per 4 KiB page otherwise (SmolLM2 at
 * position 2000-3800: 1.1-1.2x decode, see lcx_ops.c). Elsewhere, under AddressSanitizer (which watches
 * heap blocks only) or if the mapping fails: calloc. */
static float *lcx_alloc_kv(size_t n, int *mapped) { /* n = 2 * kv: K and V in one block */
    *mapped = 0;
#ifdef LCX_KV_MMAP
    size_t bytes = (n ? n : 1) * sizeof(float);
    if (bytes >= ((size_t)2 << 20)) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: refused or unsupported still leaves zeroed memory */
            *mapped = 1;
            return (float *)p;
        }
    }
#endif
    return lcx_alloc_f32(n);
}

static void lcx_free_kv(float *p, size_t n, int mapped) {
    if (!p) return;
#ifdef LCX_KV_MMAP
    if (mapped) {
        munmap(p, (n ? n : 1) * sizeof(float));
        return;
    }
#endif
    (void)n;
    (void)mapped;
    free(p);
}

void lcx_state_free(lcx_state *s) {
    if (!s) return;
    free(s->x); free(s->xb); free(s->q); free(s->att); free(s->hb); free(s->hb2);
    lcx_free_kv(s->k_cache, 2 * s->kv_floats, s->kv_mapped); /* v_cache is its second half */
    free(s->scratch); free(s->part); free(s->att1); free(s->pos); free(s->rope_cos); free(s->rope_sin);
    free(s->xh); free(s->xbh); free(s->xh1);
    free(s);
}

lcx_state *lcx_state_new(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads) {
    if (n_ctx < 1 || B < 1 || n_threads < 1 || lcx_state_bytes(m, n_ctx, B, n_threads) == SIZE_MAX) return NULL;
    lcx_state *s = (lcx_state *)calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_ctx = n_ctx;
    s->max_batch = B;
    s->n_scratch_threads = n_threads;
    size_t kv = (size_t)m->n_layers * (size_t)n_ctx * (size_t)lcx_kv_dim(m);
    s->x = lcx_alloc_f32((size_t)B * m->dim);
    s->xb = lcx_alloc_f32((size_t)n_threads * (size_t)B * m->dim);
    s->q = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->att = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->hb = lcx_alloc_f32((size_t)B * m->hidden_dim);
    s->hb2 = lcx_alloc_f32((size_t)B * m->hidden_dim);
    s->kv_floats = kv;
    s->k_cache = lcx_alloc_kv(2 * kv, &s->kv_mapped); /* K, then V */
    s->v_cache = s->k_cache ? s->k_cache + kv : NULL;
    s->scratch = lcx_alloc_f32((size_t)n_threads * LCX_ATT_QB * (size_t)n_ctx);
    size_t n_parts = ((size_t)n_ctx + LCX_DEC_KC - 1) / LCX_DEC_KC;
    s->part = lcx_alloc_f32(n_parts * (size_t)m->n_heads * ((size_t)m->head_dim + 1));
    s->att1 = lcx_alloc_f32((size_t)n_threads * (size_t)lcx_q_dim(m));
    s->pos = (int64_t *)calloc((size_t)B, sizeof(int64_t));
    s->rope_cos = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    s->rope_sin = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    s->xh = (uint16_t *)calloc((size_t)B * lcx_widest(m), sizeof(uint16_t));
    s->xbh = (uint16_t *)calloc((size_t)n_threads * (size_t)B * m->dim, sizeof(uint16_t));
    s->xh1 = (uint16_t *)calloc((size_t)n_threads * lcx_widest(m), sizeof(uint16_t));
    if (!s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->k_cache || !s->v_cache || !s->scratch ||
        !s->part || !s->att1 ||
        !s->pos || !s->rope_cos || !s->rope_sin || !s->xh || !s->xbh || !s->xh1) {
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

/* Rows [r0, r1) of the product A (t, n) @ Wᵀ (+)= into Yr0, where row r0's output for token 0 goes (rows
 * follow at +1, tokens at +ldy). With bf16 activations on, A was already rounded into `ah` (t, n) bf16 and
 * the AVX512-BF16 kernel runs; otherwise the f32 kernels. */
static void lcx_product_to(const lcx_mat *W, const float *A, const uint16_t *ah, float *Yr0, size_t ldy, size_t r0,
                           size_t r1, size_t n, size_t t, int beta) {
    if (ah && W->dtype == LCX_BF16) {
        if (r0 < r1) lcx_gemm_bf16bf16((const uint16_t *)W->data + r0 * n, n, ah, n, Yr0, ldy, r1 - r0, t, n, beta);
    } else {
        lcx_linear_rows(W->data, W->dtype, A, n, Yr0, ldy, r0, r1, n, t, beta);
    }
}

/* rows [r0, r1) of Y (t, ldy) (+)= A @ Wᵀ */
static void lcx_product(const lcx_mat *W, const float *A, const uint16_t *ah, float *Y, size_t ldy, size_t r0,
                        size_t r1, size_t n, size_t t, int beta) {
    lcx_product_to(W, A, ah, Y + r0, ldy, r0, r1, n, t, beta);
}

/* Rows [r0, r1) of wk or wv (kv_dim rows: n_kv heads of hd) into the head-major cache of one layer,
 * (n_kv, n_ctx, hd): head g's rows for positions pos0.. at cache + (g * n_ctx + pos0) * hd. With rope,
 * [r0, r1) are whole heads and each is rotated once written. */
static void lcx_product_kv(const lcx_mat *W, const float *A, const uint16_t *ah, float *cache, size_t n_ctx,
                           size_t pos0, size_t hd, size_t r0, size_t r1, size_t n, size_t t, const float *cos_t,
                           const float *sin_t) {
    for (size_t g = r0 / hd; g * hd < r1; g++) {
        size_t lo = g * hd > r0 ? g * hd : r0, hi = (g + 1) * hd < r1 ? (g + 1) * hd : r1;
        float *head = cache + (g * n_ctx + pos0) * hd; /* (t, hd) */
        lcx_product_to(W, A, ah, head + (lo - g * hd), hd, lo, hi, n, t, 0);
        if (cos_t) lcx_rope_heads(head, hd, t, 0, 1, hd, cos_t, sin_t);
    }
}

/* ah (t, n) bf16 = round(a (t, n)), rows split over the threads; NULL (nothing done) when bf16
 * activations are off. The caller puts a barrier between this and the first use of ah. `on` implies
 * lcx_avx512bf16_supported(), so lcx_round_bf16 (compiled with the bf16 kernel) is there. */
static const uint16_t *lcx_round_part(const float *a, uint16_t *ah, size_t t, size_t n, int on, int tid, int nth) {
    if (!on) return NULL;
    size_t i0, i1;
    lcx_split(t * n, 64, tid, nth, &i0, &i1);
    if (i0 < i1) lcx_round_bf16(a + i0, ah + i0, i1 - i0);
    return ah;
}

/* The bf16 copy of a shared input a (t, n) of the next product (NULL when bf16 activations are off): for one
 * token each thread rounds all n values into its own buffer `own`, which is cheaper than a barrier; a prompt
 * block's copy `shared` was rounded by the step that produced a, each thread its own part (attention
 * heads, SwiGLU rows), before the barrier that ends that step. */
static const uint16_t *lcx_input_bf16(const float *a, uint16_t *shared, uint16_t *own, size_t t, size_t n, int dp) {
    return t == 1 ? lcx_round_part(a, own, 1, n, dp, 0, 1) : dp ? shared : NULL;
}

/* The normalised input xn (t, dim) = rmsnorm(x) of the next products, and its bf16 copy xnh when bf16
 * activations are on. For one token every thread normalises x into its own buffers (t * dim operations,
 * cheaper than a barrier); for a prompt block the threads split the rows of one shared copy and meet at a
 * barrier. The caller passes the buffers that match (see `shared_norm` in lcx_forward). */
static const uint16_t *lcx_norm_input(const float *x, const float *w, float *xn, uint16_t *xnh, size_t t,
                                      size_t dim, float eps, int dp, int shared, int tid, int nth) {
    if (!shared) {
        lcx_rmsnorm_part(x, w, xn, t, dim, eps, 0, 1);
        return lcx_round_part(xn, xnh, t, dim, dp, 0, 1);
    }
    size_t i0, i1;
    lcx_split(t, 1, tid, nth, &i0, &i1); /* the rows lcx_rmsnorm_part gives this thread */
    lcx_rmsnorm_part(x, w, xn, t, dim, eps, tid, nth);
    if (dp && i0 < i1) lcx_round_bf16(xn + i0 * dim, xnh + i0 * dim, (i1 - i0) * dim);
#pragma omp barrier
    return dp ? xnh : NULL;
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
    if (s->max_threads > 0 && nt > s->max_threads) nt = (int)s->max_threads;
    if ((size_t)m->dim * (size_t)m->dim * T < (1u << 15)) nt = 1; /* toy sizes: not worth the threads */
    int64_t first = all_logits ? 0 : t - 1;
    /* bf16 activations for this call's products (opt-in, separately for prompt blocks and single tokens) */
    const int dp = t > 1 ? lcx_get_bf16_prefill() : lcx_get_bf16_decode();
    size_t nrows = (size_t)(t - first);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        float *scores = s->scratch + (size_t)tid * LCX_ATT_QB * (size_t)s->n_ctx;
        /* normalised inputs: one shared copy for a prompt block, each thread's own for one token */
        const int shared_norm = T > 1 && nth > 1;
        const size_t slot = shared_norm ? 0 : (size_t)tid;
        float *xb = s->xb + slot * (size_t)s->max_batch * dim;      /* (t, dim) */
        uint16_t *xbh = s->xbh + slot * (size_t)s->max_batch * dim; /* (t, dim) bf16 */
        uint16_t *xh1 = s->xh1 + (size_t)tid * lcx_widest(m);             /* one token's bf16 input, this thread's */
        float *att1 = s->att1 + (size_t)tid * q_dim;                      /* one token's attention, this thread's */
        uint16_t *xh = dp && T > 1 ? s->xh : NULL; /* a prompt block's shared bf16 input, rounded by its producer */
        size_t u0, u1, qh0, qh1, kh0, kh1, b0, b1, c0, c1, d0, d1;
        lcx_split(n_heads + n_kv, 1, tid, nth, &u0, &u1); /* my heads of [q heads | k heads] */
        qh0 = u0 < n_heads ? u0 : n_heads;
        qh1 = u1 < n_heads ? u1 : n_heads;
        kh0 = u0 > n_heads ? u0 - n_heads : 0;
        kh1 = u1 > n_heads ? u1 - n_heads : 0;
        lcx_split(kv_dim, 4, tid, nth, &b0, &b1);  /* my rows of wv */
        lcx_split(dim, 4, tid, nth, &c0, &c1);     /* my rows of wo, w2 */
        lcx_split(hidden, 4, tid, nth, &d0, &d1);  /* my rows of w1, w3 */

        for (int64_t l = 0; l < m->n_layers; l++) {
            const lcx_layer *L = &m->layers[l];
            float *kc = s->k_cache + (size_t)l * (size_t)s->n_ctx * kv_dim; /* (n_kv, n_ctx, hd): head-major */
            float *vc = s->v_cache + (size_t)l * (size_t)s->n_ctx * kv_dim;
            const lcx_kv_view kv = {kc, vc, (size_t)s->n_ctx * hd, hd};

            /* attention block: xb = norm(x); q, k, v = xb @ wq/wk/wv ᵀ; rope; attend; x += att @ woᵀ */
            const uint16_t *ah = lcx_norm_input(x, L->attn_norm, xb, xbh, T, dim, eps, dp, shared_norm, tid, nth);
            lcx_product(&L->wq, xb, ah, q, q_dim, qh0 * hd, qh1 * hd, dim, T, 0);
            lcx_rope_heads(q, q_dim, T, qh0, qh1, hd, s->rope_cos, s->rope_sin);
            lcx_product_kv(&L->wk, xb, ah, kc, (size_t)s->n_ctx, (size_t)pos0, hd, kh0 * hd, kh1 * hd, dim, T,
                           s->rope_cos, s->rope_sin);
            lcx_product_kv(&L->wv, xb, ah, vc, (size_t)s->n_ctx, (size_t)pos0, hd, b0, b1, dim, T, NULL, NULL);
#pragma omp barrier
            const float *a = att; /* (t, q_dim) attention output: shared, or this thread's merge of the parts */
            if (T == 1) {
                lcx_attention_decode_part(q, &kv, (size_t)pos0 + 1, n_heads, n_kv, hd, scores, s->part, tid, nth);
#pragma omp barrier
                lcx_attention_merge(s->part, (size_t)pos0 + 1, n_heads, hd, att1);
                a = att1;
            } else {
                lcx_attention_part(q, &kv, att, xh, T, (size_t)pos0, n_heads, n_kv, hd, scores, tid, nth);
#pragma omp barrier
            }
            ah = lcx_input_bf16(a, xh, xh1, T, q_dim, dp);
            lcx_product(&L->wo, a, ah, x, dim, c0, c1, q_dim, T, 1);
#pragma omp barrier

            /* feed-forward block: xb = norm(x); x += w2(silu(w1 xb) * w3 xb) */
            ah = lcx_norm_input(x, L->ffn_norm, xb, xbh, T, dim, eps, dp, shared_norm, tid, nth);
            lcx_product(&L->w1, xb, ah, hb, hidden, d0, d1, dim, T, 0);
            lcx_product(&L->w3, xb, ah, hb2, hidden, d0, d1, dim, T, 0);
            for (size_t i = 0; i < T && d0 < d1; i++) {
                lcx_swiglu_part(hb + i * hidden + d0, hb2 + i * hidden + d0, d1 - d0);
                if (xh) lcx_round_bf16(hb + i * hidden + d0, xh + i * hidden + d0, d1 - d0);
            }
#pragma omp barrier
            ah = lcx_input_bf16(hb, xh, xh1, T, hidden, dp);
            lcx_product(&L->w2, hb, ah, x, dim, c0, c1, hidden, T, 1);
#pragma omp barrier
        }

        if (logits) {
            const uint16_t *ah = lcx_norm_input(x + (size_t)first * dim, m->norm, xb, xbh, nrows, dim, eps, dp,
                                                shared_norm, tid, nth);
            size_t v0, v1;
            lcx_split(vocab, 4, tid, nth, &v0, &v1);
            lcx_product(&m->output, xb, ah, logits, vocab, v0, v1, dim, nrows, 0);
        }
    }
    return 0;
}
