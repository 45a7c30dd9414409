/* Quantized activations on AVX2: the row quantizer, and the int8-activation products (q8_x86.h)
 * with maddubs + madd, bit-identical to the scalar kernels in q8.c. */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

#define Q8_TARGET MTP_AVX2
#define Q8_NAME(x) x##_avx2
#define q8_dot4(a, b) _mm256_madd_epi16(_mm256_maddubs_epi16((a), (b)), _mm256_set1_epi16(1))
#define q8_pair(c, v0, x0, v1, x1, s0, s1, s01) \
    ((void)(s01), _mm256_add_epi32(_mm256_add_epi32((c), _mm256_madd_epi16(_mm256_maddubs_epi16((v0), (x0)), (s0))), \
                                   _mm256_madd_epi16(_mm256_maddubs_epi16((v1), (x1)), (s1))))
#include "q8_x86.h"

MTP_AVX2 static inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* q8.c's quant_scalar: the same amax, scale and products; cvtps rounds to nearest even as lrintf */
MTP_AVX2 static void quant_avx2(const float *x, int64_t k, int block, int8_t *q, float *d, int16_t *s) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < k / block; b++, x += block, q += block) {
        __m256 m = _mm256_setzero_ps();
        for (int l = 0; l < block; l += 8)
            m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + l), absmask));
        float amax = hmax(m);
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        d[b] = amax / 127.0f;
        for (int l = 0; l < block; l += 32) {
            __m256i v[4];
            for (int c = 0; c < 4; c++)
                v[c] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + l + 8 * c), id));
            /* the packs interleave 128-bit halves; the permute puts the 32 values back in order */
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            _mm256_storeu_si256((__m256i *)(q + l), _mm256_permutevar8x32_epi32(p, order));
            if (block == 256) {
                s[16 * b + l / 16] = (int16_t)hsum_i32_avx2(_mm256_add_epi32(v[0], v[1]));
                s[16 * b + l / 16 + 1] = (int16_t)hsum_i32_avx2(_mm256_add_epi32(v[2], v[3]));
            }
        }
    }
}

void mtp_q8_avx2(mtp_kernels *kt) {
    kt->quant = quant_avx2;
    install_avx2(kt);
}

#else
void mtp_q8_avx2(mtp_kernels *kt) { (void)kt; }
#endif
