/* NEON (aarch64) variants of the row decoders, the float dots and the fused decode-and-dot kernels.
 * Unlike the x86 levels, which sum in their own (FMA) order, every kernel here is bit-identical to
 * its scalar twin in quants.c: the same products (never fused: vmulq then vaddq, as the scalar code
 * under -ffp-contract=off), summed in the same order: dot_scalar's four lanes are one float32x4
 * accumulator. A vdot is dequant + dotn_scalar, or (MTP_FACTORED) split + kdot_scalar, so the
 * scalar level's tiled path is its reference. Long chains (one accumulator per row and token) run
 * side by side: up to four weight rows a pass for one or two tokens. tests/native/neon_check.c
 * compares every kernel here with the scalar one, bit for bit, under qemu. */
#include "mtp.h"

#if defined(MTP_NEON)
#include "neon.h"

/* (v0 + v1) + (v2 + v3): dot_scalar's sum of its four lanes */
NEON_INLINE float hsum4(float32x4_t v) { return vpadds_f32(vget_low_f32(vpaddq_f32(v, v))); }

/* lane j = hsum4(v[j]), the same additions */
NEON_INLINE float32x4_t hsum4x4(const float32x4_t v[4]) {
    return vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]));
}

/* 16 int8 values as four float32x4, in order */
NEON_INLINE void s8_f32(int8x16_t v, float32x4_t f[4]) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
    f[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    f[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    f[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    f[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
}

/* 8 bytes (low byte first) as two float32x4 */
NEON_INLINE void u8x8_f32(uint64_t v, float32x4_t f[2]) {
    const uint16x8_t w = vmovl_u8(vcreate_u8(v));
    f[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(w)));
    f[1] = vcvtq_f32_u32(vmovl_high_u16(w));
}

/* a + w * x, the product rounded first */
NEON_INLINE float32x4_t madd(float32x4_t a, float32x4_t w, float32x4_t x) { return vaddq_f32(a, vmulq_f32(w, x)); }

static void deq_f16(const void *src, float *dst, int64_t k) {
    const uint8_t *p = src;
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p + 2 * i))));
    for (; i < k; i++)
        dst[i] = neon_half(p + 2 * i);
}

static void deq_bf16(const void *src, float *dst, int64_t k) {
    const uint16_t *p = src;
    int64_t i = 0;
    for (; i + 4 <= k; i += 4)
        vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p + i), 16)));
    for (; i < k; i++) {
        uint32_t bits = (uint32_t)p[i] << 16;
        memcpy(&dst[i], &bits, 4);
    }
}

static void deq_q8_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 34, dst += 32) {
        const float32x4_t d = vdupq_n_f32(neon_half(b));
        for (int c = 0; c < 2; c++) {
            float32x4_t q[4];
            s8_f32(vld1q_s8((const int8_t *)(b + 2 + 16 * c)), q);
            for (int u = 0; u < 4; u++)
                vst1q_f32(dst + 16 * c + 4 * u, vmulq_f32(d, q[u]));
        }
    }
}

/* 16 where bit l of the low 16 bits of h is set, in lane l */
NEON_INLINE uint8x16_t fifth_bits(uint32_t h) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t spread = vcombine_u8(vdup_n_u8((uint8_t)h), vdup_n_u8((uint8_t)(h >> 8)));
    return vandq_u8(vtstq_u8(spread, vld1q_u8(bit)), vdupq_n_u8(16));
}

/* Q4_0 / Q4_1 / Q5_0 / Q5_1 block: value j the low nibble of byte j of qs, value j + 16 its high
 * nibble, plus (qh not NULL) bit j of the 32-bit qh as the fifth bit; minus off, then d * v, + m
 * where has_min (the scalar decoders' products and sums) */
