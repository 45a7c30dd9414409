/* The int8-activation products (mtp.h) on x86, written once for the AVX2 and the AVX-512 VNNI
 * builds: the including file defines
 *   Q8_TARGET         the functions' target attribute;
 *   q8_dot4(a, b)     8 int32 lanes, lane l = sum of a[4l + i] * b[4l + i] for i < 4 (a u8, b s8);
 *   q8_pair(c, v0, x0, v1, x1, s0, s1, s01)
 *                     c plus the K-quant products of two 32-value registers (v u8, x s8), scaled
 *                     per int16 lane: s0 for maddubs(v0, x0)'s lanes, s1 for maddubs(v1, x1)'s, or
 *                     s01 for packs(dot4(v0, x0), dot4(v1, x1))'s (the build uses one of them);
 *   Q8_NAME(x)        the build's name for kernel x.
 * The integer sums are exact whichever instructions form them (every int16 intermediate stays in
 * range: |q| <= 127, weights at most 128 in magnitude for Q8_0 and 63 for the K-quants, so a sum
 * of four products is at most 4 * 63 * 127 < 2^15), and the float steps are mtp.h's, in its
 * order, so both builds give the scalar kernels' bits. */
#include <string.h>

#include "q6k_x86.h"

#define Q8_INLINE Q8_TARGET __attribute__((always_inline)) static inline

Q8_INLINE int32_t Q8_NAME(hsum_i32)(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* mtp.h's Q8_0 lane tree: ((L0 + L4) + (L2 + L6)) + ((L1 + L5) + (L3 + L7)) */
Q8_INLINE float Q8_NAME(hsum_f32)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* lane b = the sum of P[b]'s eight lanes */
Q8_INLINE __m256i Q8_NAME(tree8)(const __m256i P[8]) {
    __m256i a = _mm256_hadd_epi32(P[0], P[1]), b = _mm256_hadd_epi32(P[2], P[3]);
    __m256i c = _mm256_hadd_epi32(P[4], P[5]), d = _mm256_hadd_epi32(P[6], P[7]);
    __m256i lo = _mm256_hadd_epi32(a, b), hi = _mm256_hadd_epi32(c, d);  /* 128-bit halves: lanes 0-3, 4-7 of P */
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* ---- Q8_0: eight blocks at a time, isum_b in lane b, then t_b = (dw_b * dx_b) * isum_b into L.
 * nblk < 8 only for a row's last group (its missing blocks add t = 0, as mtp.h pads them). */
Q8_INLINE void Q8_NAME(q8_0_group)(const uint8_t *w, const int8_t *q, const float *d, int nt, int64_t k, int64_t g, int nblk,
                                   __m256 L[4]) {
    const int64_t nb = k / 32;
    short h[8] = {0};
    __m256i aw[8], wb[8];  /* the blocks' quants and |w| (u8), shared by the tokens */
#pragma GCC unroll 8
    for (int b = 0; b < 8; b++) {
        if (b < nblk) {
            h[b] = (short)(w[34 * (g + b)] | w[34 * (g + b) + 1] << 8);
            wb[b] = _mm256_loadu_si256((const __m256i *)(w + 34 * (g + b) + 2));
        } else {
            wb[b] = _mm256_setzero_si256();
        }
        aw[b] = _mm256_sign_epi8(wb[b], wb[b]);
    }
    /* the eight f16 scales built in a register (a stack array read back whole stalls the load) */
    const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]));
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = q + t * k + 32 * g;
        __m256i P[8];
#pragma GCC unroll 8
        for (int b = 0; b < 8; b++)  /* |w| times x with w's sign: the products w * x (0 past nblk: w = 0) */
            P[b] = q8_dot4(aw[b], _mm256_sign_epi8(b < nblk ? _mm256_loadu_si256((const __m256i *)(xq + 32 * b)) : wb[b], wb[b]));
        __m256 dx;
        if (nblk == 8) {
            dx = _mm256_loadu_ps(d + t * nb + g);
        } else {
            float pad[8] = {0};
            memcpy(pad, d + t * nb + g, (size_t)nblk * 4);
            dx = _mm256_loadu_ps(pad);
        }
        L[t] = _mm256_add_ps(L[t], _mm256_mul_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(Q8_NAME(tree8)(P))));
    }
}

