/* AVX-512 twins of the AVX2 fused Q6_K and Q8_0 kernels and of dotn, bit-identical to them: each 16-lane
 * accumulator holds two of AVX2's 8-lane ones (values 8c..8c+7 and 8c+8..8c+15 of each 32), so every
 * lane takes the same products in the same order, and the final sums are AVX2's. Measured on Zen 4
 * (512-bit operations run as two 256-bit halves): 3 to 4 tokens per row ~30% faster, where 32
 * registers hold every accumulator; 1 or 2 tokens no faster, so those stay on the AVX2 kernels. */
#include "mtp.h"

#if defined(MTP_X86)
#include "q6k_x86.h"

#define MTP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

MTP_AVX512 static inline float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

/* AVX2's four accumulators s0..s3 as two: lo = s0 | s1, hi = s2 | s3; summed as dotn_avx2 sums them */
MTP_AVX512 static inline float finish16(__m512 lo, __m512 hi) {
    __m256 s01 = _mm256_add_ps(_mm512_castps512_ps256(lo), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(lo), 1)));
    __m256 s23 = _mm256_add_ps(_mm512_castps512_ps256(hi), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(hi), 1)));
    __m256 v = _mm256_add_ps(s01, s23);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 32 decoded weights w[0..1] (16 each) into every token's accumulators; x at token 0's 32 values */
#define ACC32X(s, w, x, ldx, nt)                                                              \
    for (int t_ = 0; t_ < (nt); t_++)                                                          \
        for (int c_ = 0; c_ < 2; c_++)                                                         \
            (s)[t_][c_] = _mm512_fmadd_ps((w)[c_], _mm512_loadu_ps((x) + t_ * (ldx) + 16 * c_), (s)[t_][c_]);

/* Q6_K: the AVX2 kernel's 32 int8 values per group; values 0..15 take scale 2g, 16..31 scale 2g + 1 */
MTP_AVX512 __attribute__((always_inline)) static inline void q6_k_rows16(const uint8_t *b, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    const __m256i nib = _mm256_set1_epi8(0xf), top = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    __m512 s[4][2];
    for (int t = 0; t < nt; t++)
        s[t][0] = s[t][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k / 256; i++, b += 210) {
        __m512 d = _mm512_set1_ps(half_at(b + 208));
        float sf[16];
        _mm512_storeu_ps(sf, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 192))))));
        for (int h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            for (int g = 0; g < 4; g++, x += 32) {
                __m256i q = q6_k_group(b, h, g, qh, nib, top, off);
                __m512 w[2] = {
                    _mm512_mul_ps(_mm512_set1_ps(sf[8 * h + 2 * g]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)))),
                    _mm512_mul_ps(_mm512_set1_ps(sf[8 * h + 2 * g + 1]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1))))};
                ACC32X(s, w, x, ldx, nt)
            }
        }
    }
    for (int t = 0; t < nt; t++)
        out[t * ldo] = finish16(s[t][0], s[t][1]);
}

MTP_AVX512 __attribute__((always_inline)) static inline void q8_0_rows16(const uint8_t *b, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    __m512 s[4][2];
    for (int t = 0; t < nt; t++)
        s[t][0] = s[t][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k / 32; i++, b += 34, x += 32) {
        __m512 d = _mm512_set1_ps(half_at(b));
        __m512 w[2] = {_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))))),
                       _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))))};
        ACC32X(s, w, x, ldx, nt)
    }
    for (int t = 0; t < nt; t++)
        out[t * ldo] = finish16(s[t][0], s[t][1]);
}

/* Two decoded rows (ldw apart) against nt = 1..4 tokens, k a multiple of 32: dotn_avx2's products and
 * sums for each (row, token), with 32 registers holding all 16 accumulators, so that each weight and
 * token load feeds two or more FMAs (dotn_avx2, one row against three tokens in AVX2's 16 registers,
 * waits on its loads) */
MTP_AVX512 __attribute__((always_inline)) static inline void dot2_rows16(const float *w, int64_t ldw, const float *x, int64_t ldx, int nt,
                                                                        int64_t k, float *out, int64_t ldo) {
    __m512 s[2][4][2];
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < nt; t++)
            s[r][t][0] = s[r][t][1] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 32) {
        const __m512 w0[2] = {_mm512_loadu_ps(w + i), _mm512_loadu_ps(w + i + 16)};
        const __m512 w1[2] = {_mm512_loadu_ps(w + ldw + i), _mm512_loadu_ps(w + ldw + i + 16)};
        ACC32X(s[0], w0, x + i, ldx, nt)
        ACC32X(s[1], w1, x + i, ldx, nt)
    }
    for (int r = 0; r < 2; r++)
        for (int t = 0; t < nt; t++)
            out[t * ldo + r] = finish16(s[r][t][0], s[r][t][1]);
}

MTP_AVX512 static void dotn2_avx512(const float *w, int64_t ldw, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    switch (nt) {
    case 4: dot2_rows16(w, ldw, x, ldx, 4, k, out, ldo); break;
    case 3: dot2_rows16(w, ldw, x, ldx, 3, k, out, ldo); break;
    case 2: dot2_rows16(w, ldw, x, ldx, 2, k, out, ldo); break;
    default: dot2_rows16(w, ldw, x, ldx, 1, k, out, ldo);
    }
}

static mtp_vdot_fn avx2_q6_k, avx2_q8_0;  /* the AVX2 kernels, for one or two tokens */

/* nr weight rows against nt = 1..4 token rows (mtp_vdot_fn), a constant nt per loop */
#define VDOT16(name, rows, avx2)                                                                                      \
    MTP_AVX512 static void name(const void *w, int64_t rb, int64_t nr, const float *x, int64_t ldx, const float *X,   \
                                int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {                            \
        const uint8_t *b = w;                                                                                         \
        if (nt == 4)                                                                                                  \
            for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, 4, k, out + r, ldo);                            \
        else if (nt == 3)                                                                                             \
            for (int64_t r = 0; r < nr; r++) rows(b + r * rb, x, ldx, 3, k, out + r, ldo);                            \
        else                                                                                                          \
            avx2(w, rb, nr, x, ldx, X, ldX, nt, k, out, ldo);                                                         \
    }

VDOT16(vdot_q6_k, q6_k_rows16, avx2_q6_k)
VDOT16(vdot_q8_0, q8_0_rows16, avx2_q8_0)

int mtp_kernels_avx512(mtp_kernels *kt) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl") ||
        !kt->vdot[T_Q6_K] || !kt->vdot[T_Q8_0])
        return 0;
    avx2_q6_k = kt->vdot[T_Q6_K];
    avx2_q8_0 = kt->vdot[T_Q8_0];
    kt->vdot[T_Q6_K] = vdot_q6_k;
    kt->vdot[T_Q8_0] = vdot_q8_0;
    kt->dotn2 = dotn2_avx512;
    mtp_q8_vnni(kt);  /* where the CPU has VNNI; else the AVX2 q8 kernels stay (the same bits) */
    return 1;
}

#else
int mtp_kernels_avx512(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
