/* The x86 kernels of the quantized types (row dots, activation quantizers, dequantizers), one body compiled
 * per instruction-set path: the including file sets the target pragma, QISA (the name suffix), LCX_QVNNI
 * (1: integer dots by AVX512-VNNI vpdpbusd / vpdpwssd, 0: vpmaddubsw + vpmaddwd) and LCX_QZMM (1: the
 * 512-bit K-quant dots), then includes this file. Everything else is 256-bit (see the performance notes in
 * quants_avx512.c). Not a public header.
 *
 * Rows are dealt by LCX_MATVEC_BODY (kernels/simd.h): 4 rows a quarter of the range apart at once, each one
 * contiguous stream, and each activation block loaded (and its sums formed) once for the 4 rows. A row's
 * arithmetic is the same whether it runs among 4 or alone, so results do not depend on the thread count.
 *
 * Saturation: vpmaddubsw adds two u8 x s8 products into int16. The activations are |xq| <= 127 (ggml's
 * quantizers never give -128), so with weights as unsigned bytes <= 128 a pair is at most 2 * 128 * 127 =
 * 32512: Q8_0 goes through the sign trick (|w| <= 128, x with w's sign); the other types are unsigned
 * 0..63 and subtract their offset (8, 16, 32) as offset * sum(xq), formed once per activation block.
 */
#define QCAT2(a, b) a##_##b
#define QCAT(a, b) QCAT2(a, b)
#define QF(name) QCAT(name, QISA)

static inline float QF(hsum8)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float QF(hsum4)(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* acc (8 x i32) + the sums of the 4 products u8 x s8 in each 32-bit lane */
static inline __m256i QF(dot_acc)(__m256i acc, __m256i u, __m256i s) {
#if LCX_QVNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

static inline float QF(h2f)(const uint8_t *p) { /* an f16 field, unaligned */
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}
/* The same for a field with at least 6 more bytes after it (a block's leading scale): vcvtph2ps straight
 * from memory, no general-register -> vector move. Port 5 (moves, broadcasts, shuffles) is what the 32-block
 * dots wait on: this, the nibble split by a broadcast load and a shift instead of vinserti128, and Q5's
 * fifth bits by a mask register gave Q4_0 17.6 -> 22.2 GB/s, Q5_0 16.4 -> 22.0, Q4_1 15.3 -> 17.7, Q5_1
 * 14.7 -> 18.0 (avx512vnni, C harness, in L2). */
static inline float QF(h2f_lead)(const uint8_t *p) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)p)));
}

/* 32 nibbles of 16 bytes as bytes 0..15 (low nibbles = weights 0..15) and 16..31 (high = weights 16..31) */
static inline __m256i QF(nibbles32)(const uint8_t *p) {
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(b, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
}
/* byte j = 16 where bit j of the little-endian uint32 at p is set, else 0 (ggml's bytes_from_bits_32) */
static inline __m256i QF(bits16_32)(const uint8_t *p) {
#if LCX_QZMM /* AVX-512BW: the 32 bits are a byte mask */
    __mmask32 k;
    memcpy(&k, p, 4);
    return _mm256_maskz_mov_epi8(k, _mm256_set1_epi8(16));
#else
    uint32_t u;
    memcpy(&u, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_and_si256(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(16));
#endif
}

/* ---- activation quantizers: byte for byte the scalar twins (ggml's reference) ------------------------------ */
/* 32 int32 in 4 vectors -> 32 int8 in order (values already in [-127, 127]) */
static inline __m256i QF(pack32)(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i e = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(e, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline float QF(hmax8)(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* q = roundf(x * id) (halves away from zero): trunc, plus the sign where |x * id - trunc| >= 1/2 (exact) */
static void QF(lcx_quant_act_q8_0)(const float *x, void *xq, size_t n) {
    lcx_block_q8_0 *y = (lcx_block_q8_0 *)xq;
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (size_t b = 0; b < n / 32; b++, x += 32) {
        __m256 v[4], mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[k]));
        }
        const float amax = QF(hmax8)(mx), d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = lcx_f32_to_f16_scalar(d);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 p = _mm256_mul_ps(v[k], _mm256_set1_ps(id));
            LCX_ROUNDED(p);
            const __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(p, t)), half, _CMP_GE_OQ);
            const __m256 step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(p, sign), one));
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, step));
        }
        _mm256_storeu_si256((__m256i *)y[b].qs, QF(pack32)(q[0], q[1], q[2], q[3]));
    }
}

/* q = min(127, round-half-even(x * iscale)) (vcvtps2dq under the default rounding mode), iscale = -127 / the
 * first value of largest magnitude; block sums of 16 */
static void QF(lcx_quant_act_q8_K)(const float *x, void *xq, size_t n) {
    lcx_block_q8_K *y = (lcx_block_q8_K *)xq;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t b = 0; b < n / 256; b++, x += 256) {
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
        const float amax = QF(hmax8)(mx);
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        int first = 0;
        for (int k = 0; k < 32; k++) {
            int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (m) {
                first = 8 * k + __builtin_ctz((unsigned)m);
                break;
            }
        }
        const float iscale = -127.0f / x[first];
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i lim = _mm256_set1_epi32(127);
        for (int c = 0; c < 8; c++) { /* 32 values: two block sums */
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * c + 8 * k), vs)), lim);
            const __m256i bytes = QF(pack32)(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[b].qs + 32 * c), bytes);
            int32_t quads[8]; /* sums of 4 consecutive values */
            _mm256_storeu_si256((__m256i *)quads, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes), _mm256_set1_epi16(1)));
            y[b].bsums[2 * c] = (int16_t)(quads[0] + quads[1] + quads[2] + quads[3]);
            y[b].bsums[2 * c + 1] = (int16_t)(quads[4] + quads[5] + quads[6] + quads[7]);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ---- dequantizers (prompt-block panels): bit for bit the scalar twins -------------------------------------
 * Every weight is dl * q - ml (or + m) with q an integer, dl = d (* scale), ml = dmin * min formed in f32 in
 * the scalar twin's order; dl * q is exact (at most 11 + 8 + 6 bits) but for Q6_K, whose (d * scale) * q
 * is rounded once here as there, so fusing the subtraction into an FMA cannot change a result. */
/* dst[0..16) = dl * q - ml (ADD: dl * q + ml, Q4_1 / Q5_1's form, which differs from "- (-m)" on signed
 * zeros) for 16 signed bytes q */
static inline __attribute__((always_inline)) void QF(widen16)(float *dst, __m128i q, float dl, float ml, const int ADD) {
    const __m256 vd = _mm256_set1_ps(dl), vm = _mm256_set1_ps(ml);
    const __m256 f0 = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    const __m256 f1 = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8))));
    _mm256_storeu_ps(dst, ADD ? _mm256_add_ps(f0, vm) : _mm256_sub_ps(f0, vm));
    _mm256_storeu_ps(dst + 8, ADD ? _mm256_add_ps(f1, vm) : _mm256_sub_ps(f1, vm));
}
/* 32 signed bytes, one (dl, ml) for each half */
static inline __attribute__((always_inline)) void QF(widen32)(float *dst, __m256i q, float dl0, float ml0, float dl1,
                                                              float ml1, const int ADD) {
    QF(widen16)(dst, _mm256_castsi256_si128(q), dl0, ml0, ADD);
    QF(widen16)(dst + 16, _mm256_extracti128_si256(q, 1), dl1, ml1, ADD);
}

#define LCX_Q32_DEQUANT(T, BYTES, EXPAND, OFF, ADD)                                                            \
    static void QF(lcx_dequant_##T)(const void *src, float *dst, size_t n) {                                   \
        const uint8_t *b = (const uint8_t *)src;                                                               \
        for (size_t i = 0; i < n / 32; i++, b += (BYTES), dst += 32) {                                         \
            float d, m;                                                                                        \
            const __m256i q = _mm256_sub_epi8(EXPAND(b, &d, &m), _mm256_set1_epi8(OFF));                       \
            QF(widen32)(dst, q, d, m, d, m, ADD); /* m = 0 without a min: x - 0 = x, -0 included */           \
        }                                                                                                      \
    }
