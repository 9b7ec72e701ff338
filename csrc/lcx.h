/* llama_cx compiled core, its public contracts: the per-ISA kernel table, the weight-type table (dtypes.c), the
 * runtime dispatch (runtime.c), the threaded ops (ops/), the model and its run state (model/).
 *
 * Conventions
 *   - Matrices are row-major, W (rows, cols); "W @ x" means y[r] = sum_j W[r][j] * x[j] (a torch Linear).
 *   - Weights are of a type in lcx_dtypes (bf16: uint16_t, the top half of an IEEE f32; f32); activations
 *     are f32, or rounded to a weight type's act_type for the products that read them that way.
 *   - Sizes and offsets are size_t / int64_t; nothing here allocates unless its name says so.
 *   - Kernels named lcx_<op>_<dtype>[_<isa>]; the _generic twin is the scalar fallback and test oracle.
 */
#ifndef LCX_H
#define LCX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- instruction sets ------------------------------------------------------------------------- */
enum { LCX_ISA_GENERIC = 0, LCX_ISA_AVX2 = 1, LCX_ISA_AVX512 = 2, LCX_ISA_COUNT = 3 };

/* Row kernels of one instruction set that do not depend on the weight type (those are in lcx_dtypes);
 * single-threaded, called on a slice of rows by the threaded ops. */
typedef struct {
    const char *name;
    /* out (rows, ldo)[:, :hd] = P (rows, ldp) @ V (ldv)[:, :hd]: row r sums its first n + r terms when
     * causal (probabilities @ values for a block of consecutive queries), its first n otherwise (several
     * heads of one query sharing V) */
    void (*pv_f32)(const float *P, size_t ldp, size_t rows, const float *V, size_t ldv, size_t n, int causal,
                   size_t hd, float *out, size_t ldo);
    /* in place: x (n,) = softmax(scale * x), max-subtracted, f64 sums; returns log(sum(exp(scale * x))) of
     * the input (to merge softmaxes over parts of a row) */
    float (*softmax_f32)(float *x, size_t n, float scale);
    /* in place: a (n,) = silu(a) * b */
    void (*swiglu_f32)(float *a, const float *b, size_t n);
    /* out (n,) = x * rsqrt(mean(x²) + eps) * w for one row: squares summed in f64, the mean rounded to f32
     * (as torch's f32 mean), the scale and products in f32; out may alias x */
    void (*rmsnorm_f32)(const float *x, const float *w, float *out, size_t n, float eps);
} lcx_kernels;

extern const lcx_kernels lcx_kernels_generic;
extern const lcx_kernels lcx_kernels_avx2;
extern const lcx_kernels lcx_kernels_avx512;

/* ---- weight types (dtypes.c) ------------------------------------------------------------------ */
/* Ids of the rows of lcx_dtypes; llama_cx/dtypes.py's c_id column names the same rows. */
typedef enum {
    LCX_DT_F32 = 0, LCX_DT_BF16 = 1, LCX_DT_F16 = 2,
    /* GGUF block types (ggml's layouts, kernels/quants.h), read in place from the file mapping */
    LCX_DT_Q8_0 = 3, LCX_DT_Q4_0 = 4, LCX_DT_Q4_1 = 5, LCX_DT_Q5_0 = 6, LCX_DT_Q5_1 = 7,
    LCX_DT_Q2_K = 8, LCX_DT_Q3_K = 9, LCX_DT_Q4_K = 10, LCX_DT_Q5_K = 11, LCX_DT_Q6_K = 12,
    LCX_DT_Q8_K = 13, /* activation blocks only (the K-quants' act_type): no weight is of this type */
    LCX_DT_COUNT = 14
} lcx_dtype;

/* Y (t, ldy) = beta * Y + X (t, ldx) f32 @ W[0:rows]ᵀ over columns [0, n), W (rows, ldw) of the row's dtype
 * (ldw and n in elements, multiples of its block size). beta is 0 or 1 (1 = accumulate, e.g. the residual).
 * Y must not alias X or W. */
