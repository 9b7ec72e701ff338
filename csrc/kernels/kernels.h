/* Every row kernel, by op and weight type, per instruction set: lcx_<op>_<dtype>_<isa>. The tables that
 * dispatch them are lcx_dtypes (dtypes.c: kernels that depend on the weight type) and lcx_kernels_<isa>
 * (the others, at the end of each kernel file). Contracts: the function pointer types in lcx.h. */
#ifndef LCX_KERNELS_H
#define LCX_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#include "kernels/simd.h"

/* generic/ : the scalar twins, the fallback on every CPU and the oracle of the tests */
void lcx_gemm_f32_generic(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                          size_t rows, size_t t, size_t n, int beta);
void lcx_gemm_bf16_generic(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                           size_t rows, size_t t, size_t n, int beta);
void lcx_to_f32_f32_generic(const void *src, float *dst, size_t n);
void lcx_to_f32_bf16_generic(const void *src, float *dst, size_t n);
void lcx_to_f32_f16_generic(const void *src, float *dst, size_t n);
void lcx_from_f32_bf16_generic(const float *src, void *dst, size_t n);
void lcx_from_f32_f16_generic(const float *src, void *dst, size_t n);

/* x86/ : compiled per function for their instruction set (#pragma GCC target), chosen at run time */
#if LCX_X86_KERNELS
void lcx_gemm_f32_avx2(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                       size_t rows, size_t t, size_t n, int beta);
void lcx_gemm_bf16_avx2(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                        size_t rows, size_t t, size_t n, int beta);
void lcx_to_f32_bf16_avx2(const void *src, float *dst, size_t n);

void lcx_gemm_f32_avx512(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                         size_t rows, size_t t, size_t n, int beta);
void lcx_gemm_bf16_avx512(const void *W, size_t ldw, const float *X, size_t ldx, float *Y, size_t ldy,
                          size_t rows, size_t t, size_t n, int beta);
void lcx_to_f32_bf16_avx512(const void *src, float *dst, size_t n);
void lcx_from_f32_bf16_avx512(const float *src, void *dst, size_t n);
void lcx_to_f32_f16_avx512(const void *src, float *dst, size_t n);
void lcx_from_f32_f16_avx512(const float *src, void *dst, size_t n);

void lcx_gemm_bf16bf16_avx512bf16(const void *W, size_t ldw, const void *X, size_t ldx, float *Y, size_t ldy,
                                  size_t rows, size_t t, size_t n, int beta);
#define LCX_X86_ONLY(f) f
#else
#define LCX_X86_ONLY(f) NULL /* not compiled here (not x86, or a compiler without target pragmas) */
#endif

#endif
