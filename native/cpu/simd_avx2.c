/* AVX2 + FMA + F16C variants of the row decoders and the dot product. Each decoder computes the
 * same float32 products and sums as its scalar twin in quants.c (multiply, then add or subtract the
 * offset, never fused), so decoded weights are bit-identical on every path. */
#include <math.h>

#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>
#include <string.h>

/* F16C converts halves exactly, subnormals included. */
MTP_AVX2 static inline float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

/* 8 bytes -> 8 int32 lanes */
MTP_AVX2 static inline __m256i u8x8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

MTP_AVX2 static inline void store_scaled(float *dst, __m256i q, __m256 d) {
    _mm256_storeu_ps(dst, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
}

MTP_AVX2 static inline void store_affine(float *dst, __m256i q, __m256 d, __m256 m, int subtract) {
    __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
    _mm256_storeu_ps(dst, subtract ? _mm256_sub_ps(v, m) : _mm256_add_ps(v, m));
}

MTP_AVX2 static void deq_f16(const void *src, float *dst, int64_t k) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
    for (; i < k; i++)
        dst[i] = half_at(p + 2 * i);
}

MTP_AVX2 static void deq_bf16(const void *src, float *dst, int64_t k) {
    const uint16_t *p = src;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < k; i++) {
        uint32_t bits = (uint32_t)p[i] << 16;
        memcpy(&dst[i], &bits, 4);
    }
}

MTP_AVX2 static void deq_q8_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 34, dst += 32) {
        __m256 d = _mm256_set1_ps(half_at(b));
        for (int c = 0; c < 4; c++)
            store_scaled(dst + 8 * c, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * c))), d);
    }
}

/* Q4_0 / Q4_1: byte j holds value j (low nibble) and value j + 16 (high nibble). */
MTP_AVX2 static void deq_q4_x(const uint8_t *qs, float *dst, __m256 d, __m256 m, int has_min) {
    const __m256i mask = _mm256_set1_epi32(0xf), eight = _mm256_set1_epi32(8);
    for (int c = 0; c < 2; c++) {
        __m256i q = u8x8(qs + 8 * c);
        __m256i lo = _mm256_and_si256(q, mask), hi = _mm256_srli_epi32(q, 4);
        if (has_min) {
            store_affine(dst + 8 * c, lo, d, m, 0);
            store_affine(dst + 16 + 8 * c, hi, d, m, 0);
        } else {
            store_scaled(dst + 8 * c, _mm256_sub_epi32(lo, eight), d);
            store_scaled(dst + 16 + 8 * c, _mm256_sub_epi32(hi, eight), d);
        }
    }
}

MTP_AVX2 static void deq_q4_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 18, dst += 32)
        deq_q4_x(b + 2, dst, _mm256_set1_ps(half_at(b)), _mm256_setzero_ps(), 0);
}

MTP_AVX2 static void deq_q4_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 20, dst += 32)
        deq_q4_x(b + 4, dst, _mm256_set1_ps(half_at(b)), _mm256_set1_ps(half_at(b + 2)), 1);
}

/* Q5_0 / Q5_1: as Q4, plus bit j of the 32-bit qh as value j's fifth bit. */
MTP_AVX2 static void deq_q5_x(const uint8_t *qhp, const uint8_t *qs, float *dst, __m256 d, __m256 m, int has_min) {
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    const __m256i mask = _mm256_set1_epi32(0xf), one = _mm256_set1_epi32(1), sixteen = _mm256_set1_epi32(16);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), bits = _mm256_set1_epi32((int)qh);
    for (int c = 0; c < 2; c++) {
        __m256i q = u8x8(qs + 8 * c);
        __m256i hlo = _mm256_and_si256(_mm256_srlv_epi32(bits, _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * c))), one);
        __m256i hhi = _mm256_and_si256(_mm256_srlv_epi32(bits, _mm256_add_epi32(lanes, _mm256_set1_epi32(16 + 8 * c))), one);
        __m256i lo = _mm256_or_si256(_mm256_and_si256(q, mask), _mm256_slli_epi32(hlo, 4));
        __m256i hi = _mm256_or_si256(_mm256_srli_epi32(q, 4), _mm256_slli_epi32(hhi, 4));
        if (has_min) {
            store_affine(dst + 8 * c, lo, d, m, 0);
            store_affine(dst + 16 + 8 * c, hi, d, m, 0);
        } else {
            store_scaled(dst + 8 * c, _mm256_sub_epi32(lo, sixteen), d);
            store_scaled(dst + 16 + 8 * c, _mm256_sub_epi32(hi, sixteen), d);
        }
    }
}

