/* Which quantized-kernel path runs: the best this CPU and OS support, unless a caller asks for one. On top
 * of lcx_runtime.c's AVX2 / AVX-512 checks the x86 paths need F16C (the f16 scales) and avx512vnni needs
 * AVX512-VNNI (CPUID.(7,0):ECX bit 11). */
#include "lcx.h"
#include "kernels/simd.h"
#include "kernels/quants.h"

#if LCX_X86 && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static int lcx_cpu_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && ((c >> 29) & 1);
}
static int lcx_cpu_avx512vnni(void) {
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (c >> 11) & 1;
}
#else
static int lcx_cpu_f16c(void) { return 0; }
static int lcx_cpu_avx512vnni(void) { return 0; }
#endif


static const lcx_quant_traits *const lcx_quant_tables[LCX_QISA_COUNT] = {lcx_quant_generic, lcx_quant_avx2,
                                                                         lcx_quant_avx512, lcx_quant_avx512vnni};
static const char *const lcx_quant_names[LCX_QISA_COUNT] = {"generic", "avx2", "avx512", "avx512vnni"};

static int lcx_quant_isa_detect(int qisa) {
    switch (qisa) {
    case LCX_QISA_GENERIC: return 1;
    case LCX_QISA_AVX2: return lcx_quant_x86_compiled && lcx_isa_supported(LCX_ISA_AVX2) && lcx_cpu_f16c();
    case LCX_QISA_AVX512: return lcx_quant_x86_compiled && lcx_isa_supported(LCX_ISA_AVX512) && lcx_cpu_f16c();
    case LCX_QISA_AVX512VNNI: return lcx_quant_isa_detect(LCX_QISA_AVX512) && lcx_cpu_avx512vnni();
    default: return 0;
    }
}

/* Asked once per path: CPUID traps to the hypervisor in a VM (measured ~25 us a call on a busy KVM guest,
 * 160 us for the handful one answer took), far too slow to ask per product. A race between threads on the
 * first call only computes the same answer twice. */
int lcx_quant_isa_supported(int qisa) {
    static int known[LCX_QISA_COUNT] = {0}; /* 0 unknown, 1 no, 2 yes */
    if (qisa < 0 || qisa >= LCX_QISA_COUNT) return 0;
    if (!known[qisa]) known[qisa] = lcx_quant_isa_detect(qisa) ? 2 : 1;
    return known[qisa] == 2;
}

int lcx_quant_isa_best(void) {
    static int best = -1; /* the CPU does not change: asked once */
    if (best < 0) {
        int b = LCX_QISA_COUNT - 1;
        while (b > 0 && !lcx_quant_isa_supported(b)) b--;
        best = b;
    }
    return best;
}

const lcx_quant_traits *lcx_quant_table(int qisa) {
    if (qisa < 0) qisa = lcx_quant_isa_best();
    return qisa < LCX_QISA_COUNT && lcx_quant_isa_supported(qisa) ? lcx_quant_tables[qisa] : 0;
}

const char *lcx_quant_isa_name(int qisa) { return qisa >= 0 && qisa < LCX_QISA_COUNT ? lcx_quant_names[qisa] : "?"; }

const lcx_quant_traits *lcx_quant_find(const lcx_quant_traits *t, int ggml_type) {
    for (int i = 0; t && i < LCX_QTYPE_COUNT; i++)
        if (t[i].ggml_type == ggml_type) return &t[i];
    return 0;
}

/* The quantized path that runs under the dispatcher's instruction set isa (what LLAMA_CX_ISA forces): AVX2 ->
 * avx2, AVX-512 -> avx512vnni where the CPU has VNNI, else avx512; generic where the path is not supported
 * (no F16C, or not compiled). Asked once per isa. */
const lcx_quant_traits *lcx_quant_for_isa(int isa) {
    static const lcx_quant_traits *known[LCX_ISA_COUNT];
    if (isa < 0 || isa >= LCX_ISA_COUNT) return lcx_quant_generic;
    if (!known[isa]) {
        int q = isa == LCX_ISA_AVX2 ? LCX_QISA_AVX2 : LCX_QISA_GENERIC;
        if (isa == LCX_ISA_AVX512)
            q = lcx_quant_isa_supported(LCX_QISA_AVX512VNNI) ? LCX_QISA_AVX512VNNI : LCX_QISA_AVX512;
        const lcx_quant_traits *t = lcx_quant_table(q);
        known[isa] = t ? t : lcx_quant_generic;
    }
    return known[isa];
}