/* ---- the multi-vector driver (dotn; dot is dotn with nx = 1) ---------------------------------------------
 * A type's dotn is three parts: prep_T (once per call and group of vectors: what every row needs of each
 * activation block, e.g. dx in f32 and the offset sums, into a scratch laid out [block][vector]), rowdots_T
 * (S rows x NX vectors, compile-time constants: each weight block unpacked once per row, then one integer dot,
 * one cvt and one scaling FMA per vector) and rows_T (the row loop for one group of g vectors). The per
 * (row, vector) order of operations does not depend on S or NX, so every vector gets dot's bits. */
#ifndef LCX_QPREP_STACK
#define LCX_QPREP_STACK (48 << 10) /* bytes of prepared blocks on the stack: 8 vectors x 4096 columns of Q4_0 */
#endif
typedef void (*QF(prep_fn))(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf);
typedef void (*QF(rows_fn))(const uint8_t *W, size_t rb, const uint8_t *xq, size_t xs, size_t g, const void *buf,
                            size_t nb, float *y, size_t ldy, size_t rows);

/* groups of up to LCX_DOTN_GROUP vectors, `per` scratch bytes per (vector, block); the heap where the stack
 * buffer is too small, smaller groups where the heap says no, NaN where not even one vector fits */
static void QF(dotn_drive)(const void *W, size_t rb, const void *xq, size_t xs, size_t nx, float *y, size_t ldy,
                           size_t rows, size_t nb, size_t per, QF(prep_fn) prep, QF(rows_fn) run) {
    _Alignas(64) unsigned char stack[LCX_QPREP_STACK];
    size_t g = nx < LCX_DOTN_GROUP ? nx : LCX_DOTN_GROUP;
    unsigned char *buf = stack;
    void *heap = NULL;
    if (g * nb * per > sizeof stack) {
        heap = _mm_malloc(g * nb * per, 64);
        if (heap)
            buf = (unsigned char *)heap;
        else
            g = sizeof stack / (nb * per);
    }
    if (g == 0) {
        for (size_t j = 0; j < nx; j++)
            for (size_t r = 0; r < rows; r++) y[j * ldy + r] = __builtin_nanf("");
        return;
    }
    for (size_t j0 = 0; j0 < nx; j0 += g) {
        const size_t gg = nx - j0 < g ? nx - j0 : g;
        const uint8_t *x0 = (const uint8_t *)xq + j0 * xs;
        prep(x0, xs, gg, nb, buf);
        run((const uint8_t *)W, rb, x0, xs, gg, buf, nb, y + j0 * ldy, ldy, rows);
    }
    _mm_free(heap);
}

/* One group's rows: g = 1 deals 4 rows a quarter of the range apart (LCX_MATVEC_BODY's streams, the vector's
 * loads shared by the 4 rows); 2 vectors 4 rows, 3-4 vectors 2 rows the same way (S streams: S x NX <= 8
 * accumulators in flight, and S row streams from L3 / memory at once, which a single row lacked: 2 vectors
 * one row at a time took 1.9x one vector's time on weights in L3); more vectors one row at a time (the weight
 * work shared by the vectors). */
#define LCX_QROWS_NXS(ROWDOTS, NX, S)                                                                          \
    {                                                                                                          \
        const size_t q_ = rows / (S);                                                                          \
        float o_[(S) * (NX)];                                                                                  \
        for (size_t i = 0; i < q_; i++) {                                                                      \
            ROWDOTS(W + i * rb, q_ * rb, xq, xs, buf, nb, o_, (S), (NX));                                      \
            for (int k = 0; k < (S); k++)                                                                      \
                for (int j = 0; j < (NX); j++) y[j * ldy + i + k * q_] = o_[k * (NX) + j];                     \
        }                                                                                                      \
        for (size_t r = (S) * q_; r < rows; r++) {                                                             \
            ROWDOTS(W + r * rb, 0, xq, xs, buf, nb, o_, 1, (NX));                                              \
            for (int j = 0; j < (NX); j++) y[j * ldy + r] = o_[j];                                             \
        }                                                                                                      \
    }
