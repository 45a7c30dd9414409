/* Weight formats: ggml's block layouts (ggml-common.h) decoded to float32 one row at a time, with
 * the same float32 arithmetic as gguf-py's dequantize (scale * q, then +/- the offset, never fused),
 * so a decoded weight is bit-identical to the NumPy reference's. Scalar code here; SIMD in simd_*.c. */
#include <string.h>

#include "mtp.h"

#define QK 32     /* values per block of the 32-blocks */
#define QK_K 256  /* values per K-quant super-block */

mtp_kernels mtp_k;

float mtp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  /* subnormal half: renormalise */
        exp = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float half_at(const uint8_t *p) { return mtp_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

int64_t mtp_row_bytes(int type, int64_t k) {
    switch (type) {
    case T_F32: return 4 * k;
    case T_F16: case T_BF16: return 2 * k;
    case T_Q4_0: return k / QK * 18;
    case T_Q4_1: return k / QK * 20;
    case T_Q5_0: return k / QK * 22;
    case T_Q5_1: return k / QK * 24;
    case T_Q8_0: return k / QK * 34;
    case T_Q4_K: return k / QK_K * 144;
    case T_Q5_K: return k / QK_K * 176;
    case T_Q6_K: return k / QK_K * 210;
    default: return -1;
    }
}

static void deq_f32(const void *src, float *dst, int64_t k) { memcpy(dst, src, (size_t)k * 4); }

static void deq_f16(const void *src, float *dst, int64_t k) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < k; i++)
        dst[i] = half_at(p + 2 * i);
}

static void deq_bf16(const void *src, float *dst, int64_t k) {
    const uint16_t *p = src;
    for (int64_t i = 0; i < k; i++) {
        uint32_t bits = (uint32_t)p[i] << 16;
        memcpy(&dst[i], &bits, 4);
    }
}

/* 32-blocks: low nibbles are values 0..15, high nibbles 16..31. */
static void deq_q4_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK; i++, b += 18, dst += QK) {
        float d = half_at(b);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)((b[2 + j] & 0xf) - 8);
            dst[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
        }
    }
}

static void deq_q4_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK; i++, b += 20, dst += QK) {
        float d = half_at(b), m = half_at(b + 2);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)(b[4 + j] & 0xf) + m;
            dst[j + 16] = d * (float)(b[4 + j] >> 4) + m;
        }
    }
}

static inline uint32_t u32_at(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void deq_q5_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK; i++, b += 22, dst += QK) {
        float d = half_at(b);
        uint32_t qh = u32_at(b + 2);
        for (int j = 0; j < 16; j++) {
            int lo = (b[6 + j] & 0xf) | ((qh >> j) & 1) << 4;
            int hi = (b[6 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)(lo - 16);
            dst[j + 16] = d * (float)(hi - 16);
        }
    }
}

static void deq_q5_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK; i++, b += 24, dst += QK) {
        float d = half_at(b), m = half_at(b + 2);
        uint32_t qh = u32_at(b + 4);
        for (int j = 0; j < 16; j++) {
            int lo = (b[8 + j] & 0xf) | ((qh >> j) & 1) << 4;
            int hi = (b[8 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
            dst[j] = d * (float)lo + m;
            dst[j + 16] = d * (float)hi + m;
        }
    }
}

static void deq_q8_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK; i++, b += 34, dst += QK) {
        float d = half_at(b);
        for (int j = 0; j < QK; j++)
            dst[j] = d * (float)(int8_t)b[2 + j];
    }
}

/* One Q4_K / Q5_K super-block: sub-block j takes nibble j % 2 of bytes 32 * (j / 2) of qs, and
 * (Q5_K, qh not NULL) bit j of qh as its fifth bit. */
static void deq_k45(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *dst) {
    float d = half_at(b), dmin = half_at(b + 2);
    for (int j = 0; j < 8; j++, dst += 32) {
        int sc, mn;
        mtp_kquant_scale_min(b + 4, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (j / 2);
        int shift = 4 * (j % 2);
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> shift) & 0xf;
            if (qh)
                v |= ((qh[l] >> j) & 1) << 4;
            dst[l] = ds * (float)v - dm;
        }
    }
}

