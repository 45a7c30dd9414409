/* The int8-activation products (mtp.h) on aarch64, written once for the plain NEON and the SDOT
 * builds: the including file defines
 *   Q8N_TARGET            the functions' target attribute;
 *   q8n_dot16(acc, a, b)  acc (int32x4) plus the 16 products a[i] * b[i] (int8), over its lanes;
 *   Q8N_NAME(x)           the build's name for kernel x.
 * The integer sums are exact whichever lanes they pass through, and the float steps are mtp.h's,
 * in its order, so both builds give the scalar kernels' bits. */
#include "neon.h"

#define Q8N_INLINE Q8N_TARGET __attribute__((always_inline)) static inline

/* one 32-block's products at w and x, spread over four lanes */
Q8N_INLINE int32x4_t Q8N_NAME(block32)(const int8_t *w, const int8_t *x) {
    return q8n_dot16(q8n_dot16(vdupq_n_s32(0), vld1q_s8(w), vld1q_s8(x)), vld1q_s8(w + 16), vld1q_s8(x + 16));
}

/* ---- Q8_0: eight blocks at a time, isum_b in lane b % 8 (two vectors), t_b = (dw_b * dx_b) * isum_b
 * into the lane sums L; a row's last group pads its missing blocks with t = 0 * 0 * 0 = +0, as mtp.h */
Q8N_INLINE void Q8N_NAME(q8_0_rows)(const uint8_t *w, const int8_t *q, const float *d, const int16_t *s, int nt, int64_t k,
                                    float *out, int64_t ldo) {
    (void)s;
    const int64_t nb = k / 32;
    float32x4_t L[4][2];
    for (int t = 0; t < nt; t++)
        L[t][0] = L[t][1] = vdupq_n_f32(0.0f);
    for (int64_t g = 0; g < nb; g += 8) {
        const int nblk = nb - g < 8 ? (int)(nb - g) : 8;
        uint16_t h[8] = {0};
        for (int b = 0; b < nblk; b++)
            memcpy(&h[b], w + 34 * (g + b), 2);
        const float16x8_t hv = vreinterpretq_f16_u16(vld1q_u16(h));
        const float32x4_t dw[2] = {vcvt_f32_f16(vget_low_f16(hv)), vcvt_high_f32_f16(hv)};
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = q + t * k + 32 * g;
            int32x4_t P[8];
            for (int b = 0; b < 8; b++)
                P[b] = b < nblk ? Q8N_NAME(block32)((const int8_t *)(w + 34 * (g + b) + 2), xq + 32 * b) : vdupq_n_s32(0);
            float pad[8] = {0};
            const float *dx = d + t * nb + g;
            if (nblk < 8)
                dx = memcpy(pad, dx, (size_t)nblk * 4);
            for (int c = 0; c < 2; c++) {
                const int32x4_t isum = vpaddq_s32(vpaddq_s32(P[4 * c], P[4 * c + 1]), vpaddq_s32(P[4 * c + 2], P[4 * c + 3]));
                L[t][c] = vaddq_f32(L[t][c], vmulq_f32(vmulq_f32(dw[c], vld1q_f32(dx + 4 * c)), vcvtq_f32_s32(isum)));
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        const float32x4_t c = vaddq_f32(L[t][0], L[t][1]);                /* L0 + L4, L1 + L5, L2 + L6, L3 + L7 */
        const float32x2_t e = vadd_f32(vget_low_f32(c), vget_high_f32(c));  /* (L0 + L4) + (L2 + L6), (L1 + L5) + (L3 + L7) */
        out[t * ldo] = vget_lane_f32(e, 0) + vget_lane_f32(e, 1);
    }
}

/* ---- Q4_K / Q5_K: per super-block, the row's 256 quants decoded once for the tokens; isum = sum_j
 * sc_j * (q_j . x_j), imn = sum_j mn_j * (the x sum of sub-block j, from the per-16 sums) */
Q8N_INLINE void Q8N_NAME(k45_rows)(const uint8_t *b, int q5, const int8_t *q, const float *d, const int16_t *s, int nt,
                                   int64_t k, float *out, int64_t ldo) {
    const int64_t nbk = k / 256;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < nbk; i++, b += q5 ? 176 : 144) {
        uint64_t sc, mn;
        mtp_kquant_scales_mins(b, &sc, &mn);
        const int16x8_t mn16 = vreinterpretq_s16_u16(vmovl_u8(vcreate_u8(mn)));
        int8x16_t v[8][2];
        for (int j = 0; j < 8; j++)
            neon_k45_sub(b + (q5 ? 48 : 16) + 32 * (j / 2), q5 ? b + 16 : NULL, j, v[j]);
        const float dd = neon_half(b), dm = neon_half(b + 2);
        for (int t = 0; t < nt; t++) {
            const int8_t *x = q + t * k + 256 * i;
            int32x4_t S = vdupq_n_s32(0);
            for (int j = 0; j < 8; j++) {
                const int32x4_t lo = q8n_dot16(vdupq_n_s32(0), v[j][0], vld1q_s8(x + 32 * j));
                S = vmlaq_n_s32(S, q8n_dot16(lo, v[j][1], vld1q_s8(x + 32 * j + 16)), (int32_t)(sc >> 8 * j & 0xff));
            }
            const int16_t *st = s + t * (k / 16) + 16 * i;
            const int16x8_t xs = vpaddq_s16(vld1q_s16(st), vld1q_s16(st + 8));  /* |sum| <= 32 * 127 */
            const int32x4_t M = vmlal_high_s16(vmull_s16(vget_low_s16(mn16), vget_low_s16(xs)), mn16, xs);
            const float dx = d[t * nbk + i];
            acc[t] += (dd * dx) * (float)vaddvq_s32(S) - (dm * dx) * (float)vaddvq_s32(M);
        }
    }
    for (int t = 0; t < nt; t++)
        out[t * ldo] = acc[t];
}

