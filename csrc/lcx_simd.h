/* Small helpers shared by the kernel files. */
#ifndef LCX_SIMD_H
#define LCX_SIMD_H
#include <stdint.h>
#include <string.h>

/* bf16 is the top 16 bits of an IEEE-754 f32: widening is a shift. */
static inline float lcx_bf16_to_f32_scalar(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round-to-nearest-even f32 -> bf16 (NaN kept quiet), as torch's .to(torch.bfloat16). */
static inline uint16_t lcx_f32_to_bf16_scalar(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* CALL(4) for each group of 4 from i while 4 are left, then one CALL(3), CALL(2) or CALL(1) for the rest,
 * advancing i: every call gets a compile-time count, so the register tile it expands to unrolls. */
#define LCX_BY_4(i, n, CALL)                                                                                \
    do {                                                                                                    \
        for (; (i) + 4 <= (n); (i) += 4) CALL(4);                                                           \
        switch ((n) - (i)) {                                                                                \
        case 3: CALL(3); break;                                                                             \
        case 2: CALL(2); break;                                                                             \
        case 1: CALL(1); break;                                                                             \
        default: break;                                                                                     \
        }                                                                                                   \
        (i) = (n);                                                                                          \
    } while (0)

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define LCX_X86 1
#else
#define LCX_X86 0
#endif

#endif