Q8_INLINE void Q8_NAME(q8_0_rows)(const uint8_t *w, const int8_t *q, const float *d, int nt, int64_t k, float *out, int64_t ldo) {
    const int64_t nb = k / 32;
    __m256 L[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t g = 0;
    for (; g + 8 <= nb; g += 8)
        Q8_NAME(q8_0_group)(w, q, d, nt, k, g, 8, L);
    if (g < nb)
        Q8_NAME(q8_0_group)(w, q, d, nt, k, g, (int)(nb - g), L);
    for (int t = 0; t < nt; t++)
        out[t * ldo] = Q8_NAME(hsum_f32)(L[t]);
}

/* The K-quant kernels take R weight rows against nt tokens in one pass, R * nt <= 8: a super-block's
 * exact integer sums of every (row, token) pair land in lane l = r * nt + t of one vector (tree8),
 * and mtp.h's float steps run on those lanes together, each lane's operations a scalar kernel's. */

/* The f16 pair at byte off of each of the R <= 4 rows' super-blocks, as floats in the lanes of
 * row l / nt: lo the first half, hi the second. */
Q8_INLINE void Q8_NAME(row_halves)(const uint8_t *b, int64_t rb, int R, int nt, int off, __m256 *lo, __m256 *hi) {
    uint32_t u[4] = {0};
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
        memcpy(&u[r], b + r * rb + off, 4);
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]));
    const __m256i row = _mm256_setr_epi32(0, 1 / nt * 2, 2 / nt * 2, 3 / nt * 2, 4 / nt * 2, 5 / nt * 2, 6 / nt * 2, 7 / nt * 2);
    *lo = _mm256_permutevar8x32_ps(f, row);
    *hi = _mm256_permutevar8x32_ps(f, _mm256_add_epi32(row, _mm256_set1_epi32(1)));
}

/* Per super-block i, the tokens' operands by lane: dT[8i + l] = dx of lane l's token (0 past
 * R * nt); for Q4_K / Q5_K (xs not NULL) xs[4i + m] = the int16 sub-block sums of the x of lane
 * m's token (128 bits), then those of lane m + 4's (0 past R * nt): the mins' operands. */
Q8_INLINE void Q8_NAME(lane_tables)(const float *d, const int16_t *s, int R, int nt, int64_t nbk, float *dT, __m256i *xs) {
    for (int64_t i = 0; i < nbk; i++) {
        __m128i X[4];
#pragma GCC unroll 4
        for (int t = 0; t < nt && xs; t++) {  /* pairs of per-16 sums (each |sum| <= 16 * 127) */
            __m256i p = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(s + t * (nbk * 16) + 16 * i)), _mm256_set1_epi16(1));
            X[t] = _mm_packs_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        }
        for (int m = 0; m < 4 && xs; m++)
            _mm256_storeu_si256(xs + 4 * i + m, _mm256_setr_m128i(m < R * nt ? X[m % nt] : _mm_setzero_si128(),
                                                                   m + 4 < R * nt ? X[(m + 4) % nt] : _mm_setzero_si128()));
        for (int l = 0; l < 8; l++)
            dT[8 * i + l] = l < R * nt ? d[(l % nt) * nbk + i] : 0.0f;
    }
}

Q8_INLINE void Q8_NAME(store_lanes)(__m256 acc, int R, int nt, float *out, int64_t ldo) {
    float v[8];
    _mm256_storeu_ps(v, acc);
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nt; t++)
            out[t * ldo + r] = v[r * nt + t];
}

/* A pass of R > 1 rows reads them together, R streams the hardware prefetcher follows poorly: each
 * such pass prefetches, spread over its super-blocks, the rows Q8_PREFETCH bytes on (whole passes) */
#define Q8_PREFETCH 8192
Q8_INLINE const uint8_t *Q8_NAME(ahead)(const uint8_t *b, int64_t pass_bytes) {
    return b + (Q8_PREFETCH + pass_bytes - 1) / pass_bytes * pass_bytes;
}

/* Super-block i of a pass of R rows (lines cache lines over nbk super-blocks): prefetch its share of
 * the rows ahead (passes of R > 1 rows only) and zero the lane accumulators */