typedef void (*lcx_gemm_fn)(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                            size_t rows, size_t t, size_t n, int beta);
/* the same with the activations Xa (t, ldx) already converted to the row's act_type */
typedef void (*lcx_gemm_act_fn)(const void *W, size_t ldw, const void *Xa, size_t ldx, float *Y, size_t ldy,
                                size_t rows, size_t t, size_t n, int beta);
/* dst (n,) f32 = src (n,) of the row's dtype (n a multiple of its block size) */
typedef void (*lcx_to_f32_fn)(const void *src, float *dst, size_t n);
/* dst (n,) of the row's dtype = src (n,) f32, rounded or quantized (activations for a gemm_act) */
typedef void (*lcx_from_f32_fn)(const float *src, void *dst, size_t n);

/* CPU features a kernel needs beyond its instruction set's (checked by the runtime) */
enum { LCX_CPU_AVX512BF16 = 1 };

/* One weight type: its layout and every kernel that reads or writes it, per instruction set (NULL where an
 * instruction set has none: the runtime then takes the generic one, or, for gemm, widens the weights at load
 * to a type that has one). Adding a type = one row in dtypes.c and its kernels. */
typedef struct {
    const char *name;                              /* as llama_cx/dtypes.py names it */
    size_t block_size;                             /* elements per block */
    size_t block_bytes;                            /* bytes per block */
    lcx_to_f32_fn to_f32[LCX_ISA_COUNT];           /* embedding rows, norms at load */
    lcx_from_f32_fn from_f32[LCX_ISA_COUNT];       /* when it is another row's act_type */
    lcx_gemm_fn gemm[LCX_ISA_COUNT];               /* products with f32 activations */
    /* Products over activations converted to act_type (bf16 for bf16 weights: AVX512-BF16 dot products;
     * the 8-bit blocks of a quantized type's dot kernel). Used when the row has no f32 gemm, or when the
     * bf16-activation switches ask for it. act_type -1: none. */
    int act_type;
    lcx_gemm_act_fn gemm_act[LCX_ISA_COUNT];
    unsigned gemm_act_cpu;                         /* LCX_CPU_* features gemm_act needs */
    /* 1: one-token products take gemm_act by default, over the input quantized once per matrix (the block
     * types: their integer row dots stream 3-5x faster than exact f32 panels, ops/linear_quant.c); 0: only
     * when the bf16-activation switches ask */
    int act_decode;
} lcx_dtype_traits;

extern const lcx_dtype_traits lcx_dtypes[LCX_DT_COUNT];

/* bytes of n elements of dtype dt (n a multiple of its block size) */
size_t lcx_dtype_bytes(int dt, size_t n);

/* ---- runtime: CPU features, dispatch, threads (runtime.c) ------------------------------------- */
int lcx_isa_supported(int isa);        /* CPU *and* OS (XSAVE state) support */
int lcx_isa_best(void);
int lcx_isa_compiled(int isa);         /* 0 when the compiler could not build that path (e.g. aarch64) */
int lcx_set_isa(int isa);              /* 0 ok, -1 unsupported */
int lcx_get_isa(void);
const lcx_kernels *lcx_active(void);
const lcx_kernels *lcx_table(int isa);
/* the kernels of the active instruction set for weight type dt (see lcx_dtype_traits); to_f32 and from_f32
 * fall back to the generic ones, gemm and gemm_act are NULL where there is none (gemm_act also when the CPU
 * lacks a feature it needs) */
lcx_gemm_fn lcx_gemm_kernel(int dt);
lcx_gemm_act_fn lcx_gemm_act_kernel(int dt);
lcx_to_f32_fn lcx_to_f32_kernel(int dt);
lcx_from_f32_fn lcx_from_f32_kernel(int dt);
int lcx_openmp_enabled(void);
int lcx_avx512bf16_supported(void);
/* bf16 activations for prefill products (opt-in: rounds activations); -1 when unsupported */
int lcx_set_bf16_prefill(int on);
int lcx_get_bf16_prefill(void);
/* the same for one-token steps (decode), logits included (opt-in); -1 when unsupported */
int lcx_set_bf16_decode(int on);
/* prompt blocks over GGUF block-quantized weights with their activations quantized to q8 blocks and the
 * integer multi-vector dots (as one-token steps and llama.cpp compute them) instead of exact f32 panels:
 * faster for the K-quants, logits as inexact as llama.cpp's (opt-in) */