static void deq_q4_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += 144, dst += QK_K)
        deq_k45(b, NULL, b + 16, dst);
}

static void deq_q5_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += 176, dst += QK_K)
        deq_k45(b, b + 16, b + 48, dst);
}

/* Q6_K: two halves of 128; value r of a half takes nibble r / 64 of ql[r % 64] and bits
 * 2 * (r / 32) of qh[r % 32]; one int8 scale per 16 values. */
static void deq_q6_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / QK_K; i++, b += 210, dst += QK_K) {
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = half_at(b + 208);
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, r = e % 128;
            int lo = (b[64 * h + r % 64] >> (4 * (r / 64))) & 0xf;
            int hi = (b[128 + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
            dst[e] = (d * (float)sc[e / 16]) * (float)((lo | hi << 4) - 32);
        }
    }
}

/* A Q4_K / Q5_K row split into unscaled values and per-sub-block scales and mins (mtp.h). */
void mtp_split_kquant(int type, const void *src, float *q, float *sm, int64_t k) {
    const uint8_t *b = src;
    const int q5 = type == T_Q5_K;
    for (int64_t i = 0; i < k / QK_K; i++, b += q5 ? 176 : 144, q += QK_K, sm += 16) {
        float d = half_at(b), dmin = half_at(b + 2);
        const uint8_t *qh = b + 16, *qs = b + (q5 ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            mtp_kquant_scale_min(b + 4, j, &sc, &mn);
            sm[j] = d * (float)sc;
            sm[8 + j] = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                int v = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xf;
                if (q5)
                    v |= ((qh[l] >> j) & 1) << 4;
                q[32 * j + l] = (float)v;
            }
        }
    }
}

/* Four interleaved partial sums in a fixed order: the same k always gives the same bits. */
static float dot_scalar(const float *a, const float *b, int64_t k) {
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        for (int l = 0; l < 4; l++)
            s[l] += a[i + l] * b[i + l];
    float t = (s[0] + s[1]) + (s[2] + s[3]);
    for (; i < k; i++)
        t += a[i] * b[i];
    return t;
}

static void dotn_scalar(const float *w, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    for (int t = 0; t < nt; t++)
        out[t * ldo] = dot_scalar(w, x + t * ldx, k);
}

static void sums_scalar(const float *x, int64_t k, float *X) {
    for (int64_t b = 0; b < k / QK; b++) {
        float s = 0;
        for (int l = 0; l < QK; l++)
            s += x[QK * b + l];
        X[b] = s;
    }
}

/* Per sub-block: scale times its dot, then the super-block's mins times the token's sums. */
static void kdot_scalar(const float *q, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX,
                        int nt, int64_t k, float *out, int64_t ldo) {
    for (int t = 0; t < nt; t++) {
        const float *xt = x + t * ldx, *Xt = X + t * ldX;
        float acc = 0;
        for (int64_t i = 0; i < k / QK_K; i++) {
            for (int j = 0; j < 8; j++)
                acc += sm[16 * i + j] * dot_scalar(q + QK_K * i + QK * j, xt + QK_K * i + QK * j, QK);
            for (int j = 0; j < 8; j++)
                acc -= sm[16 * i + 8 + j] * Xt[8 * i + j];
        }
        out[t * ldo] = acc;
    }
}

void mtp_kernels_scalar(mtp_kernels *kt) {
    memset(kt, 0, sizeof *kt);
    kt->dequant[T_F32] = deq_f32;
    MTP_SET_DEQUANT(kt);
    kt->dot = dot_scalar;
    kt->dotn = dotn_scalar;
    kt->sums = sums_scalar;
    kt->attend = mtp_attend_rows;
    kt->split = mtp_split_kquant;
    kt->kdot = kdot_scalar;
    mtp_q8_scalar(kt);
}