Q8_INLINE void Q8_NAME(block_start)(const uint8_t *ahead, int64_t i, int64_t lines, int64_t nbk, int R, __m256i A[8]) {
    for (int64_t c = i * lines / nbk; R > 1 && c < (i + 1) * lines / nbk; c++)
        _mm_prefetch((const char *)(ahead + 64 * c), _MM_HINT_T0);
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++)
        A[l] = _mm256_setzero_si256();
}

/* ---- Q4_K / Q5_K: per sub-block j, the products q_j * x scaled by sc_j into int32 lanes (q8_pair,
 * two sub-blocks at a time); the mins against the tokens' sub-block sums (lane_tables) */
Q8_INLINE void Q8_NAME(k45_rows)(const uint8_t *b, int64_t rb, int R, int q5, const int8_t *q, const float *dT,
                                 const __m256i *xs, int nt, int64_t k, float *out, int64_t ldo) {
    __m256 acc = _mm256_setzero_ps();
    const int64_t nbk = k / 256, lines = R * rb / 64;
    const uint8_t *ahead = Q8_NAME(ahead)(b, R * rb);
    for (int64_t i = 0; i < nbk; i++, b += q5 ? 176 : 144) {
        __m256i A[8];
        __m128i mn16[4];
        Q8_NAME(block_start)(ahead, i, lines, nbk, R, A);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const uint8_t *br = b + r * rb;
            uint64_t sc, mn;
            mtp_kquant_scales_mins(br, &sc, &mn);
            const __m256i scb = _mm256_set1_epi64x((long long)sc);  /* sc_0..sc_7 as bytes in every 8 */
            mn16[r] = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
            const uint8_t *qs = br + (q5 ? 48 : 16);
            const __m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(br + 16)) : _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {  /* sub-blocks 2p, 2p + 1: the low and high nibbles */
                __m256i v0, v1;
                k45_pair(_mm256_loadu_si256((const __m256i *)(qs + 32 * p)), hb, p, q5, &v0, &v1);
                const int8_t a = (int8_t)(2 * p), c = (int8_t)(2 * p + 1);
                const __m256i s0 = _mm256_shuffle_epi8(scb, _mm256_set1_epi16((short)(0x8000 | a)));  /* sc_2p in every int16 */
                const __m256i s1 = _mm256_shuffle_epi8(scb, _mm256_set1_epi16((short)(0x8000 | c)));
                const __m256i s01 = _mm256_shuffle_epi8(scb, _mm256_setr_epi8(a, -1, a, -1, a, -1, a, -1, c, -1, c, -1, c, -1, c, -1,
                                                                              a, -1, a, -1, a, -1, a, -1, c, -1, c, -1, c, -1, c, -1));
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const int8_t *x = q + t * k + 256 * i + 64 * p;
                    A[r * nt + t] = q8_pair(A[r * nt + t], v0, _mm256_loadu_si256((const __m256i *)x), v1,
                                            _mm256_loadu_si256((const __m256i *)(x + 32)), s0, s1, s01);
                }
            }
        }
        /* the mins: lanes 0-3 of M[m] sum to (row, token) pair m's, lanes 4-7 to pair m + 4's */
        __m256i M[4];
#pragma GCC unroll 4
        for (int m = 0; m < 4; m++) {
            __m128i lo = m < R * nt ? mn16[m / nt] : _mm_setzero_si128(), hi = m + 4 < R * nt ? mn16[(m + 4) / nt] : _mm_setzero_si128();
            M[m] = _mm256_madd_epi16(_mm256_setr_m128i(lo, hi), _mm256_loadu_si256(xs + 4 * i + m));
        }
        const __m256i imn32 = _mm256_hadd_epi32(_mm256_hadd_epi32(M[0], M[1]), _mm256_hadd_epi32(M[2], M[3]));
        __m256 dd, dm;
        Q8_NAME(row_halves)(b, rb, R, nt, 0, &dd, &dm);
        const __m256 dx = _mm256_loadu_ps(dT + 8 * i);
        const __m256 isum = _mm256_cvtepi32_ps(Q8_NAME(tree8)(A)), imn = _mm256_cvtepi32_ps(imn32);
        acc = _mm256_add_ps(acc, _mm256_sub_ps(_mm256_mul_ps(_mm256_mul_ps(dd, dx), isum), _mm256_mul_ps(_mm256_mul_ps(dm, dx), imn)));
    }
    Q8_NAME(store_lanes)(acc, R, nt, out, ldo);
}