#define LCX_QROWS_NX(ROWDOTS, NX) LCX_QROWS_NXS(ROWDOTS, NX, 1)
#define LCX_QDOTN(ID, BLOCK, PER)                                                                              \
    static void QF(rows_##ID)(const uint8_t *W, size_t rb, const uint8_t *xq, size_t xs, size_t g,             \
                              const void *buf, size_t nb, float *y, size_t ldy, size_t rows) {                 \
        switch (g) {                                                                                           \
        case 1: {                                                                                              \
            const size_t q_ = rows / 4;                                                                        \
            float o_[4];                                                                                       \
            for (size_t i = 0; i < q_; i++) {                                                                  \
                QF(rowdots_##ID)(W + i * rb, q_ * rb, xq, xs, buf, nb, o_, 4, 1);                              \
                for (int k = 0; k < 4; k++) y[i + k * q_] = o_[k];                                             \
            }                                                                                                  \
            for (size_t r = 4 * q_; r < rows; r++) {                                                           \
                QF(rowdots_##ID)(W + r * rb, 0, xq, xs, buf, nb, o_, 1, 1);                                    \
                y[r] = o_[0];                                                                                  \
            }                                                                                                  \
            break;                                                                                             \
        }                                                                                                      \
        case 2: LCX_QROWS_NXS(QF(rowdots_##ID), 2, 4) break;                                                   \
        case 3: LCX_QROWS_NXS(QF(rowdots_##ID), 3, 2) break;                                                   \
        case 4: LCX_QROWS_NXS(QF(rowdots_##ID), 4, 2) break;                                                   \
        case 5: LCX_QROWS_NXS(QF(rowdots_##ID), 5, 2) break;                                                       \
        case 6: LCX_QROWS_NXS(QF(rowdots_##ID), 6, 2) break;                                                       \
        case 7: LCX_QROWS_NXS(QF(rowdots_##ID), 7, 2) break;                                                       \
        default: LCX_QROWS_NXS(QF(rowdots_##ID), 8, 2) break;                                                  \
        }                                                                                                      \
    }                                                                                                          \
    static void QF(lcx_dotn_##ID)(const void *W, size_t rb, const void *xq, size_t xs, size_t nx, float *y,    \
                                  size_t ldy, size_t rows, size_t n) {                                         \
        QF(dotn_drive)(W, rb, xq, xs, nx, y, ldy, rows, n / (BLOCK), (PER), QF(prep_##ID), QF(rows_##ID));      \
    }                                                                                                          \
    static void QF(lcx_dot_##ID)(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {   \
        QF(lcx_dotn_##ID)(W, rb, xq, 0, 1, y, 0, rows, n);                                                     \
    }
/* the types without a multi-vector body: dot once per vector (the same bits, no sharing) */
#define LCX_QDOTN_LOOP(ID)                                                                                     \
    static void QF(lcx_dotn_##ID)(const void *W, size_t rb, const void *xq, size_t xs, size_t nx, float *y,    \
                                  size_t ldy, size_t rows, size_t n) {                                         \
        for (size_t j = 0; j < nx; j++) QF(lcx_dot_##ID)(W, rb, (const uint8_t *)xq + j * xs, y + j * ldy, rows, n); \
    }

/* ---- 32-blocks against q8_0 ------------------------------------------------------------------------------
 * KIND 0: signed weights (Q8_0): the sign trick, or with VNNI x + 128 as unsigned bytes (prepared) against the
 * signed weights, less 128 * sum(q) (once per row and block); 1: unsigned minus OFF (Q4_0: 8, Q5_0: 16), the
 * offset folded into the integer sum's start value -OFF * sum(xq) (prepared); 2: unsigned with a min (Q4_1,
 * Q5_1): y += d dx S + m dx X, X = sum(xq) per lane in f32 (prepared). Every lane's int32 sum is the same
 * whichever way, and y += (d * dx) * S with d * dx rounded once: bit for bit the earlier one-vector kernel.
 * EXPAND(block, &d, &m) -> the 32 weights as bytes. Scratch per (vector, block): 32 bytes aux + the f32 dx. */
#define LCX_Q32_ROWDOTS(T, BYTES, EXPAND, KIND, OFF)                                                           \
    static void QF(prep_##T)(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf) {                   \
        __m256i *aux = (__m256i *)buf;                                                                         \
        float *dx = (float *)(aux + g * nb);                                                                   \
        const __m256i z = _mm256_setzero_si256();                                                              \
        for (size_t b = 0; b < nb; b++)                                                                        \
            for (size_t j = 0; j < g; j++) {                                                                   \
                const lcx_block_q8_0 *x = (const lcx_block_q8_0 *)(xq + j * xs) + b;                           \
                const __m256i xv = _mm256_loadu_si256((const __m256i *)x->qs);                                 \
                __m256i a = z;                                                                                 \
                if (KIND == 0 && LCX_QVNNI) a = _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80));            \
                if (KIND == 1) a = QF(dot_acc)(z, _mm256_set1_epi8(OFF), _mm256_sub_epi8(z, xv));              \
                if (KIND == 2) a = _mm256_castps_si256(_mm256_cvtepi32_ps(QF(dot_acc)(z, _mm256_set1_epi8(1), xv))); \
                aux[b * g + j] = a;                                                                            \
                dx[b * g + j] = QF(h2f)((const uint8_t *)&x->d);                                               \
            }                                                                                                  \
    }                                                                                                          \
    static inline __attribute__((always_inline)) void QF(rowdots_##T)(const uint8_t *w, size_t q,              \
                                                                       const uint8_t *xq, size_t xs,           \
                                                                       const void *buf, size_t nb, float *out, \
                                                                       const int S, const int NX) {            \
        const __m256i *aux = (const __m256i *)buf;                                                             \
        const float *dxs = (const float *)(aux + NX * nb);                                                     \
        const __m256i z = _mm256_setzero_si256();                                                              \
        __m256 acc[4][LCX_DOTN_GROUP];                                                                         \
        for (int s = 0; s < S; s++)                                                                            \
            for (int j = 0; j < NX; j++) acc[s][j] = _mm256_setzero_ps();                                      \
        for (size_t b = 0; b < nb; b++) {                                                                      \
            __m256i xv[LCX_DOTN_GROUP];                                                                        \
            for (int j = 0; j < NX; j++)                                                                       \
                xv[j] = KIND == 0 && LCX_QVNNI ? aux[b * NX + j]                                               \
                        : _mm256_loadu_si256((const __m256i *)((const lcx_block_q8_0 *)(xq + j * xs) + b)->qs); \
            for (int s = 0; s < S; s++) {                                                                      \
                float d, m;                                                                                    \
                const __m256i qv = EXPAND(w + s * q + b * (BYTES), &d, &m);                                    \
                const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);                                   \
                __m256i qa = qv, c = z;                                                                        \
                if (KIND == 0 && !LCX_QVNNI) qa = _mm256_sign_epi8(qv, qv);                                    \
                if (KIND == 0 && LCX_QVNNI) c = _mm256_sub_epi32(z, QF(dot_acc)(z, _mm256_set1_epi8((char)0x80), qv)); \
                for (int j = 0; j < NX; j++) {                                                                 \
                    const __m256 dxv = _mm256_broadcast_ss(dxs + b * NX + j);                                  \
                    __m256i p;                                                                                 \
                    if (KIND == 0 && LCX_QVNNI)                                                                \
                        p = QF(dot_acc)(c, xv[j], qv);                                                         \
                    else if (KIND == 0)                                                                        \
                        p = QF(dot_acc)(z, qa, _mm256_sign_epi8(xv[j], qv));                                   \
                    else                                                                                       \
                        p = QF(dot_acc)(KIND == 1 ? aux[b * NX + j] : z, qv, xv[j]);                           \
                    acc[s][j] = _mm256_fmadd_ps(_mm256_mul_ps(dv, dxv), _mm256_cvtepi32_ps(p), acc[s][j]);     \
                    if (KIND == 2)                                                                             \
                        acc[s][j] = _mm256_fmadd_ps(_mm256_mul_ps(mv, dxv), _mm256_castsi256_ps(aux[b * NX + j]), acc[s][j]); \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        for (int s = 0; s < S; s++)                                                                            \
            for (int j = 0; j < NX; j++) out[s * NX + j] = QF(hsum8)(acc[s][j]);                               \
    }                                                                                                          \
    LCX_QDOTN(T, 32, 36)

static inline __attribute__((always_inline)) __m256i QF(expand_q8_0)(const uint8_t *b, float *d, float *m) {
    *d = QF(h2f_lead)(b);
    *m = 0.0f;
    return _mm256_loadu_si256((const __m256i *)(b + 2));
}
static inline __attribute__((always_inline)) __m256i QF(expand_q4_0)(const uint8_t *b, float *d, float *m) {
    *d = QF(h2f_lead)(b);
    *m = 0.0f;
    return QF(nibbles32)(b + 2);
}
/* two adjacent f16 fields (d and m) in one conversion: +15-20% on Q4_1 / Q5_1 against two (C harness) */
static inline __attribute__((always_inline)) void QF(h2f2)(const uint8_t *p, float *a, float *b) {
    const __m128 f = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)p)); /* as h2f_lead: p leads a block */
    *a = _mm_cvtss_f32(f);
    *b = _mm_cvtss_f32(_mm_movehdup_ps(f));
}
static inline __attribute__((always_inline)) __m256i QF(expand_q4_1)(const uint8_t *b, float *d, float *m) {
    QF(h2f2)(b, d, m);
    return QF(nibbles32)(b + 4);
}
static inline __attribute__((always_inline)) __m256i QF(expand_q5_0)(const uint8_t *b, float *d, float *m) {
    *d = QF(h2f_lead)(b);
    *m = 0.0f;
    return _mm256_or_si256(QF(nibbles32)(b + 6), QF(bits16_32)(b + 2));
}
static inline __attribute__((always_inline)) __m256i QF(expand_q5_1)(const uint8_t *b, float *d, float *m) {
    QF(h2f2)(b, d, m);
    return _mm256_or_si256(QF(nibbles32)(b + 8), QF(bits16_32)(b + 4));
}

LCX_Q32_ROWDOTS(q8_0, 34, QF(expand_q8_0), 0, 0)
LCX_Q32_ROWDOTS(q4_0, 18, QF(expand_q4_0), 1, 8)
LCX_Q32_ROWDOTS(q4_1, 20, QF(expand_q4_1), 2, 0)
LCX_Q32_ROWDOTS(q5_0, 22, QF(expand_q5_0), 1, 16)
LCX_Q32_ROWDOTS(q5_1, 24, QF(expand_q5_1), 2, 0)

#if LCX_QZMM
/* ---- 32-blocks, two per 512-bit vector (the AVX-512 paths) -------------------------------------------------
 * Blocks 2p and 2p + 1 of a row side by side (lanes 0-7 / 8-15), so each vector pays one integer dot, one
 * cvt, one scale product and one FMA per block pair (port 5 and the FMA ports were the limit with one block
 * per 256-bit vector). Prepared per (vector, pair), 192 bytes: the two activation blocks' bytes (VNNI Q8_0:
 * + 128 as unsigned), the offset sums (KIND 1) or sum(xq) * dx in f32 (KIND 2), and [dx0 x 8 | dx1 x 8]. An
 * odd last block pairs with zero activations and dx = 0 (the weights read twice: zero products). Lane sums
 * differ from the 256-bit kernel's, so these bits are their own; dot is dotn with nx = 1 here too. */
/* [32 bytes at lo | 32 bytes at hi] */
static inline __m512i QF(load2x32)(const int8_t *lo, const int8_t *hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                              _mm256_loadu_si256((const __m256i *)hi), 1);
}
static inline __m512 QF(pair_ps)(float a, float b) {
    return _mm512_mask_broadcastss_ps(_mm512_set1_ps(a), 0xFF00, _mm_set_ss(b));
}
/* two blocks' 16 nibble bytes -> [lo0 hi0 | lo1 hi1] */
static inline __m512i QF(nibbles64)(const uint8_t *p0, const uint8_t *p1) {
    const __m512i z = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p0)), 0xFF00,
                                                  _mm_loadu_si128((const __m128i *)p1));
    return _mm512_and_si512(_mm512_srlv_epi64(z, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(15));
}
static inline __m512i QF(bits16_64)(const uint8_t *p0, const uint8_t *p1) {
    uint32_t u0, u1;
    memcpy(&u0, p0, 4);
    memcpy(&u1, p1, 4);
    return _mm512_maskz_mov_epi8(_cvtu64_mask64(u0 | (uint64_t)u1 << 32), _mm512_set1_epi8(16));
}
static inline __attribute__((always_inline)) __m512i QF(expand2_q8_0)(const uint8_t *b0, const uint8_t *b1, __m512 *d, __m512 *m) {
    *d = QF(pair_ps)(QF(h2f_lead)(b0), QF(h2f_lead)(b1));
    *m = _mm512_setzero_ps();
    return QF(load2x32)((const int8_t *)b0 + 2, (const int8_t *)b1 + 2);
}
static inline __attribute__((always_inline)) __m512i QF(expand2_q4_0)(const uint8_t *b0, const uint8_t *b1, __m512 *d, __m512 *m) {
    *d = QF(pair_ps)(QF(h2f_lead)(b0), QF(h2f_lead)(b1));
    *m = _mm512_setzero_ps();
    return QF(nibbles64)(b0 + 2, b1 + 2);
}
static inline __attribute__((always_inline)) __m512i QF(expand2_q4_1)(const uint8_t *b0, const uint8_t *b1, __m512 *d, __m512 *m) {
    float d0, m0, d1, m1;
    QF(h2f2)(b0, &d0, &m0);
    QF(h2f2)(b1, &d1, &m1);
    *d = QF(pair_ps)(d0, d1);
    *m = QF(pair_ps)(m0, m1);
    return QF(nibbles64)(b0 + 4, b1 + 4);
}
static inline __attribute__((always_inline)) __m512i QF(expand2_q5_0)(const uint8_t *b0, const uint8_t *b1, __m512 *d, __m512 *m) {
    *d = QF(pair_ps)(QF(h2f_lead)(b0), QF(h2f_lead)(b1));
    *m = _mm512_setzero_ps();
    return _mm512_or_si512(QF(nibbles64)(b0 + 6, b1 + 6), QF(bits16_64)(b0 + 2, b1 + 2));
}
static inline __attribute__((always_inline)) __m512i QF(expand2_q5_1)(const uint8_t *b0, const uint8_t *b1, __m512 *d, __m512 *m) {
    float d0, m0, d1, m1;
    QF(h2f2)(b0, &d0, &m0);
    QF(h2f2)(b1, &d1, &m1);
    *d = QF(pair_ps)(d0, d1);
    *m = QF(pair_ps)(m0, m1);
    return _mm512_or_si512(QF(nibbles64)(b0 + 8, b1 + 8), QF(bits16_64)(b0 + 4, b1 + 4));
}
/* acc (16 x i32) + the sums of the 4 products u8 x s8 in each 32-bit lane */
static inline __m512i QF(dot_acc512)(__m512i acc, __m512i u, __m512i s) {
#if LCX_QVNNI
    return _mm512_dpbusd_epi32(acc, u, s);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}
#define LCX_Q32_ROWDOTS512(T, BYTES, EXPAND2, KIND, OFF)                                                        \
    static void QF(prep_##T##_512)(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf) {              \
        const size_t np = (nb + 1) / 2;                                                                         \
        __m512i *xv = (__m512i *)buf, *aux = xv + g * np;                                                       \
        __m512 *dx = (__m512 *)(aux + g * np);                                                                  \
        const __m512i z = _mm512_setzero_si512();                                                               \
        for (size_t p = 0; p < np; p++)                                                                         \
            for (size_t j = 0; j < g; j++) {                                                                    \
                const lcx_block_q8_0 *x0 = (const lcx_block_q8_0 *)(xq + j * xs) + 2 * p;                       \
                const int two = 2 * p + 1 < nb;                                                                 \
                __m512i v = two ? QF(load2x32)(x0[0].qs, x0[1].qs)                                              \
                                : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)x0[0].qs));        \
                const __m512 dv = QF(pair_ps)(QF(h2f)((const uint8_t *)&x0[0].d), two ? QF(h2f)((const uint8_t *)&x0[1].d) : 0.0f); \
                __m512i a = z;                                                                                  \
                if (KIND == 1) a = QF(dot_acc512)(z, _mm512_set1_epi8(OFF), _mm512_sub_epi8(z, v));             \
                if (KIND == 2) a = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(QF(dot_acc512)(z, _mm512_set1_epi8(1), v)), dv)); \
                if (KIND == 0 && LCX_QVNNI)                                                                     \
                    v = _mm512_maskz_mov_epi64(two ? 0xFF : 0x0F, _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80))); \
                xv[p * g + j] = v;                                                                              \
                aux[p * g + j] = a;                                                                             \
                dx[p * g + j] = dv;                                                                             \
            }                                                                                                   \
    }                                                                                                           \
    static inline __attribute__((always_inline)) void QF(rowdots_##T##_512)(const uint8_t *w, size_t q,         \
                                                                            const uint8_t *xq, size_t xs,       \
                                                                            const void *buf, size_t nb,         \
                                                                            float *out, const int S, const int NX) { \
        const size_t np = (nb + 1) / 2;                                                                         \
        const __m512i *xv = (const __m512i *)buf, *aux = xv + NX * np;                                          \
        const __m512 *dx = (const __m512 *)(aux + NX * np);                                                     \
        const __m512i z = _mm512_setzero_si512();                                                               \
        (void)xq;                                                                                               \
        (void)xs;                                                                                               \
        __m512 acc[4][LCX_DOTN_GROUP];                                                                          \
        for (int s = 0; s < S; s++)                                                                             \
            for (int j = 0; j < NX; j++) acc[s][j] = _mm512_setzero_ps();                                       \
        for (size_t p = 0; p < np; p++) {                                                                       \
            for (int s = 0; s < S; s++) {                                                                       \
                const uint8_t *b0 = w + s * q + 2 * p * (BYTES), *b1 = 2 * p + 1 < nb ? b0 + (BYTES) : b0;       \
                __m512 dv, mv;                                                                                  \
                const __m512i qv = EXPAND2(b0, b1, &dv, &mv);                                                   \
                __m512i qa = qv, c = z;                                                                         \
                __mmask64 neg = 0;                                                                              \
                if (KIND == 0 && !LCX_QVNNI) {                                                                  \
                    qa = _mm512_abs_epi8(qv);                                                                   \
                    neg = _mm512_movepi8_mask(qv);                                                              \
                }                                                                                               \
                if (KIND == 0 && LCX_QVNNI) c = _mm512_sub_epi32(z, QF(dot_acc512)(z, _mm512_set1_epi8((char)0x80), qv)); \
                for (int j = 0; j < NX; j++) {                                                                  \
                    const size_t i = p * NX + j;                                                                \
                    __m512i pr;                                                                                 \
                    if (KIND == 0 && LCX_QVNNI)                                                                 \
                        pr = QF(dot_acc512)(c, xv[i], qv);                                                      \
                    else if (KIND == 0)                                                                         \
                        pr = QF(dot_acc512)(z, qa, _mm512_mask_sub_epi8(xv[i], neg, z, xv[i]));                 \
                    else                                                                                        \
                        pr = QF(dot_acc512)(KIND == 1 ? aux[i] : z, qv, xv[i]);                                 \
                    acc[s][j] = _mm512_fmadd_ps(_mm512_mul_ps(dv, dx[i]), _mm512_cvtepi32_ps(pr), acc[s][j]);   \
                    if (KIND == 2) acc[s][j] = _mm512_fmadd_ps(mv, _mm512_castsi512_ps(aux[i]), acc[s][j]);     \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int s = 0; s < S; s++)                                                                             \
            for (int j = 0; j < NX; j++) out[s * NX + j] = _mm512_reduce_add_ps(acc[s][j]);                     \
    }                                                                                                           \
    LCX_QDOTN(T##_512, 32, 192)
LCX_Q32_ROWDOTS512(q8_0, 34, QF(expand2_q8_0), 0, 0)
LCX_Q32_ROWDOTS512(q4_0, 18, QF(expand2_q4_0), 1, 8)
LCX_Q32_ROWDOTS512(q4_1, 20, QF(expand2_q4_1), 2, 0)
LCX_Q32_ROWDOTS512(q5_0, 22, QF(expand2_q5_0), 1, 16)
LCX_Q32_ROWDOTS512(q5_1, 24, QF(expand2_q5_1), 2, 0)
#endif

LCX_Q32_DEQUANT(q8_0, 34, QF(expand_q8_0), 0, 0)
LCX_Q32_DEQUANT(q4_0, 18, QF(expand_q4_0), 8, 0)
LCX_Q32_DEQUANT(q4_1, 20, QF(expand_q4_1), 0, 1)
LCX_Q32_DEQUANT(q5_0, 22, QF(expand_q5_0), 16, 0)
LCX_Q32_DEQUANT(q5_1, 24, QF(expand_q5_1), 0, 1)

/* ---- K-quants against q8_K ------------------------------------------------------------------------------
 * Per block and row: the integer sum S = sum_j sc_j * (sub-block j's u8 x s8 sums) in 8 int32 lanes
 * (vpmaddubsw pairs, then vpmaddwd with the sub-block's scale in every int16 lane: the scale rides along
 * for free), then acc += (d * dx) * S in f32; the mins' term dmin * dx * sum_j mn_j * bsums(j) in a second
 * f32 accumulator, subtracted at the end. */

/* the 8 scales then the 8 mins of a Q4_K / Q5_K block, 6 bits each (ggml's utmp shuffle) */
static inline void QF(k4_scales)(const uint8_t *s12, uint8_t out[16]) {
    uint32_t u[4];
    memcpy(u, s12, 12);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    memcpy(out, u, 16);
}

/* the q8_K block's 16 sums added in pairs: the sums of its 8 sub-blocks of 32, as int16 */
static inline __m128i QF(bsums_pairs)(const lcx_block_q8_K *x) {
    __m128i lo = _mm_loadu_si128((const __m128i *)x->bsums), hi = _mm_loadu_si128((const __m128i *)(x->bsums + 8));
    return _mm_hadd_epi16(lo, hi);
}

/* int16 lanes 0..7 = sc, 8..15 = sc2 (two sub-blocks of 16 in one 32-byte vector) */
static inline __m256i QF(scale_pair)(int sc, int sc2) {
    return _mm256_set_m128i(_mm_set1_epi16((short)sc2), _mm_set1_epi16((short)sc));
}

/* Q4_K and Q5_K share everything but the fifth bit (HIGH = 1 for Q5_K) */
#define LCX_K4_ROWDOTS(T, BYTES, HIGH)                                                                         \
    static inline __attribute__((always_inline)) void QF(rowdots_##T)(const uint8_t *w, size_t q,              \
                                                                       const lcx_block_q8_K *x, size_t nb,     \
                                                                       float *y, const int S) {                \
        __m256 acc[4];                                                                                         \
        __m128 accm[4];                                                                                        \
        for (int s = 0; s < S; s++) {                                                                          \
            acc[s] = _mm256_setzero_ps();                                                                      \
            accm[s] = _mm_setzero_ps();                                                                        \
        }                                                                                                      \
        const __m256i m4 = _mm256_set1_epi8(15);                                                               \
        for (size_t b = 0; b < nb; b++) {                                                                      \
            const lcx_block_q8_K *xb = x + b;                                                                  \
            const __m128i bp = QF(bsums_pairs)(xb);                                                            \
            __m256i isum[4];                                                                                   \
            __m128 dd[4]; /* [d dx, dmin dx] of each row, one conversion */                                   \
            uint8_t sm[4][16];                                                                                 \
            for (int s = 0; s < S; s++) {                                                                      \
                const uint8_t *blk = w + s * q + b * (BYTES);                                                  \
                QF(k4_scales)(blk + 4, sm[s]);                                                                 \
                const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(sm[s] + 8)));         \
                dd[s] = _mm_mul_ps(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk)), _mm_set1_ps(xb->d));   \
                accm[s] = _mm_fmadd_ps(_mm_shuffle_ps(dd[s], dd[s], 0x55), _mm_cvtepi32_ps(_mm_madd_epi16(mins, bp)), accm[s]); \
                isum[s] = _mm256_setzero_si256();                                                              \
            }                                                                                                  \
            for (int c = 0; c < 4; c++) {                                                                      \
                const __m256i x0 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c));                     \
                const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c + 32));                \
                for (int s = 0; s < S; s++) {                                                                  \
                    const uint8_t *blk = w + s * q + b * (BYTES);                                              \
                    const __m256i bits = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * (HIGH) + 32 * c)); \
                    __m256i q0 = _mm256_and_si256(bits, m4), q1 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4); \
                    if (HIGH) {                                                                                \
                        const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 16));                    \
                        const __m256i one = _mm256_set1_epi8(1);                                               \
                        q0 = _mm256_or_si256(q0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4)); \
                        q1 = _mm256_or_si256(q1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4)); \
                    }                                                                                          \
                    const __m256i p0 = _mm256_madd_epi16(_mm256_set1_epi16(sm[s][2 * c]), _mm256_maddubs_epi16(q0, x0)); \
                    const __m256i p1 = _mm256_madd_epi16(_mm256_set1_epi16(sm[s][2 * c + 1]), _mm256_maddubs_epi16(q1, x1)); \
                    isum[s] = _mm256_add_epi32(isum[s], _mm256_add_epi32(p0, p1));                             \
                }                                                                                              \
            }                                                                                                  \
            for (int s = 0; s < S; s++)                                                                        \
                acc[s] = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd[s]), _mm256_cvtepi32_ps(isum[s]), acc[s]);   \
        }                                                                                                      \
        for (int s = 0; s < S; s++) y[s] = QF(hsum8)(acc[s]) - QF(hsum4)(accm[s]);                             \
    }                                                                                                          \
    static void QF(lcx_dot_##T)(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {   \
        const uint8_t *Wb = (const uint8_t *)W;                                                                \
        const lcx_block_q8_K *x = (const lcx_block_q8_K *)xq;                                                  \
        LCX_MATVEC_BODY(QF(rowdots_##T), Wb, rb, x, y, rows, n / 256, 0);                                      \
    }

LCX_K4_ROWDOTS(q4_K, 144, 0)
LCX_K4_ROWDOTS(q5_K, 176, 1)

/* Q4_K / Q5_K: chunk c's low nibbles are sub-block 2c, its high nibbles 2c + 1 */
#define LCX_K4_DEQUANT(T, BYTES, HIGH)                                                                         \
    static void QF(lcx_dequant_##T)(const void *src, float *dst, size_t n) {                                   \
        const uint8_t *blk = (const uint8_t *)src;                                                             \
        const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);                                    \
        for (size_t i = 0; i < n / 256; i++, blk += (BYTES), dst += 256) {                                     \
            uint8_t sm[16];                                                                                    \
            QF(k4_scales)(blk + 4, sm);                                                                        \
            const float d = QF(h2f)(blk), dmin = QF(h2f)(blk + 2);                                             \
            for (int c = 0; c < 4; c++) {                                                                      \
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * (HIGH) + 32 * c));   \
                __m256i q0 = _mm256_and_si256(bits, m4), q1 = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4); \
                if (HIGH) {                                                                                    \
                    const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 16));                        \
                    q0 = _mm256_or_si256(q0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4)); \
                    q1 = _mm256_or_si256(q1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4)); \
                }                                                                                              \
                const float d0 = d * (float)sm[2 * c], m0 = dmin * (float)sm[8 + 2 * c];                       \
                const float d1 = d * (float)sm[2 * c + 1], m1 = dmin * (float)sm[8 + 2 * c + 1];               \
                QF(widen32)(dst + 64 * c, q0, d0, m0, d0, m0, 0);                                                 \
                QF(widen32)(dst + 64 * c + 32, q1, d1, m1, d1, m1, 0);                                            \
            }                                                                                                  \
        }                                                                                                      \
    }
