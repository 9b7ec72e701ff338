/* A context's run state: activation buffers for a block of tokens and the KV cache, sized by one formula
 * (lcx_state_bytes, which Python asks before allocating) and allocated at once. */
#include <stdlib.h>
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
#include "model/model.h"

/* a * b, or SIZE_MAX when it overflows (sizes below are saturating: SIZE_MAX = "cannot exist") */
static size_t lcx_mul(size_t a, size_t b) {
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}
static size_t lcx_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

size_t lcx_state_bytes(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads, int kv_dtype) {
    size_t f = sizeof(float), a = lcx_act_bytes(m, 1); /* bytes per element of the act_type copies */
    size_t act = lcx_mul((size_t)B, (size_t)m->dim + 2 * (size_t)lcx_q_dim(m) + 2 * (size_t)m->hidden_dim + (size_t)m->head_dim);
    size_t priv = lcx_mul(lcx_mul((size_t)n_threads, (size_t)B), (size_t)m->dim); /* xb and xbh, per thread */
    size_t own1 = lcx_mul((size_t)n_threads, lcx_widest(m));                     /* xh1, per thread */
    size_t kv_el = lcx_mul(lcx_mul(2 * (size_t)m->n_layers, (size_t)n_ctx), (size_t)lcx_kv_dim(m));
    size_t kv = kv_el == SIZE_MAX ? SIZE_MAX : lcx_dtype_bytes(kv_dtype, kv_el) / f; /* in floats (rounded down) */
    size_t conv = kv_dtype == LCX_DT_F32 ? 0 : lcx_mul(lcx_mul(2 * (size_t)n_threads, (size_t)n_ctx), (size_t)m->head_dim);
    size_t scratch = lcx_mul(lcx_mul((size_t)n_threads, LCX_ATT_QB), (size_t)n_ctx);
    size_t parts = lcx_add(lcx_mul(lcx_mul(((size_t)n_ctx + LCX_DEC_KC - 1) / LCX_DEC_KC, (size_t)m->n_heads),
                                   (size_t)m->head_dim + 1),
                           lcx_mul((size_t)n_threads, (size_t)lcx_q_dim(m))); /* part, att1 */
    size_t floats = lcx_mul(lcx_add(lcx_add(lcx_add(lcx_add(lcx_add(act, priv), kv), scratch), parts), conv), f);
    size_t xq = lcx_mul(lcx_mul((size_t)n_threads, LCX_XQ_SLOTS), lcx_xq_bytes(m));
    return lcx_add(lcx_add(lcx_add(lcx_add(floats, lcx_mul(priv, a)), lcx_mul(own1, a)),
                           lcx_mul((size_t)B, sizeof(int64_t) + a * lcx_widest(m))), xq);
}

static float *lcx_alloc_f32(size_t n) { return (float *)calloc(n ? n : 1, sizeof(float)); }

/* n zeroed elements of the model's act_type (one byte when it has none: nothing is written there) */
static unsigned char *lcx_alloc_act(const lcx_model *m, size_t n) {
    size_t bytes = lcx_act_bytes(m, n);
    return (unsigned char *)calloc(bytes ? bytes : 1, 1);
}

/* `bytes` zeroed bytes for the KV caches. On Linux: an anonymous mapping of its own with MADV_HUGEPAGE, since a
 * decode step reads every cached row of every layer, one TLB miss per 4 KiB page otherwise (SmolLM2 at
 * position 2000-3800: 1.1-1.2x decode, see ops/attention.c). Elsewhere, under AddressSanitizer (which watches
 * heap blocks only) or if the mapping fails: calloc. */
static void *lcx_alloc_kv(size_t bytes, int *mapped) { /* K and V in one block */
    *mapped = 0;
    bytes = bytes ? bytes : 1;
#ifdef LCX_KV_MMAP
    if (bytes >= ((size_t)2 << 20)) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: refused or unsupported still leaves zeroed memory */
            *mapped = 1;
            return p;
        }
    }
#endif
    return calloc(bytes, 1);
}

static void lcx_free_kv(void *p, size_t bytes, int mapped) {
    if (!p) return;
#ifdef LCX_KV_MMAP
    if (mapped) {
        munmap(p, bytes ? bytes : 1);
        return;
    }
#endif
    (void)bytes;
    (void)mapped;
    free(p);
}

void lcx_state_free(lcx_state *s) {
    if (!s) return;
    free(s->x); free(s->xb); free(s->q); free(s->att); free(s->hb); free(s->hb2);
    lcx_free_kv(s->k_cache, lcx_dtype_bytes(s->kv_dtype, 2 * s->kv_floats), s->kv_mapped); /* V is its second half */
    free(s->kvconv);
    free(s->scratch); free(s->part); free(s->att1); free(s->pos); free(s->rope_cos); free(s->rope_sin);
    free(s->xh); free(s->xbh); free(s->xh1); free(s->kvb); free(s->xq);
    free(s);
}