/* ---- Q6_K: unsigned quants (0..63) times x, scaled per 16 values; then minus 32 * sc_g * (sum of
 * the group's x) */
Q8_INLINE void Q8_NAME(q6_k_rows)(const uint8_t *b, int64_t rb, int R, const int8_t *q, const float *dT, const int16_t *s,
                                  const __m256i *xs, int nt, int64_t k, float *out, int64_t ldo) {
    (void)xs;
    const __m256i nib = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), zero = _mm256_setzero_si256();
    __m256 acc = _mm256_setzero_ps();
    const int64_t nbk = k / 256, lines = R * rb / 64;
    const uint8_t *ahead = Q8_NAME(ahead)(b, R * rb);
    for (int64_t i = 0; i < nbk; i++, b += 210) {
        __m256i A[8];
        Q8_NAME(block_start)(ahead, i, lines, nbk, R, A);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const uint8_t *br = b + r * rb;
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(br + 192)));
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256i qh = _mm256_loadu_si256((const __m256i *)(br + 128 + 32 * h));
                /* the half's eight int16 scales in both 128-bit lanes */
                const __m256i sch = _mm256_permute2x128_si256(sc16, sc16, h ? 0x11 : 0x00);
#pragma GCC unroll 2
                for (int g = 0; g < 4; g += 2) {  /* groups g, g + 1 */
                    const __m256i v0 = q6_k_group(br, h, g, qh, nib, top, zero), v1 = q6_k_group(br, h, g + 1, qh, nib, top, zero);
                    /* as bytes of sch: scale 2g for values 0..15 of group g (the low 128 bits), 2g + 1 for 16..31 */
                    const int8_t a = (int8_t)(4 * g), c = (int8_t)(4 * g + 2), e = (int8_t)(4 * g + 4), f = (int8_t)(4 * g + 6);
                    const __m256i s0 = _mm256_shuffle_epi8(sch, _mm256_setr_epi8(a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1, a, a + 1,
                                                                                 c, c + 1, c, c + 1, c, c + 1, c, c + 1, c, c + 1, c, c + 1, c, c + 1, c, c + 1));
                    const __m256i s1 = _mm256_shuffle_epi8(sch, _mm256_setr_epi8(e, e + 1, e, e + 1, e, e + 1, e, e + 1, e, e + 1, e, e + 1, e, e + 1, e, e + 1,
                                                                                 f, f + 1, f, f + 1, f, f + 1, f, f + 1, f, f + 1, f, f + 1, f, f + 1, f, f + 1));
                    const __m256i s01 = _mm256_shuffle_epi8(sch, _mm256_setr_epi8(a, a + 1, a, a + 1, a, a + 1, a, a + 1, e, e + 1, e, e + 1, e, e + 1, e, e + 1,
                                                                                  c, c + 1, c, c + 1, c, c + 1, c, c + 1, f, f + 1, f, f + 1, f, f + 1, f, f + 1));
#pragma GCC unroll 4
                    for (int t = 0; t < nt; t++) {
                        const int8_t *x = q + t * k + 256 * i + 128 * h + 32 * g;
                        A[r * nt + t] = q8_pair(A[r * nt + t], v0, _mm256_loadu_si256((const __m256i *)x), v1,
                                                _mm256_loadu_si256((const __m256i *)(x + 32)), s0, s1, s01);
                    }
                }
            }
            const __m256i sc32 = _mm256_slli_epi16(sc16, 5);  /* 32 * sc_g, |32 * sc_g| <= 4096 */
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) {
                __m256i S = _mm256_loadu_si256((const __m256i *)(s + t * (k / 16) + 16 * i));
                A[r * nt + t] = _mm256_sub_epi32(A[r * nt + t], _mm256_madd_epi16(S, sc32));
            }
        }
        __m256 dd, unused;
        Q8_NAME(row_halves)(b, rb, R, nt, 208, &dd, &unused);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(dd, _mm256_loadu_ps(dT + 8 * i)), _mm256_cvtepi32_ps(Q8_NAME(tree8)(A))));
    }
    Q8_NAME(store_lanes)(acc, R, nt, out, ldo);
}