MTP_AVX2 static void deq_q5_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 22, dst += 32)
        deq_q5_x(b + 2, b + 6, dst, _mm256_set1_ps(half_at(b)), _mm256_setzero_ps(), 0);
}

MTP_AVX2 static void deq_q5_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 24, dst += 32)
        deq_q5_x(b + 4, b + 8, dst, _mm256_set1_ps(half_at(b)), _mm256_set1_ps(half_at(b + 2)), 1);
}

/* 32 bytes of small unsigned (or, with is_signed, int8) values -> 32 floats d * q - m (or d * q),
 * with the scale switching after value 16 (Q6_K's 16-value groups). */
MTP_AVX2 static inline void emit32(float *dst, __m256i v, int is_signed, __m256 d0, __m256 d1, __m256 m, int has_min) {
    __m128i half[2] = {_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)};
    for (int c = 0; c < 4; c++) {
        __m128i bytes = c % 2 ? _mm_srli_si128(half[c / 2], 8) : half[c / 2];
        __m256 f = _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes));
        f = _mm256_mul_ps(c < 2 ? d0 : d1, f);
        _mm256_storeu_ps(dst + 8 * c, has_min ? _mm256_sub_ps(f, m) : f);
    }
}

/* Q4_K / Q5_K super-block: sub-block j reads nibble j % 2 of the 32 bytes at 32 * (j / 2), and
 * (Q5_K) bit j of each of the 32 qh bytes. */
MTP_AVX2 static inline void deq_k45(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *dst) {
    float d = half_at(b), dmin = half_at(b + 2);
    const __m256i nib = _mm256_set1_epi8(0xf), one = _mm256_set1_epi8(1);
    __m256i hb = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int j = 0; j < 8; j++, dst += 32) {
        int sc, mn;
        mtp_kquant_scale_min(b + 4, j, &sc, &mn);
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * (j / 2)));
        q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, nib);
        if (qh)
            q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(j)), one), 4));
        __m256 ds = _mm256_set1_ps(d * (float)sc);
        emit32(dst, q, 0, ds, ds, _mm256_set1_ps(dmin * (float)mn), 1);
    }
}

MTP_AVX2 static void deq_q4_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 256; i++, b += 144, dst += 256)
        deq_k45(b, NULL, b + 16, dst);
}

MTP_AVX2 static void deq_q5_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 256; i++, b += 176, dst += 256)
        deq_k45(b, b + 16, b + 48, dst);
}

/* Q6_K: per half of 128 values, 32-value group g takes nibble g / 2 of ql bytes 32 * (g % 2) ..
 * and bits 2 * g of the 32 qh bytes; int8 scales per 16 values. */
MTP_AVX2 static void deq_q6_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    const __m256i nib = _mm256_set1_epi8(0xf), three = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < k / 256; i++, b += 210) {
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = half_at(b + 208);
        for (int h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            for (int g = 0; g < 4; g++, dst += 32) {
                __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32 * (g % 2)));
                __m256i lo = _mm256_and_si256(g / 2 ? _mm256_srli_epi16(ql, 4) : ql, nib);
                __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), three);
                __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), off);
                const int8_t *s = sc + 8 * h + 2 * g;
                emit32(dst, q, 1, _mm256_set1_ps(d * (float)s[0]), _mm256_set1_ps(d * (float)s[1]), _mm256_setzero_ps(), 0);
            }
        }
    }
}

MTP_AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One float row against nt token rows: per token, four 8-lane FMA accumulators (values 8c..8c+7
 * of each 32 into accumulator c), then 8-lane steps, then a scalar tail: a fixed order for each k,
 * so a token's result is the same whatever nt. */
