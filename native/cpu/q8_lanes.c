/* Long batches (a prompt pass) with int8 activations on AVX-512 VNNI: sixteen tokens in the lanes
 * of one register. The row-at-a-time kernels (q8_x86.h) reduce each block's products across lanes
 * for every token, about five instructions per vpdpbusd; here a vpdpbusd takes one weight quad,
 * broadcast, against the same quad of sixteen tokens, and a block's integer sums land one per lane
 * with no reduction. The float steps are mtp.h's, lane by lane, so a token's bits are those of
 * every other kernel (and of its own decode step).
 *
 * Q8_0: vpdpbusd multiplies unsigned by signed bytes, so the tokens' quants go in as x + 128
 * (x ^ 0x80) against the signed weights, and each block's sum takes back 128 * (its weights' sum):
 * exact, as every sum fits int32 (32 * 255 * 128 < 2^31). */
#include "mtp.h"

#if defined(MTP_X86)
#include <immintrin.h>

#define LANES_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define LANES_INLINE LANES_TARGET __attribute__((always_inline)) static inline

/* Tokens t0 .. t0 + count - 1 (count <= 16) of the quantized batch as lanes: byte 4 * (16 * c + l) + i
 * of xl is quant 4c + i of token t0 + l, plus 128; dl[16 * b + l] that token's block-b scale. Lanes past
 * count hold x = 0 (scale 0): their results are never read. */
LANES_TARGET static void q8_0_lanes(const int8_t *q, const float *d, int64_t t0, int count, int64_t k, uint8_t *xl, float *dl) {
    const int64_t quads = k / 4, nb = k / 32;
    for (int l = 0; l < 16; l++) {
        uint32_t *dst = (uint32_t *)xl + l;
        if (l < count) {
            const uint32_t *src = (const uint32_t *)(q + (t0 + l) * k);
            for (int64_t c = 0; c < quads; c++)
                dst[16 * c] = src[c] ^ 0x80808080u;
            for (int64_t b = 0; b < nb; b++)
                dl[16 * b + l] = d[(t0 + l) * nb + b];
        } else {
            for (int64_t c = 0; c < quads; c++)
                dst[16 * c] = 0x80808080u;
            for (int64_t b = 0; b < nb; b++)
                dl[16 * b + l] = 0.0f;
        }
    }
}

LANES_INLINE float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)(p[0] | p[1] << 8)); }

/* 128 * the sum of a block's 32 signed weights: sad_epu8 sums the weights plus 128 as unsigned bytes */
LANES_INLINE int32_t q8_0_offset(const uint8_t *blk) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
    __m256i s = _mm256_sad_epu8(u, _mm256_setzero_si256());
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    int32_t plus128 = (int32_t)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1));
    return 128 * (plus128 - 32 * 128);
}

/* R (1 or 2) weight rows against one group of 16 lanes; res[16 * r + l]: row r, lane l. */
LANES_INLINE void q8_0_rows_lanes(const uint8_t *w, int64_t rb, int R, const uint8_t *xl, const float *dl, int64_t k, float *res) {
    const int64_t nb = k / 32, padded = (nb + 7) / 8 * 8;
    __m512 L[2][8];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 8; c++)
            L[r][c] = _mm512_setzero_ps();
    for (int64_t g = 0; g < padded; g += 8) {
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) {  /* block b = g + c into lane sums c */
            const int64_t b = g + c;
            if (b >= nb) {  /* mtp.h pads with t = 0 */
                for (int r = 0; r < R; r++)
                    L[r][c] = _mm512_add_ps(L[r][c], _mm512_setzero_ps());
                continue;
            }
            const uint8_t *x = xl + 512 * b;
            __m512i acc[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                const __m512i xv = _mm512_loadu_si512((const void *)(x + 64 * i));
                for (int r = 0; r < R; r++) {
                    int32_t quad;
                    __builtin_memcpy(&quad, w + r * rb + 34 * b + 2 + 4 * i, 4);
                    acc[r] = _mm512_dpbusd_epi32(acc[r], xv, _mm512_set1_epi32(quad));
                }
            }
            const __m512 dx = _mm512_loadu_ps(dl + 16 * b);
            for (int r = 0; r < R; r++) {
                const uint8_t *blk = w + r * rb + 34 * b;
                const __m512i isum = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(q8_0_offset(blk)));
                const __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(half_at(blk)), dx), _mm512_cvtepi32_ps(isum));
                L[r][c] = _mm512_add_ps(L[r][c], t);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(L[r][0], L[r][4]), _mm512_add_ps(L[r][2], L[r][6])),
                                       _mm512_add_ps(_mm512_add_ps(L[r][1], L[r][5]), _mm512_add_ps(L[r][3], L[r][7])));
        _mm512_storeu_ps(res + 16 * r, s);
    }
}

/* Rows [0, nr) against one lane group: res[16 * r + l] */
LANES_TARGET static void q8_0_gemm(const void *w, int64_t rb, int64_t nr, const uint8_t *xl, const float *dl, int64_t k, float *res) {
    const uint8_t *b = w;
    int64_t r = 0;
    for (; r + 2 <= nr; r += 2)
        q8_0_rows_lanes(b + r * rb, rb, 2, xl, dl, k, res + 16 * r);
    for (; r < nr; r++)
        q8_0_rows_lanes(b + r * rb, rb, 1, xl, dl, k, res + 16 * r);
}

void mtp_q8_lanes_vnni(mtp_kernels *kt) {
    kt->qlanes[T_Q8_0] = q8_0_lanes;
    kt->qgemm[T_Q8_0] = q8_0_gemm;
}

#else
void mtp_q8_lanes_vnni(mtp_kernels *kt) { (void)kt; }
#endif