Q8_INLINE void Q8_NAME(q8_0_rows_s)(const uint8_t *b, const int8_t *q, const float *d, const int16_t *s, int nt, int64_t k, float *out, int64_t ldo) {
    (void)s;
    Q8_NAME(q8_0_rows)(b, q, d, nt, k, out, ldo);
}

#define Q8_QDOT(name, rows) MTP_QDOT_ROWS(Q8_TARGET, name, rows)

/* K-quants: R rows per pass, the last few one at a time. Measured: Q4_K / Q5_K gain from two rows
 * (two rows' lanes share one tail), not from more (the reads come slower); Q6_K reads fastest one row
 * at a time, in one stream. */
#define Q8_KPASS(rows, NT, R)                                                                                          \
    {                                                                                                                  \
        int64_t r = 0;                                                                                                 \
        Q8_NAME(lane_tables)(d, s, R, NT, k / 256, dT, xs);                                                            \
        for (; r + R <= nr; r += R)                                                                                    \
            rows(b + r * rb, rb, R, q, dT, s, xs, NT, k, out + r, ldo);                                                \
        if (r < nr)                                                                                                    \
            Q8_NAME(lane_tables)(d, s, 1, NT, k / 256, dT, xs);                                                        \
        for (; r < nr; r++)                                                                                            \
            rows(b + r * rb, rb, 1, q, dT, s, xs, NT, k, out + r, ldo);                                                \
    }

#define Q8_QDOT_K(name, rows, mins, R)                                                                                 \
    Q8_TARGET static void name(const void *w, int64_t rb, int64_t nr, const int8_t *q, const float *d, const int16_t *s, \
                               int nt, int64_t k, float *out, int64_t ldo) {                                          \
        const uint8_t *b = w;                                                                                          \
        float dT[8 * (k / 256)];                                                                                       \
        __m256i mins_xs[mins ? 4 * (k / 256) : 1], *xs = mins ? mins_xs : NULL;                                        \
        switch (nt) {                                                                                                  \
        case 4: Q8_KPASS(rows, 4, R) break;                                                                            \
        case 3: Q8_KPASS(rows, 3, R) break;                                                                            \
        case 2: Q8_KPASS(rows, 2, R) break;                                                                            \
        default: Q8_KPASS(rows, 1, R)                                                                                  \
        }                                                                                                              \
    }

Q8_INLINE void Q8_NAME(q4_k_rows)(const uint8_t *b, int64_t rb, int R, const int8_t *q, const float *dT, const int16_t *s,
                                  const __m256i *xs, int nt, int64_t k, float *out, int64_t ldo) {
    (void)s;
    Q8_NAME(k45_rows)(b, rb, R, 0, q, dT, xs, nt, k, out, ldo);
}

Q8_INLINE void Q8_NAME(q5_k_rows)(const uint8_t *b, int64_t rb, int R, const int8_t *q, const float *dT, const int16_t *s,
                                  const __m256i *xs, int nt, int64_t k, float *out, int64_t ldo) {
    (void)s;
    Q8_NAME(k45_rows)(b, rb, R, 1, q, dT, xs, nt, k, out, ldo);
}

Q8_QDOT(Q8_NAME(qdot_q8_0), Q8_NAME(q8_0_rows_s))
Q8_QDOT_K(Q8_NAME(qdot_q4_k), Q8_NAME(q4_k_rows), 1, 2)
Q8_QDOT_K(Q8_NAME(qdot_q5_k), Q8_NAME(q5_k_rows), 1, 2)
Q8_QDOT_K(Q8_NAME(qdot_q6_k), Q8_NAME(q6_k_rows), 0, 1)

/* the build's kernels into the table */
Q8_TARGET static void Q8_NAME(install)(mtp_kernels *kt) {
    kt->qdot[T_Q8_0] = Q8_NAME(qdot_q8_0);
    kt->qdot[T_Q4_K] = Q8_NAME(qdot_q4_k);
    kt->qdot[T_Q5_K] = Q8_NAME(qdot_q5_k);
    kt->qdot[T_Q6_K] = Q8_NAME(qdot_q6_k);
}