void lcx_set_q8_prefill(int on);
int lcx_get_q8_prefill(void);
int lcx_get_bf16_decode(void);
void lcx_set_num_threads(int n);
int lcx_get_num_threads(void);
int lcx_omp_max_threads(void);

/* ---- threaded ops (ops/) ---------------------------------------------------------------------- */
/* The *_part functions do thread tid's share of an op (of nth threads) inside a parallel region the
 * caller owns; the plain names open their own region. */
void lcx_split(size_t n, size_t align, int tid, int nth, size_t *lo, size_t *hi);
/* rows [r0, r1) of a product; Yr0 is where row r0's output for token 0 goes (Y + r0 for a plain Y) */
void lcx_linear_rows(const void *W, int wtype, const float *X, size_t ldx, float *Yr0, size_t ldy, size_t r0,
                     size_t r1, size_t n, size_t t, int beta);
/* Where the cached key / value of position j for kv head g lives: k / v + g * head_stride + j * row_stride
 * (hd elements each). The model's caches are head-major (head_stride = n_ctx * hd, row_stride = hd): a head's
 * rows are contiguous, which one core reads ~2x faster than the same rows 3 heads apart. */
typedef struct {
    const void *k, *v;           /* elements of dtype; strides below in elements */
    size_t head_stride, row_stride;
    /* LCX_DT_F32, or a type (bf16, f16: the KV cache option) whose rows the attention widens into this
     * thread's conv (K rows, then V rows at conv + conv_stride) before the f32 kernels read them; such caches
     * are head-major (row_stride = hd) */
    int dtype;
    float *conv;
    size_t conv_stride;
} lcx_kv_view;
void lcx_rmsnorm_part(const float *x, const float *w, float *out, size_t t, size_t n, float eps, int tid, int nth);
/* RoPE on heads [h0, h1) of t rows of x (t, ldx) (see lcx_rope_f32) */
void lcx_rope_heads(float *x, size_t ldx, size_t t, size_t h0, size_t h1, size_t head_dim, const float *cos_t,
                    const float *sin_t);
void lcx_swiglu_part(float *a, const float *b, size_t n);
/* thread tid's share of lcx_attention_f32; with outh (t, n_heads*hd) of dtype act_type non-NULL (rounded
 * activations on) it also writes the conversion of the rows it computed there */
void lcx_attention_part(const float *q, const lcx_kv_view *kv, float *out, void *outh, int act_type, size_t t,
                        size_t pos0, size_t n_heads, size_t n_kv, size_t hd, float *scores, int tid, int nth);
/* One query's attention (decode) in parts: work items (kv head, up to LCX_ATT_QB of its query heads, up to
 * LCX_DEC_KC keys) dealt round robin, so threads share the keys even with fewer kv heads than threads, and
 * each K / V row loaded serves all query heads of its group. Each item leaves, per query head h and key
 * part c, the softmax-weighted sum of its values and its log-sum-exp at part + (c * n_heads + h) * (hd + 1)
 * (n_keys / LCX_DEC_KC parts, rounded up). lcx_attention_merge then weighs the parts into out (n_heads *
 * hd,), in a fixed order: the result does not depend on the thread count. */
#define LCX_DEC_KC 512
void lcx_attention_decode_part(const float *q, const lcx_kv_view *kv, size_t n_keys, size_t n_heads,
                               size_t n_kv, size_t hd, float *S, float *part, int tid, int nth);
void lcx_attention_merge(const float *part, size_t n_keys, size_t n_heads, size_t hd, float *out);
/* both, in a parallel region of its own: one query q (n_heads * hd,) over n_keys rows of the caches; scratch
 * n_scratch x LCX_ATT_QB x LCX_DEC_KC f32, part as above */
void lcx_attention_decode_f32(const float *q, const float *kc, const float *vc, float *out, size_t n_keys,
                              size_t n_heads, size_t n_kv, size_t hd, float *scratch, float *part, int n_scratch);
/* Y (t, ldy) = beta*Y + X (t, ldx) @ Wᵀ, W (d, n) of dtype wtype (a row of lcx_dtypes with a gemm); rows of W
 * split across threads. */