NEON_INLINE void deq_32(const uint8_t *qs, const uint8_t *qh, int off, float d, float m, int has_min, float *dst) {
    const uint8x16_t b = vld1q_u8(qs);
    uint8x16_t v[2] = {vandq_u8(b, vdupq_n_u8(0xf)), vshrq_n_u8(b, 4)};
    if (qh) {
        uint32_t h;
        memcpy(&h, qh, 4);
        v[0] = vorrq_u8(v[0], fifth_bits(h));
        v[1] = vorrq_u8(v[1], fifth_bits(h >> 16));
    }
    for (int c = 0; c < 2; c++) {
        float32x4_t f[4];
        s8_f32(vsubq_s8(vreinterpretq_s8_u8(v[c]), vdupq_n_s8((int8_t)off)), f);
        for (int u = 0; u < 4; u++) {
            const float32x4_t w = vmulq_f32(vdupq_n_f32(d), f[u]);
            vst1q_f32(dst + 16 * c + 4 * u, has_min ? vaddq_f32(w, vdupq_n_f32(m)) : w);
        }
    }
}

static void deq_q4_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 18, dst += 32)
        deq_32(b + 2, NULL, 8, neon_half(b), 0.0f, 0, dst);
}

static void deq_q4_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 20, dst += 32)
        deq_32(b + 4, NULL, 0, neon_half(b), neon_half(b + 2), 1, dst);
}

static void deq_q5_0(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 22, dst += 32)
        deq_32(b + 6, b + 2, 16, neon_half(b), 0.0f, 0, dst);
}

static void deq_q5_1(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 32; i++, b += 24, dst += 32)
        deq_32(b + 8, b + 4, 0, neon_half(b), neon_half(b + 2), 1, dst);
}

/* Q4_K / Q5_K super-block b's sm[j] = d * sc_j, sm[8 + j] = dmin * mn_j (mtp_split_kquant's floats) */
NEON_INLINE void k45_scales(const uint8_t *b, float sm[16]) {
    uint64_t sc, mn;
    mtp_kquant_scales_mins(b, &sc, &mn);
    const float32x4_t d = vdupq_n_f32(neon_half(b)), dmin = vdupq_n_f32(neon_half(b + 2));
    float32x4_t f[2];
    u8x8_f32(sc, f);
    vst1q_f32(sm, vmulq_f32(d, f[0]));
    vst1q_f32(sm + 4, vmulq_f32(d, f[1]));
    u8x8_f32(mn, f);
    vst1q_f32(sm + 8, vmulq_f32(dmin, f[0]));
    vst1q_f32(sm + 12, vmulq_f32(dmin, f[1]));
}

/* sub-block j's 32 unscaled values of the Q4_K / Q5_K super-block b */
NEON_INLINE void k45_values(const uint8_t *b, int q5, int j, float32x4_t q[8]) {
    int8x16_t v[2];
    neon_k45_sub(b + (q5 ? 48 : 16) + 32 * (j / 2), q5 ? b + 16 : NULL, j, v);
    s8_f32(v[0], q);
    s8_f32(v[1], q + 4);
}

/* deq_k45's ds * q - dm */
static void deq_k45(const void *src, float *dst, int64_t k, int q5) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 256; i++, b += q5 ? 176 : 144) {
        float sm[16];
        k45_scales(b, sm);
        for (int j = 0; j < 8; j++, dst += 32) {
            float32x4_t q[8];
            k45_values(b, q5, j, q);
            const float32x4_t ds = vdupq_n_f32(sm[j]), dm = vdupq_n_f32(sm[8 + j]);
            for (int c = 0; c < 8; c++)
                vst1q_f32(dst + 4 * c, vsubq_f32(vmulq_f32(ds, q[c]), dm));
        }
    }
}

static void deq_q4_k(const void *src, float *dst, int64_t k) { deq_k45(src, dst, k, 0); }

static void deq_q5_k(const void *src, float *dst, int64_t k) { deq_k45(src, dst, k, 1); }

/* Q6_K super-block b's sixteen d * sc_g */
NEON_INLINE void q6_k_scales(const uint8_t *b, float ds[16]) {
    const float32x4_t d = vdupq_n_f32(neon_half(b + 208));
    float32x4_t f[4];
    s8_f32(vld1q_s8((const int8_t *)(b + 192)), f);
    for (int c = 0; c < 4; c++)
        vst1q_f32(ds + 4 * c, vmulq_f32(d, f[c]));
}