Q8N_INLINE void Q8N_NAME(q4_k_rows)(const uint8_t *b, const int8_t *q, const float *d, const int16_t *s, int nt, int64_t k,
                                    float *out, int64_t ldo) {
    Q8N_NAME(k45_rows)(b, 0, q, d, s, nt, k, out, ldo);
}

Q8N_INLINE void Q8N_NAME(q5_k_rows)(const uint8_t *b, const int8_t *q, const float *d, const int16_t *s, int nt, int64_t k,
                                    float *out, int64_t ldo) {
    Q8N_NAME(k45_rows)(b, 1, q, d, s, nt, k, out, ldo);
}

/* ---- Q6_K: signed quants (q - 32) times x per 16 values, scaled by sc_g */
Q8N_INLINE void Q8N_NAME(q6_k_rows)(const uint8_t *b, const int8_t *q, const float *d, const int16_t *s, int nt, int64_t k,
                                    float *out, int64_t ldo) {
    (void)s;
    const int64_t nbk = k / 256;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < nbk; i++, b += 210) {
        int8x16_t v[8][2];  /* the 32-value groups in order: half h, group g at 4h + g */
        for (int G = 0; G < 8; G++)
            neon_q6k_group(b, G / 4, G % 4, v[G]);
        const int8_t *sc = (const int8_t *)(b + 192);
        const float dd = neon_half(b + 208);
        for (int t = 0; t < nt; t++) {
            const int8_t *x = q + t * k + 256 * i;
            int32x4_t S = vdupq_n_s32(0);
            for (int G = 0; G < 8; G++)
                for (int c = 0; c < 2; c++)
                    S = vmlaq_n_s32(S, q8n_dot16(vdupq_n_s32(0), v[G][c], vld1q_s8(x + 32 * G + 16 * c)), sc[2 * G + c]);
            acc[t] += (dd * d[t * nbk + i]) * (float)vaddvq_s32(S);
        }
    }
    for (int t = 0; t < nt; t++)
        out[t * ldo] = acc[t];
}

#define Q8N_QDOT(name, rows) MTP_QDOT_ROWS(Q8N_TARGET, name, rows)

Q8N_QDOT(Q8N_NAME(qdot_q8_0), Q8N_NAME(q8_0_rows))
Q8N_QDOT(Q8N_NAME(qdot_q4_k), Q8N_NAME(q4_k_rows))
Q8N_QDOT(Q8N_NAME(qdot_q5_k), Q8N_NAME(q5_k_rows))
Q8N_QDOT(Q8N_NAME(qdot_q6_k), Q8N_NAME(q6_k_rows))

/* the build's kernels into the table */
static void Q8N_NAME(install)(mtp_kernels *kt) {
    kt->qdot[T_Q8_0] = Q8N_NAME(qdot_q8_0);
    kt->qdot[T_Q4_K] = Q8N_NAME(qdot_q4_k);
    kt->qdot[T_Q5_K] = Q8N_NAME(qdot_q5_k);
    kt->qdot[T_Q6_K] = Q8N_NAME(qdot_q6_k);
}
