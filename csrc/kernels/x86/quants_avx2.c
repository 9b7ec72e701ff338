/* AVX2 row dots of the quantized types (the body is quants_x86.h): integer dot products by vpmaddubsw +
 * vpmaddwd over 32 bytes, f16 scales by F16C. All
 * ten types have a kernel here.
 *
 * Performance notes: see quants_avx512.c (one set of measurements for the three x86 paths).
 */
#include <string.h>

#include "lcx.h"
#include "kernels/simd.h"
#include "kernels/quants.h"

#if LCX_X86 && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h> /* before the target pragma: the intrinsics carry their own targets */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define QISA avx2
#define LCX_QVNNI 0
#define LCX_QZMM 0
#include "quants_x86.h"
#undef QISA
#undef LCX_QVNNI
#undef LCX_QZMM

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else /* not x86 with GCC/clang: the generic twins (lcx_quant_isa_supported says no) */
const lcx_quant_traits lcx_quant_avx2[LCX_QTYPE_COUNT] = LCX_QUANT_TABLE_GENERIC;
#endif