LCX_K4_DEQUANT(q4_K, 144, 0)
LCX_K4_DEQUANT(q5_K, 176, 1)

static void QF(lcx_dequant_q6_K)(const void *src, float *dst, size_t n) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    const lcx_block_q6_K *blk = (const lcx_block_q6_K *)src;
    for (size_t i = 0; i < n / 256; i++, blk++, dst += 256) {
        const float d = QF(h2f)((const uint8_t *)&blk->d);
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
            __m256i qv[4];
            qv[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
            qv[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
            qv[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
            qv[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
            const int8_t *sc = blk->scales + 8 * h;
            for (int k = 0; k < 4; k++)
                QF(widen32)(dst + 128 * h + 32 * k, _mm256_sub_epi8(qv[k], off), d * (float)sc[2 * k], 0.0f,
                            d * (float)sc[2 * k + 1], 0.0f, 0);
        }
    }
}

/* Q6_K: q = (4 low bits | 2 high bits << 4) as unsigned 0..63, the offset 32 taken off as 32 * (pair sums of
 * xq), formed once per activation block for all rows; 16 int8 scales, one per 16 weights. */
static inline __attribute__((always_inline)) void QF(rowdots_q6_K)(const uint8_t *w, size_t q,
                                                                    const lcx_block_q8_K *x, size_t nb, float *y,
                                                                    const int S) {
    __m256 acc[4];
    for (int s = 0; s < S; s++) acc[s] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (size_t b = 0; b < nb; b++) {
        const lcx_block_q8_K *xb = x + b;
        __m256i isum[4];
        for (int s = 0; s < S; s++) isum[s] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i xv[4], x32[4];
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm256_loadu_si256((const __m256i *)(xb->qs + 128 * h + 32 * k));
                x32[k] = _mm256_maddubs_epi16(_mm256_set1_epi8(32), xv[k]);
            }
            for (int s = 0; s < S; s++) {
                const lcx_block_q6_K *blk = (const lcx_block_q6_K *)(w + s * q + b * 210);
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
                const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                __m256i qv[4];
                qv[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
                qv[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
                qv[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
                qv[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
                const int8_t *sc = blk->scales + 8 * h;
                for (int k = 0; k < 4; k++) {
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(qv[k], xv[k]), x32[k]);
                    isum[s] = _mm256_add_epi32(isum[s], _mm256_madd_epi16(QF(scale_pair)(sc[2 * k], sc[2 * k + 1]), p));
                }
            }
        }
        for (int s = 0; s < S; s++) {
            const lcx_block_q6_K *blk = (const lcx_block_q6_K *)(w + s * q + b * 210);
            const float d = QF(h2f)((const uint8_t *)&blk->d) * xb->d;
            acc[s] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum[s]), acc[s]);
        }
    }
    for (int s = 0; s < S; s++) y[s] = QF(hsum8)(acc[s]);
}
static void QF(lcx_dot_q6_K)(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {
    const uint8_t *Wb = (const uint8_t *)W;
    const lcx_block_q8_K *x = (const lcx_block_q8_K *)xq;
    LCX_MATVEC_BODY(QF(rowdots_q6_K), Wb, rb, x, y, rows, n / 256, 0);
}

/* Q2_K: 2-bit quants (unsigned 0..3) with a 4-bit scale and a 4-bit min per 16 weights; the mins' term
 * dmin * dx * sum_j mn_j * bsums_j from the q8_K block sums, one vpmaddwd. */
static inline __attribute__((always_inline)) void QF(rowdots_q2_K)(const uint8_t *w, size_t q,
                                                                    const lcx_block_q8_K *x, size_t nb, float *y,
                                                                    const int S) {
    __m256 acc[4], accm[4];
    for (int s = 0; s < S; s++) acc[s] = accm[s] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (size_t b = 0; b < nb; b++) {
        const lcx_block_q8_K *xb = x + b;
        const __m256i bsums = _mm256_loadu_si256((const __m256i *)xb->bsums);
        __m256i isum[4];
        for (int s = 0; s < S; s++) {
            const lcx_block_q2_K *blk = (const lcx_block_q2_K *)(w + s * q + b * 84);
            const __m128i sm = _mm_loadu_si128((const __m128i *)blk->scales);
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(15)));
            const float dmin = QF(h2f)((const uint8_t *)&blk->dmin) * xb->d;
            accm[s] = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)), accm[s]);
            isum[s] = _mm256_setzero_si256();
        }
        for (int h = 0; h < 2; h++) {
            __m256i xv[4];
            for (int k = 0; k < 4; k++) xv[k] = _mm256_loadu_si256((const __m256i *)(xb->qs + 128 * h + 32 * k));
            for (int s = 0; s < S; s++) {
                const lcx_block_q2_K *blk = (const lcx_block_q2_K *)(w + s * q + b * 84);
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * h));
                const uint8_t *sc = blk->scales + 8 * h;
                for (int k = 0; k < 4; k++) {
                    const __m256i qv = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                    const __m256i p = _mm256_maddubs_epi16(qv, xv[k]);
                    isum[s] = _mm256_add_epi32(isum[s], _mm256_madd_epi16(QF(scale_pair)(sc[2 * k] & 15, sc[2 * k + 1] & 15), p));
                }
            }
        }
        for (int s = 0; s < S; s++) {
            const lcx_block_q2_K *blk = (const lcx_block_q2_K *)(w + s * q + b * 84);
            const float d = QF(h2f)((const uint8_t *)&blk->d) * xb->d;
            acc[s] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum[s]), acc[s]);
        }
    }
    for (int s = 0; s < S; s++) y[s] = QF(hsum8)(acc[s]) - QF(hsum8)(accm[s]);
}
static void QF(lcx_dot_q2_K)(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {
    const uint8_t *Wb = (const uint8_t *)W;
    const lcx_block_q8_K *x = (const lcx_block_q8_K *)xq;
    LCX_MATVEC_BODY(QF(rowdots_q2_K), Wb, rb, x, y, rows, n / 256, 0);
}

/* Q3_K: q = low 2 bits + 4 * high bit (unsigned 0..7), the offset 4 taken off as 4 * (pair sums of xq)
 * once per activation block; 16 signed 6-bit scales (stored + 32, unpacked with ggml's kmask shuffle). */
static inline __attribute__((always_inline)) void QF(rowdots_q3_K)(const uint8_t *w, size_t q,
                                                                    const lcx_block_q8_K *x, size_t nb, float *y,
                                                                    const int S) {
    __m256 acc[4];
    for (int s = 0; s < S; s++) acc[s] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (size_t b = 0; b < nb; b++) {
        const lcx_block_q8_K *xb = x + b;
        __m256i isum[4];
        int8_t sc[4][16];
        for (int s = 0; s < S; s++) {
            const lcx_block_q3_K *blk = (const lcx_block_q3_K *)(w + s * q + b * 110);
            uint32_t a[4];
            memcpy(a, blk->scales, 12);
            const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f, t = a[2];
            a[2] = ((a[0] >> 4) & k2) | (((t >> 4) & k1) << 4);
            a[3] = ((a[1] >> 4) & k2) | (((t >> 6) & k1) << 4);
            a[0] = (a[0] & k2) | (((t >> 0) & k1) << 4);
            a[1] = (a[1] & k2) | (((t >> 2) & k1) << 4);
            _mm_storeu_si128((__m128i *)sc[s], _mm_sub_epi8(_mm_loadu_si128((const __m128i *)a), _mm_set1_epi8(32)));
            isum[s] = _mm256_setzero_si256();
        }
        for (int h = 0; h < 2; h++) {
            __m256i xv[4], x4[4];
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm256_loadu_si256((const __m256i *)(xb->qs + 128 * h + 32 * k));
                x4[k] = _mm256_maddubs_epi16(_mm256_set1_epi8(4), xv[k]);
            }
            for (int s = 0; s < S; s++) {
                const lcx_block_q3_K *blk = (const lcx_block_q3_K *)(w + s * q + b * 110);
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * h));
                const __m256i hm = _mm256_loadu_si256((const __m256i *)blk->hmask);
                for (int k = 0; k < 4; k++) {
                    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one), 2);
                    const __m256i qv = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3), hi);
                    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(qv, xv[k]), x4[k]);
                    isum[s] = _mm256_add_epi32(isum[s], _mm256_madd_epi16(QF(scale_pair)(sc[s][8 * h + 2 * k], sc[s][8 * h + 2 * k + 1]), p));
                }
            }
        }
        for (int s = 0; s < S; s++) {
            const lcx_block_q3_K *blk = (const lcx_block_q3_K *)(w + s * q + b * 110);
            const float d = QF(h2f)((const uint8_t *)&blk->d) * xb->d;
            acc[s] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum[s]), acc[s]);
        }
    }
    for (int s = 0; s < S; s++) y[s] = QF(hsum8)(acc[s]);
}
static void QF(lcx_dot_q3_K)(const void *W, size_t rb, const void *xq, float *y, size_t rows, size_t n) {
    const uint8_t *Wb = (const uint8_t *)W;
    const lcx_block_q8_K *x = (const lcx_block_q8_K *)xq;
    LCX_MATVEC_BODY(QF(rowdots_q3_K), Wb, rb, x, y, rows, n / 256, 0);
}