/* Values 16c .. 16c + 15 of Q6_K group g of half h, scaled: deq_q6_k's (d * sc) * (q - 32) */
NEON_INLINE void q6_k_weights(const int8x16_t v[2], const float ds[16], int h, int g, int c, float32x4_t w[4]) {
    s8_f32(v[c], w);
    const float32x4_t s = vdupq_n_f32(ds[8 * h + 2 * g + c]);
    for (int u = 0; u < 4; u++)
        w[u] = vmulq_f32(s, w[u]);
}

static void deq_q6_k(const void *src, float *dst, int64_t k) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < k / 256; i++, b += 210) {
        float ds[16];
        q6_k_scales(b, ds);
        for (int h = 0; h < 2; h++)
            for (int g = 0; g < 4; g++) {
                int8x16_t v[2];
                neon_q6k_group(b, h, g, v);
                for (int c = 0; c < 2; c++, dst += 16) {
                    float32x4_t w[4];
                    q6_k_weights(v, ds, h, g, c, w);
                    for (int u = 0; u < 4; u++)
                        vst1q_f32(dst + 4 * u, w[u]);
                }
            }
    }
}

/* One float row against nt token rows: dot_scalar for each, the weights loaded once */
NEON_INLINE void dot_rows(const float *a, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    float32x4_t s[4];
    for (int t = 0; t < nt; t++)
        s[t] = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= k; i += 4) {
        const float32x4_t w = vld1q_f32(a + i);
        for (int t = 0; t < nt; t++)
            s[t] = madd(s[t], w, vld1q_f32(x + t * ldx + i));
    }
    for (int t = 0; t < nt; t++) {
        float r = hsum4(s[t]);
        for (int64_t l = i; l < k; l++)
            r += a[l] * x[t * ldx + l];
        out[t * ldo] = r;
    }
}

static float dot_neon(const float *a, const float *b, int64_t k) {
    float r;
    dot_rows(a, b, 0, 1, k, &r, 0);
    return r;
}

/* A constant nt per call keeps the accumulators in registers. */
static void dotn_neon(const float *w, const float *x, int64_t ldx, int nt, int64_t k, float *out, int64_t ldo) {
    switch (nt) {
    case 4: dot_rows(w, x, ldx, 4, k, out, ldo); break;
    case 3: dot_rows(w, x, ldx, 3, k, out, ldo); break;
    case 2: dot_rows(w, x, ldx, 2, k, out, ldo); break;
    default: dot_rows(w, x, ldx, 1, k, out, ldo);
    }
}

static void split_neon(int type, const void *src, float *qf, float *sm, int64_t k) {
    const uint8_t *b = src;
    const int q5 = type == T_Q5_K;
    for (int64_t i = 0; i < k / 256; i++, b += q5 ? 176 : 144, sm += 16) {
        k45_scales(b, sm);
        for (int j = 0; j < 8; j++, qf += 32) {
            float32x4_t q[8];
            k45_values(b, q5, j, q);
            for (int c = 0; c < 8; c++)
                vst1q_f32(qf + 4 * c, q[c]);
        }
    }
}

/* One factored super-block (its values from the blocks b, or where b is NULL, the split row qf;
 * scales and mins sm) into the nt tokens' sums acc, kdot_scalar's steps in its order: per
 * sub-block j, acc += sm[j] * dot(q_j, x_j), then per j, acc -= sm[8 + j] * X_j. */
NEON_INLINE void k45_block(const uint8_t *b, int q5, const float *qf, const float *sm, const float *x, int64_t ldx,
                           const float *X, int64_t ldX, int nt, float acc[4]) {
#pragma GCC unroll 2
    for (int j0 = 0; j0 < 8; j0 += 4) {
        float32x4_t s[4][4];  /* token, sub-block j0 + j */
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            float32x4_t q[8];
            if (b)
                k45_values(b, q5, j0 + j, q);
            else
                for (int c = 0; c < 8; c++)
                    q[c] = vld1q_f32(qf + 32 * (j0 + j) + 4 * c);
            for (int t = 0; t < nt; t++) {
                s[t][j] = vdupq_n_f32(0.0f);
                for (int c = 0; c < 8; c++)
                    s[t][j] = madd(s[t][j], q[c], vld1q_f32(x + t * ldx + 32 * (j0 + j) + 4 * c));
            }
        }
        const float32x4_t scale = vld1q_f32(sm + j0);
        for (int t = 0; t < nt; t++) {
            const float32x4_t p = vmulq_f32(scale, hsum4x4(s[t]));
            acc[t] += vgetq_lane_f32(p, 0);
            acc[t] += vgetq_lane_f32(p, 1);
            acc[t] += vgetq_lane_f32(p, 2);
            acc[t] += vgetq_lane_f32(p, 3);
        }
    }
    for (int t = 0; t < nt; t++)
        for (int c = 0; c < 2; c++) {
            const float32x4_t m = vmulq_f32(vld1q_f32(sm + 8 + 4 * c), vld1q_f32(X + t * ldX + 4 * c));
            acc[t] -= vgetq_lane_f32(m, 0);
            acc[t] -= vgetq_lane_f32(m, 1);
            acc[t] -= vgetq_lane_f32(m, 2);
            acc[t] -= vgetq_lane_f32(m, 3);
        }
}

