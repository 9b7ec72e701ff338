/* The weight types: for each, its layout and the kernels that read it, per instruction set. The forward
 * pass, the ops and the loaders ask this table; none of them names a type. A quantized type (Q8_0, Q4_K,
 * ...) is one more row: its block layout, a to_f32 dequantizer, act_type = the 8-bit activation blocks its
 * dot kernel reads (whose own row gives from_f32, the activation quantizer), gemm_act = that kernel, and
 * gemm NULL if it has no f32-activation product. */
#include <stddef.h>

#include "kernels/kernels.h"
#include "kernels/quants.h"
#include "lcx.h"

const lcx_dtype_traits lcx_dtypes[LCX_DT_COUNT] = {
    [LCX_DT_F32] = {
        .name = "f32", .block_size = 1, .block_bytes = 4,
        .to_f32 = {[LCX_ISA_GENERIC] = lcx_to_f32_f32_generic},
        .gemm = {[LCX_ISA_GENERIC] = lcx_gemm_f32_generic, [LCX_ISA_AVX2] = LCX_X86_ONLY(lcx_gemm_f32_avx2),
                 [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_gemm_f32_avx512)},
        .act_type = -1,
    },
    [LCX_DT_BF16] = {
        .name = "bf16", .block_size = 1, .block_bytes = 2,
        .to_f32 = {[LCX_ISA_GENERIC] = lcx_to_f32_bf16_generic, [LCX_ISA_AVX2] = LCX_X86_ONLY(lcx_to_f32_bf16_avx2),
                   [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_to_f32_bf16_avx512)},
        .from_f32 = {[LCX_ISA_GENERIC] = lcx_from_f32_bf16_generic,
                     [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_from_f32_bf16_avx512)},
        .gemm = {[LCX_ISA_GENERIC] = lcx_gemm_bf16_generic, [LCX_ISA_AVX2] = LCX_X86_ONLY(lcx_gemm_bf16_avx2),
                 [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_gemm_bf16_avx512)},
        .act_type = LCX_DT_BF16,
        .gemm_act = {[LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_gemm_bf16bf16_avx512bf16)},
        .gemm_act_cpu = LCX_CPU_AVX512BF16,
    },
    /* no product reads f16: f16 matrices are widened to f32 at load (exact); from_f32 rounds the rows of an
     * f16 KV cache */
    [LCX_DT_F16] = {
        .name = "f16", .block_size = 1, .block_bytes = 2,
        .to_f32 = {[LCX_ISA_GENERIC] = lcx_to_f32_f16_generic, [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_to_f32_f16_avx512)},
        .from_f32 = {[LCX_ISA_GENERIC] = lcx_from_f32_f16_generic,
                     [LCX_ISA_AVX512] = LCX_X86_ONLY(lcx_from_f32_f16_avx512)},
        .act_type = -1,
    },
    /* GGUF block types: rows of ggml's blocks, read in place from the file. Prompt blocks (gemm): exact f32
     * panels; one token (gemm_act, act_decode): integer dots over the input quantized once per matrix, into
     * the q8_0 blocks (32-block types) or q8_K blocks (K-quants) of ggml. */
#define LCX_QROW(t, NAME, BS, BB, ACT, ...)                                                                            \
    {                                                                                                            \
        .name = NAME, .block_size = BS, .block_bytes = BB,                                                       \
        .to_f32 = {lcx_to_f32_##t##_generic, lcx_to_f32_##t##_avx2, lcx_to_f32_##t##_avx512},                     \
        .gemm = {lcx_gemm_##t##_generic, lcx_gemm_##t##_avx2, lcx_gemm_##t##_avx512}, .act_type = ACT,             \
        .gemm_act = {lcx_gemm_act_##t##_generic, lcx_gemm_act_##t##_avx2, lcx_gemm_act_##t##_avx512},             \
        .act_decode = 1, __VA_ARGS__                                                                             \
    }
    /* Q8_0's blocks are also the 32-block types' activations: its from_f32 is the q8_0 quantizer */
    [LCX_DT_Q8_0] = LCX_QROW(q8_0, "q8_0", 32, 34, LCX_DT_Q8_0,
                             .from_f32 = {lcx_from_f32_q8_0_generic, lcx_from_f32_q8_0_avx2, lcx_from_f32_q8_0_avx512}),
    [LCX_DT_Q4_0] = LCX_QROW(q4_0, "q4_0", 32, 18, LCX_DT_Q8_0),
    [LCX_DT_Q4_1] = LCX_QROW(q4_1, "q4_1", 32, 20, LCX_DT_Q8_0),
    [LCX_DT_Q5_0] = LCX_QROW(q5_0, "q5_0", 32, 22, LCX_DT_Q8_0),
    [LCX_DT_Q5_1] = LCX_QROW(q5_1, "q5_1", 32, 24, LCX_DT_Q8_0),
    [LCX_DT_Q2_K] = LCX_QROW(q2_k, "q2_k", 256, 84, LCX_DT_Q8_K),
    [LCX_DT_Q3_K] = LCX_QROW(q3_k, "q3_k", 256, 110, LCX_DT_Q8_K),
    [LCX_DT_Q4_K] = LCX_QROW(q4_k, "q4_k", 256, 144, LCX_DT_Q8_K),
    [LCX_DT_Q5_K] = LCX_QROW(q5_k, "q5_k", 256, 176, LCX_DT_Q8_K),
    [LCX_DT_Q6_K] = LCX_QROW(q6_k, "q6_k", 256, 210, LCX_DT_Q8_K),
#undef LCX_QROW
    /* the K-quants' activation blocks (ggml's block_q8_K: f32 scale, 256 int8, 16 sums of 16) */
    [LCX_DT_Q8_K] = {
        .name = "q8_k", .block_size = 256, .block_bytes = 292,
        .from_f32 = {lcx_from_f32_q8_k_generic, lcx_from_f32_q8_k_avx2, lcx_from_f32_q8_k_avx512},
        .act_type = -1,
    },
};

size_t lcx_dtype_bytes(int dt, size_t n) { return n / lcx_dtypes[dt].block_size * lcx_dtypes[dt].block_bytes; }