#if LCX_QZMM
/* ---- 512-bit K-quant dots (the AVX-512 paths) -------------------------------------------------------------
 * The same sums as above with 64 bytes per instruction. Weights stay in file order; the activation vectors
 * are arranged to match once per block for all S rows (two 32-byte halves each), and each sub-block's
 * scale is spread over its int16 lanes by one vpermw. */

/* sums of int16 pairs a * b added to acc (8 x 2 -> 16 int32) */
static inline __m512i QF(madd_acc512)(__m512i acc, __m512i a, __m512i b) {
#if LCX_QVNNI
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}
/* int16 lanes 0..15 = v[a], 16..31 = v[b] */
static inline __m512i QF(idx2)(int a, int b) {
    return _mm512_inserti64x4(_mm512_set1_epi16((short)a), _mm256_set1_epi16((short)b), 1);
}
/* int16 lanes 8k..8k+7 = v[a + k], k < 4 */
static inline __m512i QF(idx4)(int a) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_set1_epi16((short)(a + 1)), _mm_set1_epi16((short)a))),
                              _mm256_set_m128i(_mm_set1_epi16((short)(a + 3)), _mm_set1_epi16((short)(a + 2))), 1);
}

/* Q4_K / Q5_K: qs bytes [0, 64) are chunks 0 and 1: low nibbles = weights [0, 32) and [64, 96) (sub-blocks
 * 0, 2), high nibbles = [32, 64) and [96, 128) (1, 3); bytes [64, 128) the same for chunks 2, 3. The
 * activation halves arranged to match (4 x 64 bytes), the pair sums of the block sums and dx are prepared
 * once per call: 276 scratch bytes per (vector, block). Per row and block the scales are unpacked and spread
 * (vpermw) once for all the vectors. */