NEON_INLINE void split_rows(const float *qf, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX,
                            int nt, int64_t k, float *out, int64_t ldo) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t i = 0; i < k / 256; i++)
        k45_block(NULL, 0, qf + 256 * i, sm + 16 * i, x + 256 * i, ldx, X + 8 * i, ldX, nt, acc);
    for (int t = 0; t < nt; t++)
        out[t * ldo] = acc[t];
}

static void kdot_neon(const float *q, const float *sm, const float *x, int64_t ldx, const float *X, int64_t ldX, int nt,
                      int64_t k, float *out, int64_t ldo) {
    switch (nt) {
    case 4: split_rows(q, sm, x, ldx, X, ldX, 4, k, out, ldo); break;
    case 3: split_rows(q, sm, x, ldx, X, ldX, 3, k, out, ldo); break;
    case 2: split_rows(q, sm, x, ldx, X, ldX, 2, k, out, ldo); break;
    default: split_rows(q, sm, x, ldx, X, ldX, 1, k, out, ldo);
    }
}

/* ---- fused rows: R weight rows (at b, b + rb, ...) against nt tokens, out[t * ldo + r] */
NEON_INLINE void k45_rows(const uint8_t *b, int64_t rb, int R, int q5, const float *x, int64_t ldx, const float *X,
                          int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {
    float acc[4][4] = {{0.0f}};
    for (int64_t i = 0; i < k / 256; i++)
        for (int r = 0; r < R; r++) {
            const uint8_t *br = b + r * rb + i * (q5 ? 176 : 144);
            float sm[16];
            k45_scales(br, sm);
            k45_block(br, q5, NULL, sm, x + 256 * i, ldx, X + 8 * i, ldX, nt, acc[r]);
        }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nt; t++)
            out[t * ldo + r] = acc[r][t];
}

NEON_INLINE void q4_k_rows(const uint8_t *b, int64_t rb, int R, const float *x, int64_t ldx, const float *X, int64_t ldX,
                           int nt, int64_t k, float *out, int64_t ldo) {
    k45_rows(b, rb, R, 0, x, ldx, X, ldX, nt, k, out, ldo);
}

NEON_INLINE void q5_k_rows(const uint8_t *b, int64_t rb, int R, const float *x, int64_t ldx, const float *X, int64_t ldX,
                           int nt, int64_t k, float *out, int64_t ldo) {
    k45_rows(b, rb, R, 1, x, ldx, X, ldX, nt, k, out, ldo);
}

/* The decode-then-dot rows: one float32x4 chain per (row, token), dot_rows' order on the decoded row */
NEON_INLINE void chains_zero(float32x4_t s[4][4], int R, int nt) {
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nt; t++)
            s[r][t] = vdupq_n_f32(0.0f);
}

/* 16 decoded weights w of one row against the tokens' x at xe (token t at xe + t * ldx) */
NEON_INLINE void chains_add16(float32x4_t s[4], const float32x4_t w[4], const float *xe, int64_t ldx, int nt) {
    for (int u = 0; u < 4; u++)
        for (int t = 0; t < nt; t++)
            s[t] = madd(s[t], w[u], vld1q_f32(xe + t * ldx + 4 * u));
}

