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
