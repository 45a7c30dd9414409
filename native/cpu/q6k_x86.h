/* Q6_K's 6-bit quants in AVX2 registers, shared by the AVX2 and AVX-512 fused kernels. */
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

#endif
