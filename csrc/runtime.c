/* Run-time choice of instruction set (CPU *and* OS support, read once), the kernels it picks from the
 * tables (lcx_kernels_<isa>, lcx_dtypes), and the kernel thread count. */
#include "kernels/kernels.h"
#include "lcx.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if LCX_X86_KERNELS
#include <cpuid.h>

static uint64_t lcx_xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int lcx_detect(int isa) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return 0;
    uint64_t xcr0 = lcx_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0; /* the OS saves SSE + AVX state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (isa == LCX_ISA_AVX2) return avx2 && fma;
    if (isa == LCX_ISA_AVX512) {
        int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        return avx2 && fma && f && bw && vl && (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM state */
    }
    return 0;
}

static int lcx_detect_avx512bf16(void) {
    unsigned a, b, c, d;
    if (!lcx_detect(LCX_ISA_AVX512) || __get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
}
#else
static int lcx_detect(int isa) { (void)isa; return 0; }
static int lcx_detect_avx512bf16(void) { return 0; }
#endif

static const lcx_kernels *const lcx_tables[LCX_ISA_COUNT] = {&lcx_kernels_generic, &lcx_kernels_avx2,
                                                             &lcx_kernels_avx512};
static int lcx_isa = -1;
static int lcx_nthreads = 0;

int lcx_isa_compiled(int isa) {
    return isa >= 0 && isa < LCX_ISA_COUNT && lcx_tables[isa]->rmsnorm_f32 != 0;
}

int lcx_isa_supported(int isa) {
    if (!lcx_isa_compiled(isa)) return 0;
    return isa == LCX_ISA_GENERIC ? 1 : lcx_detect(isa);
}

int lcx_isa_best(void) {
    for (int isa = LCX_ISA_COUNT - 1; isa > 0; isa--)
        if (lcx_isa_supported(isa)) return isa;
    return LCX_ISA_GENERIC;
}

int lcx_set_isa(int isa) {
    if (!lcx_isa_supported(isa)) return -1;
    lcx_isa = isa;
    return 0;
}

int lcx_get_isa(void) {
    if (lcx_isa < 0) lcx_isa = lcx_isa_best();
    return lcx_isa;
}

const lcx_kernels *lcx_table(int isa) { return lcx_isa_compiled(isa) ? lcx_tables[isa] : 0; }
const lcx_kernels *lcx_active(void) { return lcx_tables[lcx_get_isa()]; }

static unsigned lcx_cpu_features(void) {
    static int known = 0;
    static unsigned features = 0;
    if (!known) {
        features = lcx_detect_avx512bf16() ? LCX_CPU_AVX512BF16 : 0;
        known = 1;
    }
    return features;
}

static const lcx_dtype_traits *lcx_dt(int dt) { return dt >= 0 && dt < LCX_DT_COUNT ? &lcx_dtypes[dt] : 0; }

lcx_gemm_fn lcx_gemm_kernel(int dt) { return lcx_dt(dt) ? lcx_dtypes[dt].gemm[lcx_get_isa()] : 0; }

lcx_gemm_act_fn lcx_gemm_act_kernel(int dt) {
    const lcx_dtype_traits *d = lcx_dt(dt);
    if (!d || (d->gemm_act_cpu & ~lcx_cpu_features())) return 0;
    return d->gemm_act[lcx_get_isa()];
}

lcx_to_f32_fn lcx_to_f32_kernel(int dt) {
    const lcx_dtype_traits *d = lcx_dt(dt);
    if (!d) return 0;
    return d->to_f32[lcx_get_isa()] ? d->to_f32[lcx_get_isa()] : d->to_f32[LCX_ISA_GENERIC];
}

lcx_from_f32_fn lcx_from_f32_kernel(int dt) {
    const lcx_dtype_traits *d = lcx_dt(dt);
    if (!d) return 0;
    return d->from_f32[lcx_get_isa()] ? d->from_f32[lcx_get_isa()] : d->from_f32[LCX_ISA_GENERIC];
}

int lcx_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int lcx_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void lcx_set_num_threads(int n) { lcx_nthreads = n < 1 ? 1 : n; }

int lcx_get_num_threads(void) {
    if (lcx_nthreads < 1) lcx_nthreads = lcx_omp_max_threads();
    return lcx_openmp_enabled() ? lcx_nthreads : 1;
}

static int lcx_bf16_prefill = 0, lcx_bf16_decode = 0;

/* whether some instruction set this CPU runs has the bf16-activation product of bf16 weights */
int lcx_avx512bf16_supported(void) {
    const lcx_dtype_traits *d = &lcx_dtypes[LCX_DT_BF16];
    if (d->gemm_act_cpu & ~lcx_cpu_features()) return 0;
    for (int isa = 0; isa < LCX_ISA_COUNT; isa++)
        if (d->gemm_act[isa] && lcx_isa_supported(isa)) return 1;
    return 0;
}

/* the bf16-activation switches: -1 (unchanged) when turning one on that this CPU/build cannot do; in
 * effect only where the active instruction set has the product (a forced generic/avx2 run stays f32) */
static int lcx_bf16_switch(int *flag, int on) {
    if (on && !lcx_avx512bf16_supported()) return -1;
    *flag = on != 0;
    return 0;
}
static int lcx_bf16_active(int flag) { return flag && lcx_gemm_act_kernel(LCX_DT_BF16) != 0; }

int lcx_set_bf16_prefill(int on) { return lcx_bf16_switch(&lcx_bf16_prefill, on); }
int lcx_get_bf16_prefill(void) { return lcx_bf16_active(lcx_bf16_prefill); }
int lcx_set_bf16_decode(int on) { return lcx_bf16_switch(&lcx_bf16_decode, on); }

/* the q8-activation switch for prompt blocks over block-quantized weights (ops/linear_quant.c): every
 * instruction set has it */
static int lcx_q8_prefill = 0;
void lcx_set_q8_prefill(int on) { lcx_q8_prefill = on != 0; }
int lcx_get_q8_prefill(void) { return lcx_q8_prefill; }
int lcx_get_bf16_decode(void) { return lcx_bf16_active(lcx_bf16_decode); }
