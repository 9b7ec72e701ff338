/* AVX-512 row dots of the quantized types, two paths from one body (quants_x86.h):
 *   avx512      AVX-512 F/BW/VL: the AVX2 instructions with 32 vector registers (EVEX encoding);
 *   avx512vnni  + AVX512-VNNI: the 32-block types' integer dots by vpdpbusd (one instruction for
 *               vpmaddubsw + vpmaddwd + vpaddd, no int16 step). The K-quants keep vpmaddubsw: their
 *               sub-block scales ride along in the vpmaddwd for free.
 * All ten types have a kernel on both paths.
 *
 * Performance notes
 * - (to be filled in from benchmarks/quant_dot.py)
 */
#include <string.h>

#include "lcx.h"
#include "lcx_simd.h"
#include "kernels/quants.h"

#if LCX_X86 && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h> /* before the target pragma: the intrinsics carry their own targets */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#endif
#define QISA avx512
#define LCX_QVNNI 0
#define LCX_QZMM 1
#include "quants_x86.h"
#undef QISA
#undef LCX_QVNNI
#undef LCX_QZMM
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif
#define QISA avx512vnni
#define LCX_QVNNI 1
#define LCX_QZMM 1
#include "quants_x86.h"
#undef QISA
#undef LCX_QVNNI
#undef LCX_QZMM
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
const int lcx_quant_x86_compiled = 1;

#else /* not x86 with GCC/clang: the generic twins (lcx_quant_isa_supported says no) */
const lcx_quant_traits lcx_quant_avx512[LCX_QTYPE_COUNT] = LCX_QUANT_TABLE_GENERIC;
const lcx_quant_traits lcx_quant_avx512vnni[LCX_QTYPE_COUNT] = LCX_QUANT_TABLE_GENERIC;
const int lcx_quant_x86_compiled = 0;
#endif