void lcx_linear(const void *W, int wtype, const float *X, size_t ldx, float *Y, size_t ldy,
                size_t d, size_t n, size_t t, int beta);
/* out (t, n) = x * rsqrt(mean(x²) + eps) * w, per row; out may alias x */
void lcx_rmsnorm_f32(const float *x, const float *w, float *out, size_t t, size_t n, float eps);
/* cos/sin tables (t, half) of the angles (float)pos[r] * freqs[i], rounded as torch's float32 polar does */
void lcx_rope_table(const int64_t *pos, size_t t, const float *freqs, size_t half, float *cos_t, float *sin_t);
/* In-place rotary embedding on t rows of n_heads heads: pairs (2i, 2i+1) of each head rotated by the
 * angle of row r, pair i (Meta's interleaved layout). x (t, ldx), cos_t/sin_t (t, head_dim/2) */
void lcx_rope_f32(float *x, size_t ldx, size_t t, size_t n_heads, size_t head_dim, const float *cos_t,
                  const float *sin_t);
/* a (t, n) = silu(a) * b */
void lcx_swiglu_f32(float *a, const float *b, size_t n);
/* index of the first maximum of x (n,); NaN never wins */
int64_t lcx_argmax_f32(const float *x, size_t n);
/* Causal GQA attention for t query rows at positions pos0 .. pos0+t-1 over a cache holding pos0+t rows.
 * q (t, n_heads*hd), kc/vc (>= pos0+t, n_kv*hd), out (t, n_heads*hd); scratch: n_scratch blocks of
 * scratch_stride >= LCX_ATT_QB * (pos0+t) f32 (one per thread; at most n_scratch threads are used). */
#define LCX_ATT_QB 16 /* queries of one head scored together as a matrix product */
void lcx_attention_f32(const float *q, const float *kc, const float *vc, float *out, size_t t, size_t pos0,
                       size_t n_heads, size_t n_kv, size_t hd, float *scratch, size_t scratch_stride,
                       int n_scratch);
/* softmax in place over n (max-subtracted, f32) */
void lcx_softmax_f32(float *x, size_t n);

/* ---- the model (model/forward.c, model/state.c) ------------------------------------------------ */
typedef struct {
    const void *data;  /* row-major (rows, cols) */
    int dtype;         /* a row of lcx_dtypes that has a gemm (LCX_DT_BF16, LCX_DT_F32) */
} lcx_mat;

typedef struct {
    lcx_mat wq, wk, wv, wo, w1, w2, w3;
    const float *attn_norm, *ffn_norm;  /* (dim,) f32 */
} lcx_layer;

typedef struct {
    int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab_size;
    float norm_eps;
    lcx_mat tok_embeddings;   /* (vocab, dim) */
    lcx_mat output;           /* (vocab, dim); = tok_embeddings when tied */
    const float *norm;        /* (dim,) */
    const float *rope_freqs;  /* (head_dim/2,) per-pair frequency, scaling already applied */
    const lcx_layer *layers;  /* (n_layers,) */
    /* the act_type of its matrices (LCX_DT_BF16 for bf16 weights), into which the bf16-activation switches
     * round the inputs of products; -1 when they have none or disagree (f32 activations throughout) */
    int act_type;
} lcx_model;

