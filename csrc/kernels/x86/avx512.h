/* Helpers shared by the AVX-512 kernel files (avx512.c, avx512bf16.c). Include it after the file's target
 * pragma: these functions take that file's instruction set. */
#ifndef LCX_X86_AVX512_H
#define LCX_X86_AVX512_H
#include <stddef.h> /* <immintrin.h> comes first, before the target pragma, in the file that includes this */

#define LCX_TT 4 /* tokens per register tile */
#define LCX_TR 4 /* weight rows per register tile */

/* [sum(a), sum(b), sum(c), sum(d)]: four horizontal sums sharing their shuffles */
static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)); /* per 128: a02 b02 a13 b13 */
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE)); /* a b c d */
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Y[0..R) (+)= the R sums of acc, R <= 4, with one shared reduction; R < 4 runs the same tree on zeros, so
 * a row's sum does not depend on the rows beside it in the tile */
static inline __attribute__((always_inline)) void store_sums(float *y, __m512 *acc_col, const int R, int beta) {
    __m512 z = _mm512_setzero_ps();
    __m128 v = hsum4(acc_col[0], R > 1 ? acc_col[1] : z, R > 2 ? acc_col[2] : z, R > 3 ? acc_col[3] : z);
    if (R == 4) {
        if (beta) v = _mm_add_ps(v, _mm_loadu_ps(y));
        _mm_storeu_ps(y, v);
        return;
    }
    float s[4];
    _mm_storeu_ps(s, v);
    for (int r = 0; r < R; r++) y[r] = beta ? y[r] + s[r] : s[r];
}

#endif