NEON_INLINE void chains_store(float32x4_t s[4][4], int R, int nt, float *out, int64_t ldo) {
    for (int r = 0; r < R; r++)
        for (int t = 0; t < nt; t++)
            out[t * ldo + r] = hsum4(s[r][t]);
}

NEON_INLINE void q6_k_rows(const uint8_t *b, int64_t rb, int R, const float *x, int64_t ldx, const float *X, int64_t ldX,
                           int nt, int64_t k, float *out, int64_t ldo) {
    (void)X, (void)ldX;
    float32x4_t s[4][4];
    chains_zero(s, R, nt);
    for (int64_t i = 0; i < k / 256; i++)
        for (int r = 0; r < R; r++) {
            const uint8_t *br = b + r * rb + 210 * i;
            float ds[16];
            q6_k_scales(br, ds);
            for (int h = 0; h < 2; h++)
                for (int g = 0; g < 4; g++) {
                    int8x16_t v[2];
                    neon_q6k_group(br, h, g, v);
                    for (int c = 0; c < 2; c++) {
                        float32x4_t w[4];
                        q6_k_weights(v, ds, h, g, c, w);
                        chains_add16(s[r], w, x + 256 * i + 128 * h + 32 * g + 16 * c, ldx, nt);
                    }
                }
        }
    chains_store(s, R, nt, out, ldo);
}

NEON_INLINE void q8_0_rows(const uint8_t *b, int64_t rb, int R, const float *x, int64_t ldx, const float *X, int64_t ldX,
                           int nt, int64_t k, float *out, int64_t ldo) {
    (void)X, (void)ldX;
    float32x4_t s[4][4];
    chains_zero(s, R, nt);
    for (int64_t i = 0; i < k / 32; i++)
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = b + r * rb + 34 * i;
            const float32x4_t d = vdupq_n_f32(neon_half(blk));
            for (int c = 0; c < 2; c++) {
                float32x4_t w[4];
                s8_f32(vld1q_s8((const int8_t *)(blk + 2 + 16 * c)), w);
                for (int u = 0; u < 4; u++)
                    w[u] = vmulq_f32(d, w[u]);
                chains_add16(s[r], w, x + 32 * i + 16 * c, ldx, nt);
            }
        }
    chains_store(s, R, nt, out, ldo);
}

/* R rows a pass (the last few one at a time), constant nt and R so the chains stay in registers */
#define VDOT_PASS(rows, NT, R)                                                                  \
    {                                                                                           \
        int64_t r = 0;                                                                          \
        for (; r + (R) <= nr; r += (R))                                                         \
            rows(b + r * rb, rb, R, x, ldx, X, ldX, NT, k, out + r, ldo);                       \
        for (; r < nr; r++)                                                                     \
            rows(b + r * rb, rb, 1, x, ldx, X, ldX, NT, k, out + r, ldo);                       \
    }

#define VDOT(name, rows)                                                                                          \
    static void name(const void *w, int64_t rb, int64_t nr, const float *x, int64_t ldx, const float *X,          \
                     int64_t ldX, int nt, int64_t k, float *out, int64_t ldo) {                                   \
        const uint8_t *b = w;                                                                                     \
        switch (nt) {                                                                                             \
        case 4: VDOT_PASS(rows, 4, 1) break;                                                                      \
        case 3: VDOT_PASS(rows, 3, 1) break;                                                                      \
        case 2: VDOT_PASS(rows, 2, 2) break;                                                                      \
        default: VDOT_PASS(rows, 1, 4)                                                                            \
        }                                                                                                         \
    }

VDOT(vdot_q4_k, q4_k_rows)
VDOT(vdot_q5_k, q5_k_rows)
VDOT(vdot_q6_k, q6_k_rows)
VDOT(vdot_q8_0, q8_0_rows)

int mtp_kernels_neon(mtp_kernels *kt) {
    MTP_SET_DEQUANT(kt);
    kt->dot = dot_neon;
    kt->dotn = dotn_neon;
    kt->split = split_neon;
    kt->kdot = kdot_neon;
    MTP_SET_VDOT(kt);
    mtp_q8_neon(kt);
    return 1;
}

#else
int mtp_kernels_neon(mtp_kernels *kt) {
    (void)kt;
    return 0;
}
#endif
