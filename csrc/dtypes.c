/* The weight types: for each, its layout and the kernels that read it, per instruction set. The forward
 * pass, the ops and the loaders ask this table; none of them names a type. A quantized type (Q8_0, Q4_K,
 * ...) is one more row: its block layout, a to_f32 dequantizer, act_type = the 8-bit activation blocks its
 * dot kernel reads (whose own row gives from_f32, the activation quantizer), gemm_act = that kernel, and
 * gemm NULL if it has no f32-activation product. */
#include <stddef.h>

#include "kernels/kernels.h"
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
};

size_t lcx_dtype_bytes(int dt, size_t n) { return n / lcx_dtypes[dt].block_size * lcx_dtypes[dt].block_bytes; }
