/* The reference forward pass (csrc/model/reference.c): one token at a time, serial, the scalar kernels, every
 * stage written out for tracing and for holding the fast forward (lcx_forward) against it. */
#ifndef LCX_REFERENCE_H
#define LCX_REFERENCE_H

#include "lcx.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where each stage's output goes, named after the modules of Meta's model.py. Every pointer may be NULL (the
 * stage is not kept); the per-layer ones are arrays of n_layers pointers, each NULL or a buffer. Token i's
 * vector is row i of a buffer: (T, dim) for every stage but `output`, which is (T, vocab). */
typedef struct {
    float *tok_embeddings;   /* (T, dim) the embedding rows */
    float **attention_norm;  /* [n_layers] (T, dim) RMSNorm before attention */
    float **attention;       /* [n_layers] (T, dim) output of wo, before the residual add */
    float **ffn_norm;        /* [n_layers] (T, dim) RMSNorm before the feed-forward */
    float **feed_forward;    /* [n_layers] (T, dim) output of w2, before the residual add */
    float **layers;          /* [n_layers] (T, dim) the residual stream after the layer */
    float *norm;             /* (T, dim) the final RMSNorm */
    float *output;           /* (T, vocab) logits */
} lcx_trace;

/* Run tokens (T,) at positions 0..T-1 through m, writing each stage the trace asks for. The model is read, never
 * written; the run state (KV cache of T positions included) is allocated here and freed before returning.
 * Returns 0, -1 when the arguments are wrong (T < 1, a token out of range), -2 when memory runs out. */
int lcx_forward_reference(const lcx_model *m, const int32_t *tokens, int64_t T, const lcx_trace *trace);

#ifdef __cplusplus
}
#endif
#endif
