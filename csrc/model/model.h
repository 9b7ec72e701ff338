/* Sizes derived from lcx_model, shared by the forward pass and the run state. */
#ifndef LCX_MODEL_H
#define LCX_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "lcx.h"

static inline int64_t lcx_q_dim(const lcx_model *m) { return m->n_heads * m->head_dim; }
static inline int64_t lcx_kv_dim(const lcx_model *m) { return m->n_kv_heads * m->head_dim; }
static inline size_t lcx_widest(const lcx_model *m) {
    size_t w = (size_t)m->dim;
    if ((size_t)lcx_q_dim(m) > w) w = (size_t)lcx_q_dim(m);
    if ((size_t)m->hidden_dim > w) w = (size_t)m->hidden_dim;
    return w;
}


/* A thread's inputs quantized for the products that read activation blocks (the act_decode rows of lcx_dtypes:
 * the GGUF block types): a slot per activation type keeps the last input it converted, so the products sharing
 * an input (wq/wk/wv, w1/w3) quantize it once per matrix group. Each thread converts its own copy (a few
 * microseconds for 4096 floats): cheaper than one thread converting and a barrier. The forward pass and the
 * batched step forget the slots whenever they rewrite an input they may have converted (after each RMSNorm:
 * the other inputs, att and hb, are each written once between two norms). What a slot holds (one token's
 * input, or a batched step's one-token rows) is its user's business. */
typedef struct {
    unsigned char *buf[LCX_XQ_SLOTS]; /* the converted input(s) */
    const float *src[LCX_XQ_SLOTS];   /* the input converted there; NULL: nothing */
    int type[LCX_XQ_SLOTS];           /* its activation type (a row of lcx_dtypes); -1: unused */
} lcx_xq_cache;

static inline void lcx_xq_forget(lcx_xq_cache *c) {
    for (int i = 0; i < LCX_XQ_SLOTS; i++) c->src[i] = NULL;
}

/* *slot = the slot of activation type `type` (its own, or a free one), now recorded as holding src; 1 when it
 * did not hold src yet: the caller converts src into c->buf[*slot] */
static inline int lcx_xq_slot(lcx_xq_cache *c, const float *src, int type, int *slot) {
    int i = 0;
    while (i < LCX_XQ_SLOTS - 1 && c->type[i] != type && c->type[i] >= 0) i++;
    *slot = i;
    if (c->type[i] == type && c->src[i] == src) return 0;
    c->type[i] = type;
    c->src[i] = src;
    return 1;
}

/* One thread's share of a layer (of nth threads): q heads [qh0, qh1) and k heads [kh0, kh1) (the q and k heads
 * dealt as one list, so RoPE rotates whole heads the thread computed), rows [b0, b1) of wv, [c0, c1) of wo
 * and w2, [d0, d1) of w1 and w3 (rows in blocks of 4, the register tile). The forward pass and the batched
 * step deal the same way. */
typedef struct {
    size_t qh0, qh1, kh0, kh1, b0, b1, c0, c1, d0, d1;
} lcx_layer_share;

static inline lcx_layer_share lcx_layer_share_of(const lcx_model *m, int tid, int nth) {
    const size_t n_heads = (size_t)m->n_heads, n_kv = (size_t)m->n_kv_heads;
    lcx_layer_share s;
    size_t u0, u1;
    lcx_split(n_heads + n_kv, 1, tid, nth, &u0, &u1); /* my heads of [q heads | k heads] */
    s.qh0 = u0 < n_heads ? u0 : n_heads;
    s.qh1 = u1 < n_heads ? u1 : n_heads;
    s.kh0 = u0 > n_heads ? u0 - n_heads : 0;
    s.kh1 = u1 > n_heads ? u1 - n_heads : 0;
    lcx_split((size_t)lcx_kv_dim(m), 4, tid, nth, &s.b0, &s.b1);
    lcx_split((size_t)m->dim, 4, tid, nth, &s.c0, &s.c1);
    lcx_split((size_t)m->hidden_dim, 4, tid, nth, &s.d0, &s.d1);
    return s;
}

/* bytes of n activations in the model's act_type (0 when it has none) */
static inline size_t lcx_act_bytes(const lcx_model *m, size_t n) {
    return m->act_type >= 0 ? lcx_dtype_bytes(m->act_type, n) : 0;
}

/* Bytes of one token's widest input in the largest activation blocks a one-token product quantizes it to (the
 * act_type of any act_decode row of lcx_dtypes), rounded up to whole blocks and to 64 bytes. */
static inline size_t lcx_xq_bytes(const lcx_model *m) {
    size_t w = lcx_widest(m), most = 0;
    for (int d = 0; d < LCX_DT_COUNT; d++) {
        if (!lcx_dtypes[d].act_decode) continue;
        size_t bs = lcx_dtypes[lcx_dtypes[d].act_type].block_size;
        size_t b = lcx_dtype_bytes(lcx_dtypes[d].act_type, (w + bs - 1) / bs * bs);
        if (b > most) most = b;
    }
    return (most + 63) / 64 * 64;
}

#endif
