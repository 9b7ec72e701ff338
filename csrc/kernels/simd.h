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

/* Decode's matrix-vector product, Y[r] (+)= W row r . x for r < rows, S = 4 rows at a time taken a
 * quarter of the range apart (rows i, i + q, i + 2q, i + 3q; q = rows / 4): each of the 4 is one contiguous
 * stream through its quarter, and each load of x serves 4 rows. ROWDOTS(w, stride, x, n, out, S) writes the
 * S dot products of rows w, w + stride, ..: the rows left over run with S = 1, and ROWDOTS must sum a row
 * the same way for either S so a row's result does not depend on how rows were dealt to threads. */
#define LCX_MATVEC_BODY(ROWDOTS, W, ldw, x, Y, rows, n, beta)                                                \
    do {                                                                                                    \
        size_t q_ = (rows) / 4;                                                                             \
        float s_[4];                                                                                        \
        for (size_t i_ = 0; i_ < q_; i_++) {                                                                \
            ROWDOTS((W) + i_ * (ldw), q_ * (ldw), x, n, s_, 4);                                             \
            for (int k_ = 0; k_ < 4; k_++) (Y)[i_ + k_ * q_] = (beta) ? (Y)[i_ + k_ * q_] + s_[k_] : s_[k_]; \
        }                                                                                                   \
        for (size_t r_ = 4 * q_; r_ < (rows); r_++) {                                                       \
            ROWDOTS((W) + r_ * (ldw), 0, x, n, s_, 1);                                                      \
            (Y)[r_] = (beta) ? (Y)[r_] + s_[0] : s_[0];                                                     \
        }                                                                                                   \
    } while (0)

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define LCX_X86 1
#else
#define LCX_X86 0
#endif
/* the x86 kernel files are compiled (they need GCC or clang for their per-function target pragmas) */
#if LCX_X86 && (defined(__GNUC__) || defined(__clang__))
#define LCX_X86_KERNELS 1
#else
#define LCX_X86_KERNELS 0
#endif

#endif
