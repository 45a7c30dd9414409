/* Fused decode-and-dot (AVX2) for the few-token matrix products (decode, verify): each weight row is
 * decoded into registers and multiplied into the token rows at once, never stored as floats.
 *
 * Bit-identical to dot_avx2(decoded row, x): every 32 decoded values are the decoder's (same
 * products and offsets, never fused), taken into the same four 8-lane FMA accumulators in the same
 * order (values 8c..8c+7 of each 32 into accumulator c), then summed as dot_avx2 sums them. So a
 * token's result is the same whether it is computed here, one to four tokens at a time, or by the
 * tiled path of a large batch. */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

MTP_AVX2 static inline float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

MTP_AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* nt token rows (x, x + ldx, ...), four accumulators each */
typedef struct {
    __m256 s[4][4];
} acc2;

/* Multiply 32 decoded weights w[0..3] (8 each) into every token's accumulators; x points at the
 * first of the 32 matching activations of token 0. */
#define ACC32(a, w, x, ldx, nt)                                                          \
    for (int t_ = 0; t_ < (nt); t_++)                                                    \
        for (int c_ = 0; c_ < 4; c_++)                                                   \
            (a).s[t_][c_] = _mm256_fmadd_ps((w)[c_], _mm256_loadu_ps((x) + t_ * (ldx) + 8 * c_), (a).s[t_][c_]);

MTP_AVX2 static inline void finish(acc2 *a, int nt, float *out, int64_t ldo) {
    for (int t = 0; t < nt; t++)
        out[t * ldo] = hsum(_mm256_add_ps(_mm256_add_ps(a->s[t][0], a->s[t][1]), _mm256_add_ps(a->s[t][2], a->s[t][3])));
}

MTP_AVX2 static inline void zero(acc2 *a) {
    for (int t = 0; t < 4; t++)
        for (int c = 0; c < 4; c++)
            a->s[t][c] = _mm256_setzero_ps();
}

/* bytes 8c..8c+7 of a 32-byte vector, widened to 8 int32 lanes (unsigned or signed) */
MTP_AVX2 static inline __m256i widen(__m256i v, int c, int is_signed) {
    __m128i h = c < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    if (c % 2)
        h = _mm_srli_si128(h, 8);
    return is_signed ? _mm256_cvtepi8_epi32(h) : _mm256_cvtepu8_epi32(h);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q4_k_rows(const uint8_t *b, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    const __m256i nib = _mm256_set1_epi8(0xf);
    acc2 a;
    zero(&a);
    for (int64_t i = 0; i < k / 256; i++, b += 144) {
        float d = half_at(b), dmin = half_at(b + 2);
        for (int j = 0; j < 8; j++, x += 32) {
            int sc, mn;
            mtp_kquant_scale_min(b + 4, j, &sc, &mn);
            __m256 ds = _mm256_set1_ps(d * (float)sc), dm = _mm256_set1_ps(dmin * (float)mn), w[4];
            __m256i q = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (j / 2)));
            q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, nib);
            for (int c = 0; c < 4; c++)
                w[c] = _mm256_sub_ps(_mm256_mul_ps(ds, _mm256_cvtepi32_ps(widen(q, c, 0))), dm);
            ACC32(a, w, x, ldx, nt)
        }
    }
    finish(&a, nt, out, ldo);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q6_k_rows(const uint8_t *b, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    const __m256i nib = _mm256_set1_epi8(0xf), three = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    acc2 a;
    zero(&a);
    for (int64_t i = 0; i < k / 256; i++, b += 210) {
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = half_at(b + 208);
        for (int h = 0; h < 2; h++) {
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            for (int g = 0; g < 4; g++, x += 32) {
                __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32 * (g % 2)));
                __m256i lo = _mm256_and_si256(g / 2 ? _mm256_srli_epi16(ql, 4) : ql, nib);
                __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), three);
                __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), off);
                const int8_t *s = sc + 8 * h + 2 * g;
                __m256 d0 = _mm256_set1_ps(d * (float)s[0]), d1 = _mm256_set1_ps(d * (float)s[1]), w[4];
                for (int c = 0; c < 4; c++)
                    w[c] = _mm256_mul_ps(c < 2 ? d0 : d1, _mm256_cvtepi32_ps(widen(q, c, 1)));
                ACC32(a, w, x, ldx, nt)
            }
        }
    }
    finish(&a, nt, out, ldo);
}

MTP_AVX2 __attribute__((always_inline)) static inline void q8_0_rows(const uint8_t *b, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    acc2 a;
    zero(&a);
    for (int64_t i = 0; i < k / 32; i++, b += 34, x += 32) {
        __m256 d = _mm256_set1_ps(half_at(b)), w[4];
        for (int c = 0; c < 4; c++)
            w[c] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * c)))));
        ACC32(a, w, x, ldx, nt)
    }
    finish(&a, nt, out, ldo);
}

/* One weight row against nt = 1..4 token rows; a constant nt per variant lets the compiler keep
 * the accumulators in registers (up to two tokens; more spill a few, still cheaper than decoding
 * the row again). */
#define VDOT(name, rows)                                                                                          \
    MTP_AVX2 static void name(const void *w, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) { \
        switch (nt) {                                                                                             \
        case 4: rows(w, x, ldx, 4, k, out, ldo); break;                                                           \
        case 3: rows(w, x, ldx, 3, k, out, ldo); break;                                                           \
        case 2: rows(w, x, ldx, 2, k, out, ldo); break;                                                           \
        default: rows(w, x, ldx, 1, k, out, ldo);                                                                 \
        }                                                                                                         \
    }

VDOT(vdot_q4_k, q4_k_rows)
VDOT(vdot_q6_k, q6_k_rows)
VDOT(vdot_q8_0, q8_0_rows)

void mtp_fused_avx2(mtp_kernels *kt) {
    kt->vdot[T_Q4_K] = vdot_q4_k;
    kt->vdot[T_Q6_K] = vdot_q6_k;
    kt->vdot[T_Q8_0] = vdot_q8_0;
}

#else
void mtp_fused_avx2(mtp_kernels *kt) { (void)kt; }
#endif
