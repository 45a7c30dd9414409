/* Quantized activations on NEON (aarch64): the row quantizer, and the int8-activation products
 * (q8_neon.h) with widening multiplies for CPUs without SDOT, bit-identical to q8.c's. */
#include "mtp.h"

#if defined(MTP_NEON)
#define Q8N_TARGET
#define Q8N_NAME(x) x##_neon
/* int16 products (|w * x| <= 128 * 127), each lane the sum of two (< 2^15), pairwise into int32 */
#define q8n_dot16(acc, a, b) vpadalq_s16((acc), vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), (a), (b)))
#include "q8_neon.h"

/* q8.c's quant_scalar: the same amax, scale and products; FCVTNS rounds to nearest even as lrintf */
static void quant_neon(const float *x, int64_t k, int block, int8_t *q, float *d, int16_t *s) {
    for (int64_t b = 0; b < k / block; b++, x += block, q += block) {
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int l = 0; l < block; l += 4)
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + l)));
        const float amax = vmaxvq_f32(m);
        const float32x4_t id = vdupq_n_f32(amax > 0.0f ? 127.0f / amax : 0.0f);
        d[b] = amax / 127.0f;
        for (int l = 0; l < block; l += 16) {
            int16x8_t h[2];
            for (int c = 0; c < 2; c++)
                h[c] = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + l + 8 * c), id))),
                                    vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + l + 8 * c + 4), id))));
            vst1q_s8(q + l, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
            if (block == 256)
                s[16 * b + l / 16] = vaddvq_s16(vaddq_s16(h[0], h[1]));
        }
    }
}

void mtp_q8_neon(mtp_kernels *kt) {
    kt->quant = quant_neon;
    install_neon(kt);
}

#else
void mtp_q8_neon(mtp_kernels *kt) { (void)kt; }
#endif
