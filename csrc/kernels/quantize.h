/* Offline quantizers: f32 rows -> ggml block formats, for `llama-cx quantize` (generic/quantize.c).
 *
 * Each type follows ggml's reference quantizer (ggml-quants.c quantize_row_<type>_ref, which is also what
 * llama.cpp's quantize tool runs when it has no importance matrix), block layout included, so the files we
 * write hold the bytes llama.cpp would have written. Scalar code: it runs once per model, not per token. */
#ifndef LCX_QUANTIZE_H
#define LCX_QUANTIZE_H
#include <stddef.h>
#include <stdint.h>

/* ggml_type ids (ggml.h) of the types lcx_quantize_rows writes */
enum {
    LCX_GGML_Q4_0 = 2, LCX_GGML_Q4_1 = 3, LCX_GGML_Q5_0 = 6, LCX_GGML_Q5_1 = 7, LCX_GGML_Q8_0 = 8,
    LCX_GGML_Q2_K = 10, LCX_GGML_Q3_K = 11, LCX_GGML_Q4_K = 12, LCX_GGML_Q5_K = 13, LCX_GGML_Q6_K = 14,
};

/* Bytes of one row of n_per_row elements of ggml type `type`; 0 when the type is not one we write or
 * n_per_row is not a multiple of its block size. */
size_t lcx_quant_row_bytes(int type, int64_t n_per_row);

/* src (nrows, n_per_row) f32 row-major -> dst (nrows, lcx_quant_row_bytes) blocks of `type`; rows split
 * across threads (each row is independent, so any split gives the same bytes); dst must not alias src.
 * Returns the bytes written, 0 for a type or row length lcx_quant_row_bytes refuses. */
size_t lcx_quantize_rows(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row);

#endif