MTP_AVX2 __attribute__((always_inline)) static inline void dot_rows(const float *a, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    __m256 s[4][4];
    for (int t = 0; t < nt; t++)
        for (int c = 0; c < 4; c++)
            s[t][c] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32)
        for (int c = 0; c < 4; c++) {
            __m256 w = _mm256_loadu_ps(a + i + 8 * c);
            for (int t = 0; t < nt; t++)
                s[t][c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * ldx + i + 8 * c), s[t][c]);
        }
    for (; i + 8 <= k; i += 8) {
        __m256 w = _mm256_loadu_ps(a + i);
        for (int t = 0; t < nt; t++)
            s[t][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * ldx + i), s[t][0]);
    }
    for (int t = 0; t < nt; t++) {
        float r = hsum(_mm256_add_ps(_mm256_add_ps(s[t][0], s[t][1]), _mm256_add_ps(s[t][2], s[t][3])));
        for (int64_t l = i; l < k; l++)
            r += a[l] * x[t * ldx + l];
        out[t * ldo] = r;
    }
}

MTP_AVX2 static float dot_avx2(const float *a, const float *b, int64_t k) {
    float r;
    dot_rows(a, b, 0, 1, k, &r, 0);
    return r;
}

/* A constant nt per call keeps the accumulators in registers. */
MTP_AVX2 static void dotn_avx2(const float *w, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    switch (nt) {
    case 4: dot_rows(w, x, ldx, 4, k, out, ldo); break;
    case 3: dot_rows(w, x, ldx, 3, k, out, ldo); break;
    case 2: dot_rows(w, x, ldx, 2, k, out, ldo); break;
    default: dot_rows(w, x, ldx, 1, k, out, ldo);
    }
}

MTP_AVX2 static void sums_avx2(const float *x, int64_t k, float *X) {
    for (int64_t b = 0; b < k / 32; b++, x += 32)
        X[b] = hsum(_mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                                  _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24))));
}

/* lane j = the sum of P[j]'s lanes, as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) */
MTP_AVX2 static inline __m256 tree8_ps(const __m256 P[8]) {
    __m256 ab = _mm256_hadd_ps(_mm256_hadd_ps(P[0], P[1]), _mm256_hadd_ps(P[2], P[3]));
    __m256 cd = _mm256_hadd_ps(_mm256_hadd_ps(P[4], P[5]), _mm256_hadd_ps(P[6], P[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20), _mm256_permute2f128_ps(ab, cd, 0x31));
}

/* The scores of a query at positions t0..t0+7 (rows kr), scaled: each key's 8-lane FMA chain over d, then tree8_ps */
MTP_AVX2 __attribute__((always_inline)) static inline __m256 scores8(const float *q, const float *const kr[8], int64_t d, __m256 scale) {
    __m256 acc[8];
    for (int j = 0; j < 8; j++)
        acc[j] = _mm256_setzero_ps();
    for (int64_t e = 0; e < d; e += 8) {
        const __m256 qv = _mm256_loadu_ps(q + e);
        for (int j = 0; j < 8; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(kr[j] + e), qv, acc[j]);
    }
    return _mm256_mul_ps(tree8_ps(acc), scale);
}

/* A query's softmax weights in place over its p scores: the max, exp through mtp_exp (vectorised by the
 * compiler), the sum in 8 lanes, then each divided by it */
MTP_AVX2 static void softmax_weights(float *sc, int64_t p) {
    const int64_t whole = p / 8 * 8;
    __m256 mx = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
    for (int64_t t = 0; t < whole; t += 8)
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(sc + t));
    float m8[8];
    _mm256_storeu_ps(m8, mx);
    float m = m8[0];
    for (int l = 1; l < 8; l++)
        m = m8[l] > m ? m8[l] : m;
    for (int64_t t = whole; t < p; t++)
        m = sc[t] > m ? sc[t] : m;
    for (int64_t t = 0; t < p; t++)
        sc[t] = mtp_exp(sc[t] - m);
    for (int64_t t = 0; t < whole; t += 8)
        sum = _mm256_add_ps(sum, _mm256_loadu_ps(sc + t));
    float total = hsum(sum);
    for (int64_t t = whole; t < p; t++)
        total += sc[t];
    const __m256 tv = _mm256_set1_ps(total);
    for (int64_t t = 0; t < whole; t += 8)
        _mm256_storeu_ps(sc + t, _mm256_div_ps(_mm256_loadu_ps(sc + t), tv));
    for (int64_t t = whole; t < p; t++)
        sc[t] = sc[t] / total;
}