static void QF(prep_k4_512)(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf) {
    __m512i *xa = (__m512i *)buf;
    __m128i *bp = (__m128i *)(xa + 4 * g * nb);
    float *dx = (float *)(bp + g * nb);
    for (size_t b = 0; b < nb; b++)
        for (size_t j = 0; j < g; j++) {
            const lcx_block_q8_K *xb = (const lcx_block_q8_K *)(xq + j * xs) + b;
            const size_t i = b * g + j;
            xa[4 * i + 0] = QF(load2x32)(xb->qs, xb->qs + 64);
            xa[4 * i + 1] = QF(load2x32)(xb->qs + 32, xb->qs + 96);
            xa[4 * i + 2] = QF(load2x32)(xb->qs + 128, xb->qs + 192);
            xa[4 * i + 3] = QF(load2x32)(xb->qs + 160, xb->qs + 224);
            bp[i] = QF(bsums_pairs)(xb);
            dx[i] = xb->d;
        }
}
#define LCX_K4_ROWDOTS512(T, BYTES, HIGH)                                                                       \
    static inline __attribute__((always_inline)) void QF(rowdots_##T##_512)(const uint8_t *w, size_t q,         \
                                                                           const uint8_t *xq, size_t xs,        \
                                                                           const void *buf, size_t nb,          \
                                                                           float *out, const int S, const int NX) { \
        const __m512i *xa = (const __m512i *)buf;                                                               \
        const __m128i *bp = (const __m128i *)(xa + 4 * NX * nb);                                                \
        const float *dxs = (const float *)(bp + NX * nb);                                                       \
        (void)xq;                                                                                               \
        (void)xs;                                                                                               \
        __m512 acc[4][LCX_DOTN_GROUP];                                                                          \
        __m128 accm[4][LCX_DOTN_GROUP];                                                                         \
        for (int s = 0; s < S; s++)                                                                             \
            for (int j = 0; j < NX; j++) {                                                                      \
                acc[s][j] = _mm512_setzero_ps();                                                                \
                accm[s][j] = _mm_setzero_ps();                                                                  \
            }                                                                                                   \
        const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1);                                     \
        const __m512i ilo0 = QF(idx2)(0, 2), ihi0 = QF(idx2)(1, 3), ilo1 = QF(idx2)(4, 6), ihi1 = QF(idx2)(5, 7); \
        for (size_t b = 0; b < nb; b++) {                                                                       \
            for (int s = 0; s < S; s++) {                                                                       \
                const uint8_t *blk = w + s * q + b * (BYTES);                                                   \
                uint8_t sm[16];                                                                                 \
                QF(k4_scales)(blk + 4, sm);                                                                     \
                const __m128i sm16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sm));                  \
                const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(sm + 8)));           \
                /* d and dmin converted together (+13% over two conversions) */                                \
                const __m128 dd = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk));                          \
                const __m512 dv = _mm512_broadcastss_ps(dd);                                                    \
                const __m128 dmv = _mm_shuffle_ps(dd, dd, 0x55);                                                \
                const __m512i sc = _mm512_castsi128_si512(sm16);                                                \
                const __m512i b0 = _mm512_loadu_si512((const void *)(blk + 16 + 32 * (HIGH)));                 \
                const __m512i b1 = _mm512_loadu_si512((const void *)(blk + 16 + 32 * (HIGH) + 64));            \
                __m512i q0 = _mm512_and_si512(b0, m4), q1 = _mm512_and_si512(_mm512_srli_epi16(b0, 4), m4);     \
                __m512i q2 = _mm512_and_si512(b1, m4), q3 = _mm512_and_si512(_mm512_srli_epi16(b1, 4), m4);     \
                if (HIGH) { /* fifth bits: bit 2c of qh for chunk c's low half, 2c + 1 for its high half */     \
                    const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));                         \
                    const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1); \
                    q0 = _mm512_or_si512(q0, _mm512_slli_epi16(_mm512_and_si512(hz, one), 4));                  \
                    q1 = _mm512_or_si512(q1, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hz, 1), one), 4)); \
                    q2 = _mm512_or_si512(q2, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hz, 4), one), 4)); \
                    q3 = _mm512_or_si512(q3, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hz, 5), one), 4)); \
                }                                                                                               \
                const __m512i s0 = _mm512_permutexvar_epi16(ilo0, sc), s1 = _mm512_permutexvar_epi16(ihi0, sc);  \
                const __m512i s2 = _mm512_permutexvar_epi16(ilo1, sc), s3 = _mm512_permutexvar_epi16(ihi1, sc);  \
                for (int j = 0; j < NX; j++) {                                                                  \
                    const size_t i = b * NX + j;                                                                \
                    const float dx = dxs[i];                                                                    \
                    accm[s][j] = _mm_fmadd_ps(_mm_mul_ps(dmv, _mm_set1_ps(dx)),                                 \
                                              _mm_cvtepi32_ps(_mm_madd_epi16(mins, bp[i])), accm[s][j]);        \
                    __m512i is = _mm512_setzero_si512();                                                        \
                    is = QF(madd_acc512)(is, s0, _mm512_maddubs_epi16(q0, xa[4 * i + 0]));                      \
                    is = QF(madd_acc512)(is, s1, _mm512_maddubs_epi16(q1, xa[4 * i + 1]));                      \
                    is = QF(madd_acc512)(is, s2, _mm512_maddubs_epi16(q2, xa[4 * i + 2]));                      \
                    is = QF(madd_acc512)(is, s3, _mm512_maddubs_epi16(q3, xa[4 * i + 3]));                      \
                    acc[s][j] = _mm512_fmadd_ps(_mm512_mul_ps(dv, _mm512_set1_ps(dx)), _mm512_cvtepi32_ps(is), acc[s][j]); \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int s = 0; s < S; s++)                                                                             \
            for (int j = 0; j < NX; j++) out[s * NX + j] = _mm512_reduce_add_ps(acc[s][j]) - QF(hsum4)(accm[s][j]); \
    }                                                                                                           \
    static void QF(prep_##T##_512)(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf) {              \
        QF(prep_k4_512)(xq, xs, g, nb, buf);                                                                    \
    }                                                                                                           \
    LCX_QDOTN(T##_512, 256, 276)
LCX_K4_ROWDOTS512(q4_K, 144, 0)
LCX_K4_ROWDOTS512(q5_K, 176, 1)

/* Q6_K, per half h (128 weights): ql's 64 bytes low nibbles = weights [0, 64), high nibbles = [64, 128);
 * qh's 32 bytes give bits 0-1 / 2-3 to [0, 32) / [32, 64) and 4-5 / 6-7 to [64, 96) / [96, 128). The
 * offset's 32 * (pair sums of xq) and dx prepared once per call: 260 scratch bytes per (vector, block). */
static void QF(prep_q6_K_512)(const uint8_t *xq, size_t xs, size_t g, size_t nb, void *buf) {
    __m512i *x32 = (__m512i *)buf;
    float *dx = (float *)(x32 + 4 * g * nb);
    for (size_t b = 0; b < nb; b++)
        for (size_t j = 0; j < g; j++) {
            const lcx_block_q8_K *xb = (const lcx_block_q8_K *)(xq + j * xs) + b;
            for (int k = 0; k < 4; k++)
                x32[4 * (b * g + j) + k] = _mm512_maddubs_epi16(_mm512_set1_epi8(32), _mm512_loadu_si512((const void *)(xb->qs + 64 * k)));
            dx[b * g + j] = xb->d;
        }
}
static inline __attribute__((always_inline)) void QF(rowdots_q6_K_512)(const uint8_t *w, size_t q, const uint8_t *xq,
                                                                        size_t xs, const void *buf, size_t nb,
                                                                        float *out, const int S, const int NX) {
    const __m512i *x32 = (const __m512i *)buf;
    const float *dxs = (const float *)(x32 + 4 * NX * nb);
    __m512 acc[4][LCX_DOTN_GROUP];
    for (int s = 0; s < S; s++)
        for (int j = 0; j < NX; j++) acc[s][j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    const __m512i ia[2] = {QF(idx4)(0), QF(idx4)(8)}, ib[2] = {QF(idx4)(4), QF(idx4)(12)};
    for (size_t b = 0; b < nb; b++) {
        for (int s = 0; s < S; s++) {
            const lcx_block_q6_K *blk = (const lcx_block_q6_K *)(w + s * q + b * 210);
            const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->scales)));
            const __m512 dv = _mm512_set1_ps(QF(h2f)((const uint8_t *)&blk->d));
            __m512i qa[2], qb[2], sa[2], sb[2];
            for (int h = 0; h < 2; h++) {
                const __m512i l = _mm512_loadu_si512((const void *)(blk->ql + 64 * h));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
                const __m512i hz = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                qa[h] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(hz, m3), 4));
                qb[h] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hz, 4), m3), 4));
                sa[h] = _mm512_permutexvar_epi16(ia[h], sc);
                sb[h] = _mm512_permutexvar_epi16(ib[h], sc);
            }
            for (int j = 0; j < NX; j++) {
                const lcx_block_q8_K *xb = (const lcx_block_q8_K *)(xq + j * xs) + b;
                const size_t i = b * NX + j;
                __m512i is = _mm512_setzero_si512();
                for (int h = 0; h < 2; h++) {
                    const __m512i pa = _mm512_sub_epi16(_mm512_maddubs_epi16(qa[h], _mm512_loadu_si512((const void *)(xb->qs + 128 * h))), x32[4 * i + 2 * h]);
                    const __m512i pb = _mm512_sub_epi16(_mm512_maddubs_epi16(qb[h], _mm512_loadu_si512((const void *)(xb->qs + 128 * h + 64))), x32[4 * i + 2 * h + 1]);
                    is = QF(madd_acc512)(is, sa[h], pa);
                    is = QF(madd_acc512)(is, sb[h], pb);
                }
                acc[s][j] = _mm512_fmadd_ps(_mm512_mul_ps(dv, _mm512_set1_ps(dxs[i])), _mm512_cvtepi32_ps(is), acc[s][j]);
            }
        }
    }
    for (int s = 0; s < S; s++)
        for (int j = 0; j < NX; j++) out[s * NX + j] = _mm512_reduce_add_ps(acc[s][j]);
}
LCX_QDOTN(q6_K_512, 256, 260)
#define LCX_KDOT(T) QF(lcx_dot_##T##_512)
#define LCX_KDOTN(T) QF(lcx_dotn_##T##_512)
#else
#define LCX_KDOT(T) QF(lcx_dot_##T)
#define LCX_KDOTN(T) QF(lcx_dotn_##T)
#endif
#define LCX_Q32DOT(T) LCX_KDOT(T) /* the 32-blocks: two blocks per 512-bit vector on the AVX-512 paths */
#define LCX_Q32DOTN(T) LCX_KDOTN(T)

