/* NEON helpers shared by the aarch64 kernels (simd_neon.c, q8_neon.h): f16 scales and the
 * K-quants' blocks decoded into registers. */
#ifndef NEON_H
#define NEON_H

#include <arm_neon.h>
#include <string.h>

#include "mtp.h"

#define NEON_INLINE __attribute__((always_inline)) static inline

/* FCVT converts halves exactly, subnormals included: mtp_f16_to_f32's value. */
NEON_INLINE float neon_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* Q4_K / Q5_K sub-block j's 32 quants (0..31) as bytes: nibble j % 2 of the 32 bytes at qs, plus
 * (Q5_K, qh not NULL) bit j of each of the 32 qh bytes as the fifth bit. */
NEON_INLINE void neon_k45_sub(const uint8_t *qs, const uint8_t *qh, int j, int8x16_t v[2]) {
    for (int c = 0; c < 2; c++) {
        uint8x16_t b = vld1q_u8(qs + 16 * c);
        b = j % 2 ? vshrq_n_u8(b, 4) : vandq_u8(b, vdupq_n_u8(0xf));
        if (qh)
            b = vorrq_u8(b, vandq_u8(vtstq_u8(vld1q_u8(qh + 16 * c), vdupq_n_u8((uint8_t)(1 << j))), vdupq_n_u8(16)));
        v[c] = vreinterpretq_s8_u8(b);
    }
}

/* Q6_K: the 32 quants (q - 32) of group g (0..3) of half h of the super-block b: nibble g / 2 of
 * the ql bytes at 64h + 32(g % 2), bits 2g, 2g + 1 of the half's 32 qh bytes as bits 4, 5. */
NEON_INLINE void neon_q6k_group(const uint8_t *b, int h, int g, int8x16_t v[2]) {
    for (int c = 0; c < 2; c++) {
        uint8x16_t ql = vld1q_u8(b + 64 * h + 32 * (g % 2) + 16 * c);
        ql = g / 2 ? vshrq_n_u8(ql, 4) : vandq_u8(ql, vdupq_n_u8(0xf));
        const uint8x16_t qh = vld1q_u8(b + 128 + 32 * h + 16 * c);
        const uint8x16_t hi = vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(4 - 2 * g))), vdupq_n_u8(0x30));
        v[c] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(ql, hi)), vdupq_n_s8(32));
    }
}

#endif
