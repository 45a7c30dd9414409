/* K-quant values in AVX2 registers, shared by the AVX2 and AVX-512 kernels. */
#ifndef Q6K_X86_H
#define Q6K_X86_H

#include <immintrin.h>

#include "mtp.h"

/* The 32 quants (q - 32, as int8) of group g (0..3) of half h of the Q6_K super-block b, from its
 * low nibbles and that half's high bits qh; nib, top, off: 0x0f, 0x30 and 32 in every byte. */
MTP_AVX2 __attribute__((always_inline)) static inline __m256i q6_k_group(const uint8_t *b, int h, int g, __m256i qh,
                                                                         __m256i nib, __m256i top, __m256i off) {
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32 * (g % 2)));
    __m256i lo = _mm256_and_si256(g / 2 ? _mm256_srli_epi16(ql, 4) : ql, nib);
    /* bits 2g, 2g + 1 of qh moved straight to bits 4, 5 */
    __m256i hi = g < 2 ? _mm256_slli_epi16(qh, 4 - 2 * g) : g == 2 ? qh : _mm256_srli_epi16(qh, 2);
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_and_si256(hi, top)), off);
}

/* Q4_K / Q5_K sub-blocks 2p and 2p + 1 (p = 0..3) as bytes: the low and high nibbles of the 32 bytes w
 * at qs + 32p, and for Q5_K (q5) bits 2p and 2p + 1 of the 32 qh bytes hb as the fifth bit. */
MTP_AVX2 __attribute__((always_inline)) static inline void k45_pair(__m256i w, __m256i hb, int p, int q5, __m256i *v0, __m256i *v1) {
    const __m256i nib = _mm256_set1_epi8(0xf), one = _mm256_set1_epi8(1);
    *v0 = _mm256_and_si256(w, nib);
    *v1 = _mm256_and_si256(_mm256_srli_epi16(w, 4), nib);
    if (q5) {
        *v0 = _mm256_or_si256(*v0, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * p), one), 4));
        *v1 = _mm256_or_si256(*v1, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * p + 1), one), 4));
    }
}

#endif