LCX_QDOTN_LOOP(q2_K)
LCX_QDOTN_LOOP(q3_K)
#if !LCX_QZMM /* the 256-bit K-quant dots: no multi-vector body yet */
LCX_QDOTN_LOOP(q4_K)
LCX_QDOTN_LOOP(q5_K)
LCX_QDOTN_LOOP(q6_K)
#endif

const lcx_quant_traits QF(lcx_quant)[LCX_QTYPE_COUNT] =
    LCX_QUANT_TABLE(QF(lcx_quant_act_q8_0), QF(lcx_quant_act_q8_K), LCX_Q32DOT(q8_0), LCX_Q32DOT(q4_0),
                    LCX_Q32DOT(q4_1), LCX_Q32DOT(q5_0), LCX_Q32DOT(q5_1), QF(lcx_dot_q2_K), QF(lcx_dot_q3_K),
                    LCX_KDOT(q4_K), LCX_KDOT(q5_K), LCX_KDOT(q6_K), LCX_Q32DOTN(q8_0), LCX_Q32DOTN(q4_0),
                    LCX_Q32DOTN(q4_1), LCX_Q32DOTN(q5_0), LCX_Q32DOTN(q5_1), QF(lcx_dotn_q2_K), QF(lcx_dotn_q3_K),
                    LCX_KDOTN(q4_K), LCX_KDOTN(q5_K), LCX_KDOTN(q6_K), QF(lcx_dequant_q8_0), QF(lcx_dequant_q4_0),
                    QF(lcx_dequant_q4_1), QF(lcx_dequant_q5_0), QF(lcx_dequant_q5_1), lcx_dequant_q2_K,
                    lcx_dequant_q3_K, QF(lcx_dequant_q4_K), QF(lcx_dequant_q5_K), QF(lcx_dequant_q6_K));

#undef LCX_KDOT
#undef LCX_KDOTN
#undef LCX_Q32DOT
#undef LCX_Q32DOTN
#undef QF
#undef QCAT
#undef QCAT2
