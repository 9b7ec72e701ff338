/* AVX-512 row dots of the quantized types, two paths from one body (quants_x86.h):
 *   avx512      AVX-512 F/BW/VL: Q4_K, Q5_K and Q6_K in 512-bit vectors; the other types as on AVX2 (256-bit
 *               vpmaddubsw + vpmaddwd) with 32 vector registers (EVEX encoding);
 *   avx512vnni  + AVX512-VNNI: the 32-block types' integer dots by vpdpbusd (one instruction for
 *               vpmaddubsw + vpmaddwd + vpaddd, no int16 step), the K-quants' scaled sums by vpdpwssd. The
 *               K-quants keep vpmaddubsw: their sub-block scales ride along in the vpmaddwd / vpdpwssd.
 * All ten types have a kernel on both paths; the activation quantizers and dequantizers are the AVX2 ones.
 *
 * Performance notes (benchmarks/quant_dot.py on the 2-vCPU KVM guest of this session: Intel with AVX-512, VNNI,
 * AMX; 2 MiB L2 per core; shared with other jobs at load 5-15, so best of many passes)
 * - One core, weights in L2 (256 x 4096 matrices, a 1 MiB pool, load 5): the compute ceiling, in GB/s of
 *   weight bytes (the Python call included), avx2 / avx512 / avx512vnni, after every change below:
 *     Q8_0 31.2 / 31.2 / 35.1   Q4_0 16.5 / 16.5 / 20.0   Q4_1 14.8 / 14.8 / 16.2   Q5_0 14.2 / 17.1 / 20.2
 *     Q5_1 13.3 / 15.6 / 16.7   Q2_K  7.2 / 10.8 / 10.8   Q3_K  6.3 /  7.9 /  8.1   Q4_K 18.0 / 20.1 / 21.1
 *     Q5_K 15.9 / 19.9 / 20.9   Q6_K 17.7 / 28.3 / 29.9   (the generic twins 1-5; the bf16 decode kernel
 *   with f32 activations 45.2 GB/s = 23 G weights/s, Q4_K's 21.1 GB/s = 37 G weights/s).
 *   So one core is compute-bound at about one core's share of the DRAM bandwidth for Q8_0 / Q6_K / Q4_K /
 *   Q5_K, and somewhat below it for the 4/5-bit 32-blocks (per 32 weights an f16 scale, a broadcast, a
 *   convert and an FMA besides the integer dot).
 * - From DRAM (4096 x 4096 matrices, a 640 MiB pool, best of 4, one run at load 5-6 on 2 vCPUs): the plain
 *   read 10.9 GB/s on one thread; avx512vnni Q4_K 9.6 (88%), Q8_0 10.3 (94%), Q6_K 10.0 (92%), Q5_0 7.1
 *   (65%), Q4_0 6.8 (63%), the bf16 kernel 10.1 (93%); avx2 Q4_K 9.1, Q6_K 7.9. Two threads collapsed
 *   (1-6 GB/s, the read probe 10.3: threads descheduled at the barriers by the neighbours' jobs). Earlier
 *   in the session the read probe gave 3-4 GB/s. Measure `python -m benchmarks.quant_dot` on a quiet
 *   machine before drawing the roofline column.
 * - 512-bit K-quant dots (kept on both AVX-512 paths): Q6_K 17.3 -> 27.6-29.1, Q5_K 15.1 -> 18.0-18.8,
 *   Q4_K 17.4 -> 18.3-19.3 against the same sums in 256-bit vectors.
 * - vpdpbusd (VNNI) for the 32-blocks: +10-25% (Q4_0 13.5 -> 16.2, Q5_0 13.2 -> 15.2); vpdpwssd for the
 *   K-quants' scaled sums: +5%.
 * - Without the ~5 us of each Python call (a C harness, 256 x 4096 in L2, best of 30 x 50), after the f16
 *   and port-5 changes below, avx512vnni / avx2: Q8_0 39.0 / 33.8, Q4_0 22.0 / 17.6, Q4_1 17.6 / 15.6,
 *   Q5_0 21.6 / 15.2, Q5_1 17.6 / 13.8, Q4_K 23.3 / 19.7, Q5_K 22.1 / 16.4 GB/s.
 * - Port 5 (vector moves from general registers, broadcasts, shuffles, inserts) is what the 32-block dots
 *   waited on (timing-only variants: Q4_0 without its f16 scale conversion 28.3 against 17.6). Converting
 *   a block's leading f16 scale straight from memory, splitting the nibbles by a broadcast load and a shift
 *   instead of vinserti128, and (AVX-512) Q5's fifth bits by a mask register: Q4_0 17.6 -> 22.0, Q5_0 16.4 ->
 *   21.6, Q4_1 15.3 -> 17.6, Q5_1 14.7 -> 17.6. Broadcasting d * dx from memory instead (a volatile float):
 *   slower (Q4_0 22.2 -> 20.0), dropped.
 * - Where Q4_K's time went (C harness, timing-only variants that compute wrong sums): without the mins' term
 *   29.4 GB/s, without the scale unpacking 26.9, without the vpermw scale spreading 24.7, all against 21.0.
 *   The per-block scalar work is what costs. Converting d and dmin with one vcvtph2ps (and broadcasting
 *   lanes) instead of two scalar conversions: Q4_K 21.0 -> 23.8, Q5_K 20.4 -> 22.5; the same for Q4_1 /
 *   Q5_1's d and m: 12.8 -> 15.3 / 14.7 (kept; same bits). The scale unpacking in vector registers (no
 *   scalar shuffle, store and reload) on top: 23.8 -> 24.0, dropped. This guest has no PMU to say more.
 *   Not tried yet: rows repacked at load into interleaved blocks (llama.cpp's repack.cpp), which would also
 *   put the scales of several rows side by side; two 32-blocks per 512-bit vector.
 * - dotn, the multi-vector row dot of continuous batching (benchmarks/quant_dot.py --nx 1,2,4,8, one core,
 *   SmolLM2 shapes, one matrix called again and again, best of 10-20, load average 4.5-5.2 on the 2 vCPUs,
 *   so +-10%): speedup = nx x t(dot) / t(dotn over nx vectors), avx512vnni:
 *     Q4_1 576x576 1.97 / 2.65 / 3.18 (nx 2 / 4 / 8), 1536x576 1.50 / 1.99 / 2.39, 49152x576 1.39 / 1.88 / 2.23
 *     Q4_0 576x576 1.51 / 2.35 / 3.17, 1536x576 1.41 / 1.83 / 2.20, 49152x576 1.34 / 1.78 / 1.67
 *     Q5_0 1536x576 1.71 / 2.21 / 2.69   Q8_0 49152x576 1.55 / 2.16 / 2.12
 *     Q4_K 1536x1536 1.55 / 2.01 / 2.26, 4096x1536 1.59 / 2.00 / 2.41   Q5_K 1536x1536 1.59 / 2.21 / 2.70
 *     Q6_K 1536x1536 1.41 / 1.82 / 1.93
 *   avx2 (one block per 256-bit vector, K-quants by a dot per vector): Q5_0 1.30 / 1.63 / 1.81, Q8_0 1.16 /
 *   1.26 / 1.27, Q4_K / Q5_K / Q6_K 1.0. Pools of 40-60 MiB (L3 here) gave noisier, lower numbers (and some
 *   below 1 at this load): measure on a quiet machine before quoting them.
 * - What dotn shares: each weight block is unpacked once per row for the group (nibbles, fifth bits, K-quant
 *   scale unpacking and vpermw spreading, the f16 scales); what each activation block needs for every row
 *   (the offset sums, sum(xq), dx in f32, Q4_K's rearranged halves and block-sum pairs, Q6_K's 32 * pair
 *   sums) is prepared once per call into a scratch (stack up to 48 KiB, else heap). Left per (vector,
 *   block): the integer dot, one scale product, one cvt, one FMA (K-quants: + the mins' term).
 * - First version, one 32-block per 256-bit vector as dot had it: 8 vectors only 1.35x (Q4_0 1536x576, 136.6
 *   us against 8 x 23.0): per (vector, block) dpbusd + mul + cvt + FMA all wait on the two 256-bit FP/int
 *   ports. Two blocks per 512-bit vector (kept): 94.1 us, 2.2x; but the lone dot (nx = 1) got 3-10% slower
 *   for the 32-blocks (Q4_0 1536x576 25.7 -> 27.7-28.5 us, Q4_1 34.8 -> 36.6-37.6, Q8_0 26.1 -> 28.0-28.8,
 *   Q5_0 30.4-31.1 -> 31.6; best of 300 through dot_rows, load 5, two alternating runs): the per-pair weight
 *   work (two scale broadcasts into one vector, a masked broadcast of the second block's nibbles) is not
 *   shared when there is one vector. The K-quants' lone dot is unchanged (Q4_K 61-62 us, Q6_K 65-66).
 *   Not tried: a cheaper pair scale (one vcvtph2ps of [d0 x 8 | d1 x 8]) to win back the lone dot.
 * - lcx_quant_isa_supported caches its CPUID answers: in this guest a CPUID traps to the hypervisor, and the
 *   handful one answer took cost 160 us per call (lcx_isa_supported of lcx_runtime.c: 80 us a call).
 * - Activation quantizers (one 4096-vector, the Python call included): q8_0 28.8 us scalar -> 6.7 (AVX2),
 *   q8_K 13.4 -> 5.2; a SmolLM2 token quantizes ~100 k values, ~0.2 ms with these.
 */
#include <string.h>

#include "lcx.h"
#include "kernels/simd.h"
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