/* with_kv 0: a batch step's work state (lcx_batch_new): no KV cache (each sequence's is in its own state),
 * kvb (B, 2 * kv_dim) instead for the step's new K / V rows */
static lcx_state *lcx_state_alloc(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads, int kv_dtype,
                                  int with_kv) {
    if (kv_dtype < 0 || kv_dtype >= LCX_DT_COUNT || lcx_dtypes[kv_dtype].block_size != 1 ||
        (kv_dtype != LCX_DT_F32 && !lcx_dtypes[kv_dtype].from_f32[LCX_ISA_GENERIC]))
        return NULL;
    if (n_ctx < 1 || B < 1 || n_threads < 1 || lcx_state_bytes(m, n_ctx, B, n_threads, kv_dtype) == SIZE_MAX)
        return NULL;
    lcx_state *s = (lcx_state *)calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_ctx = n_ctx;
    s->max_batch = B;
    s->n_scratch_threads = n_threads;
    s->max_threads = 0; /* the process-wide count, until llama_cx/_threads.py's decode tuner sets one */
    size_t kv = (size_t)m->n_layers * (size_t)n_ctx * (size_t)lcx_kv_dim(m);
    s->x = lcx_alloc_f32((size_t)B * m->dim);
    s->xb = lcx_alloc_f32((size_t)n_threads * (size_t)B * m->dim);
    s->q = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->att = lcx_alloc_f32((size_t)B * lcx_q_dim(m));
    s->hb = lcx_alloc_f32((size_t)B * m->hidden_dim);
    s->hb2 = lcx_alloc_f32((size_t)B * m->hidden_dim);
    if (!with_kv) kv = 0;
    s->kv_floats = kv;
    s->kv_dtype = kv_dtype;
    s->k_cache = lcx_alloc_kv(lcx_dtype_bytes(kv_dtype, 2 * kv), &s->kv_mapped); /* K, then V (one byte: with_kv 0) */
    s->v_cache = s->k_cache ? (unsigned char *)s->k_cache + lcx_dtype_bytes(kv_dtype, kv) : NULL;
    s->kvconv = kv_dtype == LCX_DT_F32 ? NULL : lcx_alloc_f32(2 * (size_t)n_threads * (size_t)n_ctx * (size_t)m->head_dim);
    s->scratch = lcx_alloc_f32((size_t)n_threads * LCX_ATT_QB * (size_t)n_ctx);
    size_t n_parts = ((size_t)n_ctx + LCX_DEC_KC - 1) / LCX_DEC_KC;
    s->part = lcx_alloc_f32(n_parts * (size_t)m->n_heads * ((size_t)m->head_dim + 1));
    s->att1 = lcx_alloc_f32((size_t)n_threads * (size_t)lcx_q_dim(m));
    s->pos = (int64_t *)calloc((size_t)B, sizeof(int64_t));
    s->rope_cos = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    s->rope_sin = lcx_alloc_f32((size_t)B * (m->head_dim / 2));
    s->xh = lcx_alloc_act(m, (size_t)B * lcx_widest(m));
    s->xbh = lcx_alloc_act(m, (size_t)n_threads * (size_t)B * m->dim);
    s->xh1 = lcx_alloc_act(m, (size_t)n_threads * lcx_widest(m));
    s->kvb = with_kv ? NULL : lcx_alloc_f32((size_t)B * 2 * (size_t)lcx_kv_dim(m));
    s->xq_bytes = lcx_xq_bytes(m);
    s->xq = (unsigned char *)calloc((size_t)n_threads * LCX_XQ_SLOTS * s->xq_bytes + 1, 1);
    if ((!with_kv && !s->kvb) || (kv_dtype != LCX_DT_F32 && !s->kvconv) || !s->x || !s->xb || !s->q || !s->att || !s->hb || !s->hb2 || !s->k_cache || !s->v_cache || !s->scratch ||
        !s->part || !s->att1 ||
        !s->pos || !s->rope_cos || !s->rope_sin || !s->xh || !s->xbh || !s->xh1 || !s->xq) {
        lcx_state_free(s);
        return NULL;
    }
    return s;
}


lcx_state *lcx_state_new(const lcx_model *m, int64_t n_ctx, int64_t B, int64_t n_threads, int kv_dtype) {
    return lcx_state_alloc(m, n_ctx, B, n_threads, kv_dtype, 1);
}

lcx_state *lcx_batch_new(const lcx_model *m, int64_t n_ctx, int64_t max_tokens, int64_t n_threads, int kv_dtype) {
    return lcx_state_alloc(m, n_ctx, max_tokens, n_threads, kv_dtype, 0);
}