/* Run state of one context: activations for up to max_batch tokens and the KV cache. */
typedef struct {
    int64_t n_ctx, max_batch, n_scratch_threads;
    int64_t max_threads;                  /* 0: lcx_get_num_threads(); else at most this many per call (the
                                           * decode thread tuner in llama_cx/_threads.py sets it per step) */
    float *x, *q, *att, *hb, *hb2;        /* (B, dim) (B, q_dim) (B, q_dim) (B, hidden) (B, hidden) */
    float *xb;                            /* (n_scratch_threads, B, dim) each thread's normalised x */
    void *k_cache, *v_cache;              /* (n_layers, n_kv, n_ctx, hd) each of kv_dtype: head-major; V after K */
    size_t kv_floats;                     /* elements in each of them */
    int kv_dtype;                         /* LCX_DT_F32, BF16 or F16: rows rounded on write, widened to read */
    float *kvconv;                        /* (n_scratch_threads, 2, n_ctx, hd) f32 for the widened rows (not f32) */
    int kv_mapped;                        /* 1: its own mapping (huge-page hint), 0: calloc */
    float *scratch;                       /* (n_scratch_threads, n_ctx) attention scores */
    float *part;                          /* (n_ctx / LCX_DEC_KC rounded up, n_heads, hd + 1) decode attention parts */
    float *att1;                          /* (n_scratch_threads, q_dim) each thread's merged decode attention */
    int64_t *pos;                         /* (B,) */
    float *rope_cos, *rope_sin;           /* (B, head_dim/2) */
    /* copies in the model's act_type (empty when it has none) */
    unsigned char *xh;                    /* (B, max(dim, q_dim, hidden)) a product's input */
    unsigned char *xbh;                   /* (n_scratch_threads, B, dim) each thread's xb */
    unsigned char *xh1;                   /* (n_scratch_threads, max(dim, q_dim, hidden)) one token's input */
    float *kvb;                           /* (B, 2 * kv_dim) a batch step's new K | V rows (lcx_batch_new only) */
    /* one token's input quantized for the block types' products (act_decode rows of lcx_dtypes): per thread,
     * LCX_XQ_SLOTS slots of xq_bytes, one per activation type in use (q8_0, q8_K) */
    unsigned char *xq;                    /* (n_scratch_threads, LCX_XQ_SLOTS, xq_bytes) */
    size_t xq_bytes;
} lcx_state;
#define LCX_XQ_SLOTS 2

/* kv_dtype: the KV cache's element type, a row of lcx_dtypes with from_f32 and to_f32 (f32, bf16, f16) */
size_t lcx_state_bytes(const lcx_model *m, int64_t n_ctx, int64_t max_batch, int64_t n_threads, int kv_dtype);
lcx_state *lcx_state_new(const lcx_model *m, int64_t n_ctx, int64_t max_batch, int64_t n_threads, int kv_dtype);
void lcx_state_free(lcx_state *s);

/* Run t (1 <= t <= max_batch) tokens at positions pos0.. through the model, writing their K/V into the
 * cache. logits: (t, vocab) when all_logits, else (vocab,) for the last token; NULL = no logits.
 * Returns 0, or -1 when the arguments do not fit the state (nothing is written then). */
int lcx_forward(const lcx_model *m, lcx_state *s, const int32_t *tokens, int64_t t, int64_t pos0,
                float *logits, int all_logits);

/* Continuous batching (model/batch.c): one step over several sequences, each with its own state (KV cache,
 * positions), every weight matrix read once for all of the step's rows.
 *
 * The work state of such steps: activations for up to max_tokens rows in all, attention scratch for sequences
 * of up to n_ctx positions; no KV cache. kv_dtype other than LCX_DT_F32: it can run sequences whose caches are
 * not f32 (it holds the widening scratch). */
lcx_state *lcx_batch_new(const lcx_model *m, int64_t n_ctx, int64_t max_tokens, int64_t n_threads, int kv_dtype);
/* Sequence i (of n_seq) appends n_tok[i] >= 1 tokens at positions pos0[i].. to the KV cache of states[i]
 * (distinct states of this model); tokens (sum n_tok,) are the sequences' tokens one after the other. Rows go
 * through each matrix together (one product of sum n_tok rows); attention is per sequence, causal within its
 * chunk. logits (n_seq, vocab): each sequence's last row; with all_logits (sum n_tok, vocab), every row; NULL:
 * none. The activation buffers of `work` are used, those of states[] are not. A sequence's logits and cache
 * rows are the bits lcx_forward gives it alone for the same blocks (f32 activations: the bf16-activation
 * switches do not apply). Returns 0, -1 when the arguments do not fit, -2 when the step's scratch cannot be
 * allocated (nothing is written into states[] or logits then). */
int lcx_forward_batch(const lcx_model *m, lcx_state *work, lcx_state *const *states, const int32_t *tokens,
                      const int64_t *n_tok, const int64_t *pos0, int64_t n_seq, float *logits, int all_logits);

/* dst (n,) f32 <- one row of an embedding table of any dtype */
void lcx_row_to_f32(const lcx_mat *table, int64_t cols, int64_t row, float *dst);

#ifdef __cplusplus
}
#endif
#endif