/* out[c][e ..] (8 * chunks values) = sum over t < p[c] of w[c * width + t] * v[t * row ..], in order of t
 * (FMA), for `pair` (1 or 2) queries: the value rows' loads shared while both reach them */
MTP_AVX2 __attribute__((always_inline)) static inline void mix_pair(const float *w, int64_t width, const int64_t *p, int pair,
                                                                   const float *v, int64_t row, const int chunks, float *const *out,
                                                                   int64_t e) {
    const int64_t both = pair == 2 && p[1] < p[0] ? p[1] : p[0];
    __m256 o[2][4];
    for (int c = 0; c < 2; c++)
        for (int x = 0; x < chunks; x++)
            o[c][x] = _mm256_setzero_ps();
    for (int64_t t = 0; t < both; t++) {
        __m256 vv[4];
        for (int x = 0; x < chunks; x++)
            vv[x] = _mm256_loadu_ps(v + t * row + 8 * x);
        for (int c = 0; c < pair; c++) {
            const __m256 wt = _mm256_broadcast_ss(w + c * width + t);
            for (int x = 0; x < chunks; x++)
                o[c][x] = _mm256_fmadd_ps(wt, vv[x], o[c][x]);
        }
    }
    for (int c = 0; c < pair; c++) {
        for (int64_t t = both; t < p[c]; t++) {
            const __m256 wt = _mm256_broadcast_ss(w + c * width + t);
            for (int x = 0; x < chunks; x++)
                o[c][x] = _mm256_fmadd_ps(wt, _mm256_loadu_ps(v + t * row + 8 * x), o[c][x]);
        }
        for (int x = 0; x < chunks; x++)
            _mm256_storeu_ps(out[c] + e + 8 * x, o[c][x]);
    }
}

/* mtp_attend_fn for d a multiple of 8 (else key by key). Scores eight positions at a time (past a
 * query's p they read position p - 1 again and are never used); then each query's weighted sum of the
 * value rows, in order of t (FMA). */
MTP_AVX2 static void attend_avx2(const float *const *q, float *const *out, const int64_t *p, int nq, const float *k, const float *v,
                                 int64_t row, int64_t d, float scale, float *scores, int64_t width) {
    if (d % 8) {
        mtp_attend_rows(q, out, p, nq, k, v, row, d, scale, scores, width);
        return;
    }
    int64_t reach = 0;
    for (int c = 0; c < nq; c++)
        reach = p[c] > reach ? p[c] : reach;
    const __m256 sv = _mm256_set1_ps(scale);
    for (int64_t t0 = 0; t0 < reach; t0 += 8) {
        const float *kr[8];
        for (int j = 0; j < 8; j++)
            kr[j] = k + (t0 + j < reach ? t0 + j : reach - 1) * row;
        for (int c = 0; c < nq; c++)
            if (t0 < p[c])
                _mm256_storeu_ps(scores + c * width + t0, scores8(q[c], kr, d, sv));
    }
    for (int c = 0; c < nq; c++)
        softmax_weights(scores + c * width, p[c]);
    /* 32 values of d at a time (whole cache lines of each value row) for two queries at a time: eight
     * accumulators in registers, each row's four loads shared by the pair */
    for (int c0 = 0; c0 < nq; c0 += 2)
        for (int64_t e = 0; e < d; e += d % 32 ? 8 : 32) {
            if (d % 32)
                mix_pair(scores + c0 * width, width, p + c0, nq - c0 < 2 ? 1 : 2, v + e, row, 1, out + c0, e);
            else
                mix_pair(scores + c0 * width, width, p + c0, nq - c0 < 2 ? 1 : 2, v + e, row, 4, out + c0, e);
        }
}

int mtp_kernels_avx2(mtp_kernels *kt) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c"))
        return 0;
    MTP_SET_DEQUANT(kt);
    kt->dot = dot_avx2;
    kt->dotn = dotn_avx2;
    kt->sums = sums_avx2;
    kt->attend = attend_avx2;
    mtp_fused_avx2(kt);  /* bit-identical to deq_* + dotn_avx2 above, or to split + its kdot */
    mtp_q8_avx2(kt);     /* bit-identical to the scalar q8 kernels */
    return 1;
}

#else
int mtp_kernels_avx2(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
