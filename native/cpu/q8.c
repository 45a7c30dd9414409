/* Quantized activations, the reference (scalar) code: the row quantizer and the int8-activation
 * products with Q8_0, Q4_K, Q5_K and Q6_K weights, written as the plain statement of the arithmetic
 * in mtp.h that the SIMD twins (q8_avx2.c, q8_vnni.c) reproduce bit for bit. The other block types
 * (Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16) keep float32 activations in q8 mode: no fixture model uses
 * them for its large products. */
#include <math.h>

#include "mtp.h"

/* One token row: int8 blocks, their scales and (256-blocks) the sums of each 16 quants. */
static void quant_scalar(const float *x, int64_t k, int block, int8_t *q, float *d, int16_t *s) {
    for (int64_t b = 0; b < k / block; b++, x += block, q += block) {
        float amax = 0.0f;
        for (int l = 0; l < block; l++)
            amax = fabsf(x[l]) > amax ? fabsf(x[l]) : amax;
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        d[b] = amax / 127.0f;
        for (int l = 0; l < block; l++)
            q[l] = (int8_t)lrintf(x[l] * id);  /* the default rounding: nearest, ties to even */
        for (int g = 0; block == 256 && g < 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += q[16 * g + l];
            s[16 * b + g] = (int16_t)sum;
        }
    }
}

static inline float half_at(const uint8_t *p) { return mtp_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* The Q8_0 lane order of mtp.h: t_b into lane b % 8, then the fixed tree. */
static float q8_0_row(const uint8_t *w, const int8_t *q, const float *d, int64_t k) {
    float lane[8] = {0};
    int64_t nb = k / 32, padded = (nb + 7) / 8 * 8;
    for (int64_t b = 0; b < padded; b++) {
        float t = 0.0f;
        if (b < nb) {
            const uint8_t *blk = w + 34 * b;
            int32_t isum = 0;
            for (int l = 0; l < 32; l++)
                isum += (int8_t)blk[2 + l] * q[32 * b + l];
            t = (half_at(blk) * d[b]) * (float)isum;
        }
        lane[b % 8] += t;
    }
    return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

/* Q4_K / Q5_K super-block: sub-block j takes nibble j % 2 of qs[32 * (j / 2) + l] and (Q5_K, qh not
 * NULL) bit j of qh[l] as the fifth bit. */
static float k45_block(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, const int8_t *q, float dx, const int16_t *s) {
    int32_t isum = 0, imn = 0;
    for (int j = 0; j < 8; j++) {
        int sc, mn, sub = 0;
        mtp_kquant_scale_min(b + 4, j, &sc, &mn);
        for (int l = 0; l < 32; l++) {
            int v = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xf;
            if (qh)
                v |= ((qh[l] >> j) & 1) << 4;
            sub += v * q[32 * j + l];
        }
        isum += sc * sub;
        imn += mn * (s[2 * j] + s[2 * j + 1]);
    }
    return (half_at(b) * dx) * (float)isum - (half_at(b + 2) * dx) * (float)imn;
}

/* Q6_K super-block: value e takes nibble r / 64 of ql[64h + r % 64] and bits 2 * (r / 32) of
 * qh[32h + r % 32] (h = e / 128, r = e % 128), minus 32; one int8 scale per 16 values. */
static float q6_k_block(const uint8_t *b, const int8_t *q, float dx) {
    const int8_t *sc = (const int8_t *)(b + 192);
    int32_t isum = 0;
    for (int g = 0; g < 16; g++) {
        int sub = 0;
        for (int e = 16 * g; e < 16 * g + 16; e++) {
            int h = e / 128, r = e % 128;
            int lo = (b[64 * h + r % 64] >> (4 * (r / 64))) & 0xf;
            int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
            sub += ((lo | hi << 4) - 32) * q[e];
        }
        isum += sc[g] * sub;
    }
    return (half_at(b + 208) * dx) * (float)isum;
}

static float kquant_row(int type, const uint8_t *w, const int8_t *q, const float *d, const int16_t *s, int64_t k) {
    float acc = 0.0f;
    for (int64_t i = 0; i < k / 256; i++, q += 256, s += 16) {
        if (type == T_Q6_K)
            acc += q6_k_block(w + 210 * i, q, d[i]);
        else if (type == T_Q5_K)
            acc += k45_block(w + 176 * i, w + 176 * i + 16, w + 176 * i + 48, q, d[i], s);
        else
            acc += k45_block(w + 144 * i, NULL, w + 144 * i + 16, q, d[i], s);
    }
    return acc;
}

#define QDOT_SCALAR(name, row)                                                                                      \
    static void name(const void *w, int64_t rb, int64_t nr, const int8_t *q, const float *d, const int16_t *s, int nt, \
                     int64_t k, float *out, int64_t ldo) {                                                          \
        for (int64_t r = 0; r < nr; r++)                                                                            \
            for (int t = 0; t < nt; t++)                                                                            \
                out[t * ldo + r] = row;                                                                             \
    }

QDOT_SCALAR(qdot_q8_0, q8_0_row((const uint8_t *)w + r * rb, q + t * k, d + t * (k / 32), k))
QDOT_SCALAR(qdot_q4_k, kquant_row(T_Q4_K, (const uint8_t *)w + r * rb, q + t * k, d + t * (k / 256), s + t * (k / 16), k))
QDOT_SCALAR(qdot_q5_k, kquant_row(T_Q5_K, (const uint8_t *)w + r * rb, q + t * k, d + t * (k / 256), s + t * (k / 16), k))
QDOT_SCALAR(qdot_q6_k, kquant_row(T_Q6_K, (const uint8_t *)w + r * rb, q + t * k, d + t * (k / 256), s + t * (k / 16), k))

void mtp_q8_scalar(mtp_kernels *kt) {
    kt->quant = quant_scalar;
    kt->qdot[T_Q8_0] = qdot_q8_0;
    kt->qdot[T_Q4_K] = qdot_q4_k;
    kt->qdot[T_Q5_K] = qdot_q5_k;
    kt->qdot[T_Q6_K] = qdot_q6_k;
}
