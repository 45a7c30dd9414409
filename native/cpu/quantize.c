/* Quantizers for `mtprun convert`: float32 values into ggml blocks (BF16, Q8_0, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q4_K, Q5_K, Q6_K), byte for byte what convert/quantize.py's NumPy path gives (gguf-py's
 * legacy quantizers with ggml's zero signs, and convert/kquants.py), which is llama.cpp's reference
 * (imatrix-free) quantization.
 *
 * Every float operation is the NumPy path's, one by one and in its order: float32 throughout (no
 * double intermediates), no fused multiply-adds (-ffp-contract=off, and no FMA intrinsics),
 * division where it divides, running sums added left to right, round half to even where it uses
 * np.rint, and its float -> integer casts (x86: out of range or NaN gives INT32_MIN, then the low
 * byte). Infinities and overflowing intermediates give its bytes too; NaN inputs are not covered
 * (model weights have none, and the NumPy path's min/max would spread them differently).
 *
 * The K-quants search sub-block scales (ggml's make_qkx2_quants / make_qx_quants) for several
 * sub-blocks at once: values are laid out [position][lane], one lane per sub-block, so each step is
 * one operation over all lanes. A portable version leaves that to the compiler's vectorizer; the
 * AVX2 one (chosen at run time, mtp_quantize_simd) spells it out 8 lanes per instruction. Per-lane
 * arithmetic is the same either way, so both give the same bytes. The 32-value blocks have AVX2
 * versions too.
 *
 * mtp_quantize splits the blocks over threads in fixed chunks; a block's bytes depend only on its
 * values, so the output is the same for any thread count.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "mtp.h"

#define QK 32
#define QK_K 256
#define GROUP_MAX_EPS 1e-15f

#define INLINE static inline __attribute__((always_inline))

/* ---- scalar helpers */

/* NumPy's float32 -> int32 cast on x86 (cvttss2si): truncation; NaN or out of range -> INT32_MIN. */
INLINE int32_t f2i(float f) {
    return (f >= -2147483648.0f && f < 2147483648.0f) ? (int32_t)f : INT32_MIN;
}

/* NumPy's float32 -> uint8 / int8 cast: through int32, keeping the low byte. */
INLINE uint8_t f2u8(float f) { return (uint8_t)(uint32_t)f2i(f); }

/* np.rint (round half to even) without a libm call, so that portable builds vectorize it: below
 * 2^23, |v| + 2^23 rounds to an integer (ties to even) and subtracting 2^23 is exact; the sign is
 * put back (zeros keep theirs); from 2^23 up, and for inf and NaN, v is its own rint. Checked
 * against rintf on all 2^32 floats. */
INLINE float rint_(float v) {
    float a = fabsf(v), r = (a + 8388608.0f) - 8388608.0f;
    r = v < 0.0f ? -r : r;
    r = v == 0.0f ? v : r;
    return a < 8388608.0f ? r : v;
}

/* np.clip: NaN stays NaN. */
INLINE float clampf(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

static inline uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* NumPy's float32 -> float16 (round to nearest even; overflow to inf; NaN keeps its top payload). */
static uint16_t f32_to_f16(float f) {
    uint32_t u = fbits(f);
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    if (a > 0x7f800000) {  /* NaN */
        uint32_t h = 0x7c00 + ((a & 0x7fffff) >> 13);
        return (uint16_t)(sign | (h == 0x7c00 ? h + 1 : h));
    }
    if (a >= 0x47800000)  /* >= 65536, inf */
        return (uint16_t)(sign | 0x7c00);
    uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
    if (e < 113) {  /* below 2^-14: a half subnormal, m * 2^(e - 126) units of 2^-24 */
        uint32_t shift = 126 - e;
        if (shift >= 25)
            return (uint16_t)sign;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((e - 112) << 10) | ((a & 0x7fffff) >> 13), rem = a & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;  /* a carry into the exponent is right, up to inf */
    return (uint16_t)(sign | h);
}

static inline void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* np.max: NaN if any value is NaN. */
static float nan_max(const float *v, int n) {
    float m = v[0];
    for (int i = 1; i < n; i++)
        if (!isnan(m) && (isnan(v[i]) || v[i] > m))
            m = v[i];
    return m;
}

/* ---- BF16 (gguf-py: quiet NaNs, round to nearest even on the bits) */

MTP_CLONES static void q_bf16(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        if ((u & 0x7fffffff) > 0x7f800000)
            u = (u & 0xffff0000u) | (64u << 16);
        uint64_t r = ((uint64_t)u + (0x7fff + ((u >> 16) & 1))) >> 16;
        y[2 * i] = (uint8_t)r;
        y[2 * i + 1] = (uint8_t)(r >> 8);
    }
}

/* ---- 32-value blocks (gguf-py's quantizers; zero signs as ggml's scans give them) */

/* The signed value of largest magnitude, the first one on ties; +0 for an all-zero block. */
INLINE float signed_absmax(const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < QK; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            max = x[i];
        }
    }
    return max;
}

/* min and max, each the first of equal values (ggml's scan). */
INLINE void min_max(const float *x, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < QK; i++) {
        if (x[i] < lo)
            lo = x[i];
        if (x[i] > hi)
            hi = x[i];
    }
    *mn = lo;
    *mx = hi;
}

/* np_roundf of gguf-py: round half away from zero as floor(a) + floor(2 * (a - floor(a))). */
INLINE float round_away(float v) {
    float a = fabsf(v), f = floorf(a);
    float b = f + floorf(2.0f * (a - f));
    return copysignf(b, v);
}

MTP_CLONES static void q8_0_c(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK, y += 34) {
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        put16(y, f32_to_f16(d));
        for (int i = 0; i < QK; i++)
            y[2 + i] = f2u8(round_away(x[i] * id));
    }
}

MTP_CLONES static void q4_0_c(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK, y += 18) {
        float d = signed_absmax(x) / -8.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        uint8_t q[QK];
        for (int i = 0; i < QK; i++) {
            uint8_t v = f2u8(x[i] * id + 8.5f);
            q[i] = v < 15 ? v : 15;
        }
        put16(y, f32_to_f16(d));
        for (int i = 0; i < QK / 2; i++)
            y[2 + i] = (uint8_t)(q[i] | q[i + QK / 2] << 4);
    }
}

MTP_CLONES static void q5_0_c(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK, y += 22) {
        float d = signed_absmax(x) / -16.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        uint8_t q[QK];
        for (int i = 0; i < QK; i++) {
            uint8_t v = f2u8(x[i] * id + 16.5f);
            q[i] = v < 31 ? v : 31;
        }
        uint32_t qh = 0;
        for (int i = 0; i < QK; i++)
            qh |= (uint32_t)((q[i] >> 4) != 0) << i;
        put16(y, f32_to_f16(d));
        for (int i = 0; i < 4; i++)
            y[2 + i] = (uint8_t)(qh >> (8 * i));
        for (int i = 0; i < QK / 2; i++)
            y[6 + i] = (uint8_t)((q[i] & 0xf) | q[i + QK / 2] << 4);
    }
}

MTP_CLONES static void q4_1_c(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK, y += 20) {
        float mn, mx;
        min_max(x, &mn, &mx);
        float d = (mx - mn) / 15.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        uint8_t q[QK];
        for (int i = 0; i < QK; i++) {
            uint8_t v = f2u8((x[i] - mn) * id + 0.5f);
            q[i] = v < 15 ? v : 15;
        }
        put16(y, f32_to_f16(d));
        put16(y + 2, f32_to_f16(mn));
        for (int i = 0; i < QK / 2; i++)
            y[4 + i] = (uint8_t)(q[i] | q[i + QK / 2] << 4);
    }
}

MTP_CLONES static void q5_1_c(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK, y += 24) {
        float mn, mx;
        min_max(x, &mn, &mx);
        float d = (mx - mn) / 31.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        uint8_t q[QK];
        for (int i = 0; i < QK; i++) {
            uint8_t v = f2u8((x[i] - mn) * id + 0.5f);
            q[i] = v < 31 ? v : 31;
        }
        uint32_t qh = 0;
        for (int i = 0; i < QK; i++)
            qh |= (uint32_t)((q[i] >> 4) != 0) << i;
        put16(y, f32_to_f16(d));
        put16(y + 2, f32_to_f16(mn));
        for (int i = 0; i < 4; i++)
            y[4 + i] = (uint8_t)(qh >> (8 * i));
        for (int i = 0; i < QK / 2; i++)
            y[8 + i] = (uint8_t)((q[i] & 0xf) | q[i + QK / 2] << 4);
    }
}

/* ---- K-quants: the search over lanes of sub-blocks
 *
 * Q4_K / Q5_K run make_qkx2_quants on the 8 sub-blocks (32 values) of NSB4 super-blocks at once,
 * Q6_K make_qx_quants (rmse_type 1, no weights) on the 16 sub-blocks (16 values) of one. Each has
 * a portable lane version and an AVX2 one doing the same operations 8 lanes per instruction; the
 * per-super-block remainder (sub-block scales into 6 or 8 bits, fp16 scales) is shared scalar code.
 *
 * Running sums follow the NumPy path's _seq_sum: the first term, the others in order, then + 0
 * (that + 0 turns a -0 total into +0, as a sum started at +0 would), or no + 0 where it sums
 * from_first. A sum started at -0 is one from the first term, since -0 + t is exactly t. */

#define NSB4 2         /* Q4_K / Q5_K super-blocks per pass */
#define L4 (8 * NSB4)  /* their lanes: sub-block j of super-block s is lane 8 s + j */
#define L6 16          /* Q6_K lanes: the 16 sub-blocks of one super-block */

/* The 6-bit scales and mins of one Q4_K / Q5_K super-block from its sub-blocks' (scale, -min):
 * d, dmin, the 12 packed bytes, and each sub-block's dequantized scale and min. */
static void k4_scales(const float *scs, const float *mns, uint16_t *d_out, uint16_t *dmin_out, uint8_t *p,
                      float *dq, float *dm) {
    float max_scale = nan_max(scs, 8), max_min = nan_max(mns, 8);
    max_scale = max_scale > 0.0f ? max_scale : 0.0f;
    max_min = max_min > 0.0f ? max_min : 0.0f;
    float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {  /* uint8_t ls = nearest_int(...): a byte before the MIN(63) */
        int32_t a = f2i(rint_(inv_scale * scs[j])) & 0xff, b = f2i(rint_(inv_min * mns[j])) & 0xff;
        ls[j] = (uint8_t)(a < 63 ? a : 63);
        lm[j] = (uint8_t)(b < 63 ? b : 63);
    }
    uint16_t d = f32_to_f16(max_scale / 63.0f), dmin = f32_to_f16(max_min / 63.0f);
    *d_out = d;
    *dmin_out = dmin;
    for (int j = 0; j < 4; j++) {
        p[j] = (uint8_t)(ls[j] | (ls[j + 4] >> 4) << 6);
        p[j + 4] = (uint8_t)(lm[j] | (lm[j + 4] >> 4) << 6);
        p[j + 8] = (uint8_t)((ls[j + 4] & 0xf) | (lm[j + 4] & 0xf) << 4);
    }
    float df = mtp_f16_to_f32(d), dmf = mtp_f16_to_f32(dmin);
    for (int j = 0; j < 8; j++) {
        dq[j] = df * (float)ls[j];
        dm[j] = dmf * (float)lm[j];
    }
}

/* Q6_K's 8-bit sub-block scales from the search's: the fp16 d, the int8 scales and each sub-block's
 * dequantized scale; 0 when the block is all zeros (max |scale| < GROUP_MAX_EPS), else 1. */
static int q6_scales(const float *scs, uint16_t *d_out, int8_t *sc, float *dq) {
    int top = 0;  /* np.argmax of |scales|: the first largest, or the first NaN */
    float big = fabsf(scs[0]);
    if (!isnan(big))
        for (int j = 1; j < 16; j++) {
            float a = fabsf(scs[j]);
            if (isnan(a)) {
                top = j;
                break;
            }
            if (a > big) {
                big = a;
                top = j;
            }
        }
    float max_scale = scs[top];
    if (fabsf(max_scale) < GROUP_MAX_EPS)
        return 0;
    float iscale = -128.0f / max_scale;
    uint16_t d = f32_to_f16(1.0f / iscale);
    *d_out = d;
    float df = mtp_f16_to_f32(d);
    for (int j = 0; j < 16; j++) {
        int32_t v = f2i(rint_(iscale * scs[j]));
        sc[j] = (int8_t)(uint8_t)(v < 127 ? v : 127);
        dq[j] = df * (float)sc[j];
    }
    return 1;
}

/* One K4 pass, either version: d, dmin, the 12 scale bytes and the 256 levels of NSB4 super-blocks. */
typedef void (*k4_pass_fn)(const float *src, int nmax, float rmin, int nstep, uint16_t *d, uint16_t *dmin,
                           uint8_t (*scales)[12], uint8_t (*levels)[QK_K]);
/* One Q6_K super-block: the 256 levels (0..63) and the scales; 0 for an all-zero block. */
typedef int (*q6_pass_fn)(const float *src, uint16_t *d, int8_t *sc, uint8_t *levels);

/* -- portable lane version */

static void k4_pass_lanes(const float *src, int nmax_i, float rmin, int nstep, uint16_t *d_out,
                          uint16_t *dmin_out, uint8_t (*scales_out)[12], uint8_t (*levels)[QK_K]) {
    const float nmax = (float)nmax_i, rdelta = 0.1f;
    float x[32][L4], w[32][L4], best_l[32][L4], lv[32][L4];
    float acc[L4], lo[L4], hi[L4], sum_w[L4], sum_x[L4], scale[L4], best_err[L4], is[L4], mn_out[L4];
    int flat[L4];
    for (int i = 0; i < 32; i++)
        for (int l = 0; l < L4; l++)
            x[i][l] = src[(l >> 3) * QK_K + (l & 7) * 32 + i];
    for (int l = 0; l < L4; l++)
        acc[l] = -0.0f;  /* -0 + t is t: a sum from the first term */
    for (int i = 0; i < 32; i++)
        for (int l = 0; l < L4; l++)
            acc[l] = acc[l] + x[i][l] * x[i][l];
    for (int l = 0; l < L4; l++) {
        float av = sqrtf((acc[l] + 0.0f) / 32.0f);
        for (int i = 0; i < 32; i++)
            w[i][l] = av + fabsf(x[i][l]);
    }
    /* make_qkx2_quants */
    for (int l = 0; l < L4; l++) {
        lo[l] = hi[l] = x[0][l];
        sum_w[l] = w[0][l];
        sum_x[l] = w[0][l] * x[0][l];
    }
    for (int i = 1; i < 32; i++)
        for (int l = 0; l < L4; l++) {
            lo[l] = x[i][l] < lo[l] ? x[i][l] : lo[l];
            hi[l] = x[i][l] > hi[l] ? x[i][l] : hi[l];
            sum_w[l] = sum_w[l] + w[i][l];
            sum_x[l] = sum_x[l] + w[i][l] * x[i][l];
        }
    for (int l = 0; l < L4; l++) {
        lo[l] = lo[l] > 0.0f ? 0.0f : lo[l];
        flat[l] = hi[l] == lo[l];
        is[l] = nmax / (hi[l] - lo[l]);
        scale[l] = 1.0f / is[l];
    }
    for (int l = 0; l < L4; l++)
        acc[l] = -0.0f;
    for (int i = 0; i < 32; i++)
        for (int l = 0; l < L4; l++) {
            float v = clampf(rint_((x[i][l] - lo[l]) * is[l]), 0.0f, nmax);
            best_l[i][l] = v;
            float t = v * scale[l];  /* the weighted error: ((L * scale + min) - x)^2 * w */
            t = t + lo[l];
            t = t - x[i][l];
            t = t * t;
            t = t * w[i][l];
            acc[l] = acc[l] + t;
        }
    for (int l = 0; l < L4; l++)
        best_err[l] = acc[l] + 0.0f;
    for (int step = 0; step <= nstep; step++) {
        float num = rdelta * (float)step;
        num = rmin + num;
        num = num + nmax;
        float sl[L4], sl2[L4], sxl[L4], ts[L4], tm[L4];
        int better[L4], any = 0;
        for (int l = 0; l < L4; l++) {
            is[l] = num / (hi[l] - lo[l]);
            sl[l] = sl2[l] = sxl[l] = -0.0f;
        }
        for (int i = 0; i < 32; i++)
            for (int l = 0; l < L4; l++) {
                float v = clampf(rint_((x[i][l] - lo[l]) * is[l]), 0.0f, nmax);
                lv[i][l] = v;
                float wl = w[i][l] * v;
                float a = wl * v, b = wl * x[i][l];
                sl[l] = sl[l] + wl;
                sl2[l] = sl2[l] + a;
                sxl[l] = sxl[l] + b;
            }
        for (int l = 0; l < L4; l++) {
            float s_l = sl[l] + 0.0f, s_l2 = sl2[l] + 0.0f, s_xl = sxl[l] + 0.0f;
            float det = sum_w[l] * s_l2 - s_l * s_l;
            float sc = (sum_w[l] * s_xl - sum_x[l] * s_l) / det;
            float mn = (s_l2 * sum_x[l] - s_l * s_xl) / det;
            float alt = s_xl / s_l2;
            int clamp = mn > 0.0f;
            tm[l] = clamp ? 0.0f : mn;
            ts[l] = clamp ? alt : sc;
            better[l] = det > 0.0f;
        }
        for (int l = 0; l < L4; l++)
            acc[l] = -0.0f;
        for (int i = 0; i < 32; i++)
            for (int l = 0; l < L4; l++) {
                float t = lv[i][l] * ts[l];
                t = t + tm[l];
                t = t - x[i][l];
                t = t * t;
                t = t * w[i][l];
                acc[l] = acc[l] + t;
            }
        for (int l = 0; l < L4; l++) {
            float cur = acc[l] + 0.0f;
            better[l] = better[l] & (cur < best_err[l]) & !flat[l];
            best_err[l] = better[l] ? cur : best_err[l];
            scale[l] = better[l] ? ts[l] : scale[l];
            lo[l] = better[l] ? tm[l] : lo[l];
            any |= better[l];
        }
        if (any)
            for (int i = 0; i < 32; i++)
                for (int l = 0; l < L4; l++)
                    best_l[i][l] = better[l] ? lv[i][l] : best_l[i][l];
    }
    for (int l = 0; l < L4; l++) {
        scale[l] = flat[l] ? 0.0f : scale[l];
        mn_out[l] = -lo[l];
    }
    /* the sub-block scales in 6 bits, then every value again against them */
    for (int s = 0; s < NSB4; s++) {
        float dq[8], dm[8];
        k4_scales(scale + 8 * s, mn_out + 8 * s, d_out + s, dmin_out + s, scales_out[s], dq, dm);
        for (int j = 0; j < 8; j++) {
            int l = 8 * s + j;
            uint8_t *q = levels[s] + 32 * j;
            for (int i = 0; i < 32; i++) {
                float v = flat[l] ? 0.0f : best_l[i][l];  /* kept where the 6-bit scale is 0 */
                q[i] = f2u8(dq[j] == 0.0f ? v : clampf(rint_((x[i][l] + dm[j]) / dq[j]), 0.0f, nmax));
            }
        }
    }
}

/* make_qx_quants' level sums for one trial iscale per lane. */
static inline void qx_sums(const float (*x)[L6], const float (*w)[L6], const float (*wx)[L6], const float *is,
                           float nmax, float (*lv)[L6], float *sumlx, float *suml2) {
    float a[L6], b[L6];
    for (int l = 0; l < L6; l++)
        a[l] = b[l] = -0.0f;
    for (int i = 0; i < 16; i++)
        for (int l = 0; l < L6; l++) {
            float v = clampf(rint_(x[i][l] * is[l]), -nmax, nmax - 1.0f);
            lv[i][l] = v;
            float p = wx[i][l] * v, q = w[i][l] * v;
            q = q * v;
            a[l] = a[l] + p;
            b[l] = b[l] + q;
        }
    for (int l = 0; l < L6; l++) {
        sumlx[l] = a[l] + 0.0f;
        suml2[l] = b[l] + 0.0f;
    }
}

static int q6_pass_lanes(const float *src, uint16_t *d, int8_t *sc, uint8_t *levels) {
    const float nmax = 32.0f;
    float x[16][L6], w[16][L6], wx[16][L6], lv[16][L6], best_l[16][L6];
    float amax[L6], vmax[L6], is[L6], scale[L6], best[L6], sumlx[L6], suml2[L6], dq[16];
    for (int i = 0; i < 16; i++)
        for (int l = 0; l < L6; l++)
            x[i][l] = src[l * 16 + i];
    for (int l = 0; l < L6; l++) {
        amax[l] = fabsf(x[0][l]);
        vmax[l] = x[0][l];
    }
    for (int i = 1; i < 16; i++)
        for (int l = 0; l < L6; l++) {
            float a = fabsf(x[i][l]);
            int gt = a > amax[l];
            amax[l] = gt ? a : amax[l];
            vmax[l] = gt ? x[i][l] : vmax[l];
        }
    for (int i = 0; i < 16; i++)
        for (int l = 0; l < L6; l++) {
            w[i][l] = x[i][l] * x[i][l];
            wx[i][l] = w[i][l] * x[i][l];
        }
    for (int l = 0; l < L6; l++)
        is[l] = -nmax / vmax[l];
    qx_sums((const float (*)[L6])x, (const float (*)[L6])w, (const float (*)[L6])wx, is, nmax, best_l, sumlx, suml2);
    for (int l = 0; l < L6; l++) {
        float s = sumlx[l] / suml2[l];
        scale[l] = suml2[l] != 0.0f ? s : 0.0f;
        best[l] = scale[l] * sumlx[l];
    }
    for (int step = -9; step <= 9; step++) {
        if (step == 0)
            continue;
        float num = 0.1f * (float)step;
        num = -(nmax + num);
        for (int l = 0; l < L6; l++)
            is[l] = num / vmax[l];
        qx_sums((const float (*)[L6])x, (const float (*)[L6])w, (const float (*)[L6])wx, is, nmax, lv, sumlx, suml2);
        int better[L6], any = 0;
        for (int l = 0; l < L6; l++) {
            better[l] = (suml2[l] > 0.0f) & (sumlx[l] * sumlx[l] > best[l] * suml2[l]);
            float s = sumlx[l] / suml2[l];
            scale[l] = better[l] ? s : scale[l];
            best[l] = better[l] ? scale[l] * sumlx[l] : best[l];
            any |= better[l];
        }
        if (any)
            for (int i = 0; i < 16; i++)
                for (int l = 0; l < L6; l++)
                    best_l[i][l] = better[l] ? lv[i][l] : best_l[i][l];
    }
    /* a sub-block whose max |x| is below GROUP_MAX_EPS gets scale 0 and levels 0 */
    for (int l = 0; l < L6; l++)
        scale[l] = amax[l] < GROUP_MAX_EPS ? 0.0f : scale[l];
    if (!q6_scales(scale, d, sc, dq))
        return 0;
    for (int l = 0; l < L6; l++)
        for (int i = 0; i < 16; i++) {
            float keep = amax[l] < GROUP_MAX_EPS ? 0.0f : best_l[i][l] + nmax;
            levels[16 * l + i] = f2u8(dq[l] == 0.0f ? keep : clampf(rint_(x[i][l] / dq[l]), -32.0f, 31.0f) + 32.0f);
        }
    return 1;
}

/* -- AVX2 version: the same operations, 8 lanes per instruction (no FMA) */

#if defined(MTP_X86)
#include <immintrin.h>
#define QAVX2 __attribute__((target("avx2")))
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* clampf: max_ps/min_ps return their second operand on NaN or equal values, as the ternaries do. */
#define VCLAMP(v, lo, hi) _mm256_min_ps((hi), _mm256_max_ps((lo), (v)))
#define VBLEND(a, b, mask) _mm256_blendv_ps((a), (b), (mask))  /* mask ? b : a */

/* levels as bytes: NumPy's float -> int32 -> low byte, as cvttps2dq gives INT32_MIN for NaN and
 * out of range; v[i] holds lane j's level of position i; out[j * stride + i]. */
QAVX2 static inline void store_levels(const __m256 *v, int n, uint8_t *out, int stride) {
    int32_t t[32][8] __attribute__((aligned(32)));
    for (int i = 0; i < n; i++)
        _mm256_store_si256((__m256i *)t[i], _mm256_cvttps_epi32(v[i]));
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < n; i++)
            out[j * stride + i] = (uint8_t)t[i][j];
}

/* x[i * nv + v] = position i of lanes 8 v .. 8 v + 7, lane j being the sub-block at src + (8 v + j) * len. */
QAVX2 static inline void load_lanes(const float *src, int len, int nv, __m256 *x) {
    float t[8] __attribute__((aligned(32)));
    for (int v = 0; v < nv; v++)
        for (int i = 0; i < len; i++) {
            for (int j = 0; j < 8; j++)
                t[j] = src[(8 * v + j) * len + i];
            x[i * nv + v] = _mm256_load_ps(t);
        }
}

QAVX2 static void k4_pass_avx2(const float *src, int nmax_i, float rmin, int nstep, uint16_t *d_out,
                               uint16_t *dmin_out, uint8_t (*scales_out)[12], uint8_t (*levels)[QK_K]) {
    enum { NV = NSB4 };
    const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f), nmax = _mm256_set1_ps((float)nmax_i);
    __m256 x[32][NV], w[32][NV], bl[32][NV], lv[32][NV];
    __m256 lo[NV], hi[NV], sum_w[NV], sum_x[NV], scale[NV], best_err[NV], is[NV], flat[NV];
    load_lanes(src, 32, NV, &x[0][0]);
    for (int v = 0; v < NV; v++) {
        __m256 acc = _mm256_mul_ps(x[0][v], x[0][v]);
        for (int i = 1; i < 32; i++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(x[i][v], x[i][v]));
        __m256 av = _mm256_sqrt_ps(_mm256_div_ps(_mm256_add_ps(acc, zero), _mm256_set1_ps(32.0f)));
        for (int i = 0; i < 32; i++)
            w[i][v] = _mm256_add_ps(av, _mm256_andnot_ps(sign, x[i][v]));
        lo[v] = hi[v] = x[0][v];
        sum_w[v] = w[0][v];
        sum_x[v] = _mm256_mul_ps(w[0][v], x[0][v]);
        for (int i = 1; i < 32; i++) {
            lo[v] = _mm256_min_ps(x[i][v], lo[v]);  /* x < lo ? x : lo */
            hi[v] = _mm256_max_ps(x[i][v], hi[v]);  /* x > hi ? x : hi */
            sum_w[v] = _mm256_add_ps(sum_w[v], w[i][v]);
            sum_x[v] = _mm256_add_ps(sum_x[v], _mm256_mul_ps(w[i][v], x[i][v]));
        }
        lo[v] = _mm256_min_ps(zero, lo[v]);  /* lo > 0 ? 0 : lo */
        flat[v] = _mm256_cmp_ps(hi[v], lo[v], _CMP_EQ_OQ);
        is[v] = _mm256_div_ps(nmax, _mm256_sub_ps(hi[v], lo[v]));
        scale[v] = _mm256_div_ps(_mm256_set1_ps(1.0f), is[v]);
        __m256 acc2 = zero;
        for (int i = 0; i < 32; i++) {
            __m256 l = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(x[i][v], lo[v]), is[v]), RNE);
            l = VCLAMP(l, zero, nmax);
            bl[i][v] = l;
            __m256 t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(l, scale[v]), lo[v]), x[i][v]);
            t = _mm256_mul_ps(_mm256_mul_ps(t, t), w[i][v]);
            acc2 = i ? _mm256_add_ps(acc2, t) : t;
        }
        best_err[v] = _mm256_add_ps(acc2, zero);
    }
    for (int step = 0; step <= nstep; step++) {
        float num = 0.1f * (float)step;
        num = rmin + num;
        num = num + (float)nmax_i;
        const __m256 vnum = _mm256_set1_ps(num);
        __m256 sl[NV], sl2[NV], sxl[NV], ts[NV], tm[NV], ok[NV], acc[NV];
        for (int v = 0; v < NV; v++)
            is[v] = _mm256_div_ps(vnum, _mm256_sub_ps(hi[v], lo[v]));
        for (int i = 0; i < 32; i++)
            for (int v = 0; v < NV; v++) {
                __m256 l = _mm256_round_ps(_mm256_mul_ps(_mm256_sub_ps(x[i][v], lo[v]), is[v]), RNE);
                l = VCLAMP(l, zero, nmax);
                lv[i][v] = l;
                __m256 wl = _mm256_mul_ps(w[i][v], l);
                __m256 a = _mm256_mul_ps(wl, l), b = _mm256_mul_ps(wl, x[i][v]);
                if (i) {
                    sl[v] = _mm256_add_ps(sl[v], wl);
                    sl2[v] = _mm256_add_ps(sl2[v], a);
                    sxl[v] = _mm256_add_ps(sxl[v], b);
                } else {
                    sl[v] = wl;
                    sl2[v] = a;
                    sxl[v] = b;
                }
            }
        for (int v = 0; v < NV; v++) {
            __m256 s_l = _mm256_add_ps(sl[v], zero), s_l2 = _mm256_add_ps(sl2[v], zero);
            __m256 s_xl = _mm256_add_ps(sxl[v], zero);
            __m256 det = _mm256_sub_ps(_mm256_mul_ps(sum_w[v], s_l2), _mm256_mul_ps(s_l, s_l));
            __m256 sc = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w[v], s_xl), _mm256_mul_ps(sum_x[v], s_l)), det);
            __m256 mn = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(s_l2, sum_x[v]), _mm256_mul_ps(s_l, s_xl)), det);
            __m256 clamp = _mm256_cmp_ps(mn, zero, _CMP_GT_OQ);
            tm[v] = VBLEND(mn, zero, clamp);
            ts[v] = VBLEND(sc, _mm256_div_ps(s_xl, s_l2), clamp);
            ok[v] = _mm256_cmp_ps(det, zero, _CMP_GT_OQ);
        }
        for (int i = 0; i < 32; i++)
            for (int v = 0; v < NV; v++) {
                __m256 t = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(lv[i][v], ts[v]), tm[v]), x[i][v]);
                t = _mm256_mul_ps(_mm256_mul_ps(t, t), w[i][v]);
                acc[v] = i ? _mm256_add_ps(acc[v], t) : t;
            }
        int any = 0;
        for (int v = 0; v < NV; v++) {
            __m256 cur = _mm256_add_ps(acc[v], zero);
            __m256 better = _mm256_and_ps(ok[v], _mm256_cmp_ps(cur, best_err[v], _CMP_LT_OQ));
            better = _mm256_andnot_ps(flat[v], better);
            best_err[v] = VBLEND(best_err[v], cur, better);
            scale[v] = VBLEND(scale[v], ts[v], better);
            lo[v] = VBLEND(lo[v], tm[v], better);
            ok[v] = better;
            any |= _mm256_movemask_ps(better);
        }
        if (any)
            for (int i = 0; i < 32; i++)
                for (int v = 0; v < NV; v++)
                    bl[i][v] = VBLEND(bl[i][v], lv[i][v], ok[v]);
    }
    for (int v = 0; v < NV; v++) {
        float scs[8] __attribute__((aligned(32))), mns[8] __attribute__((aligned(32)));
        float dq[8] __attribute__((aligned(32))), dm[8] __attribute__((aligned(32)));
        _mm256_store_ps(scs, VBLEND(scale[v], zero, flat[v]));
        _mm256_store_ps(mns, _mm256_xor_ps(lo[v], sign));
        k4_scales(scs, mns, d_out + v, dmin_out + v, scales_out[v], dq, dm);
        const __m256 vdq = _mm256_load_ps(dq), vdm = _mm256_load_ps(dm);
        const __m256 keep = _mm256_cmp_ps(vdq, zero, _CMP_EQ_OQ);
        __m256 q[32];
        for (int i = 0; i < 32; i++) {
            __m256 l = _mm256_round_ps(_mm256_div_ps(_mm256_add_ps(x[i][v], vdm), vdq), RNE);
            l = VCLAMP(l, zero, nmax);
            q[i] = VBLEND(l, VBLEND(bl[i][v], zero, flat[v]), keep);
        }
        store_levels(q, 32, levels[v], 32);
    }
}

QAVX2 static void q6_sums_avx2(const __m256 (*x)[2], const __m256 (*w)[2], const __m256 (*wx)[2], const __m256 *is,
                               __m256 (*lv)[2], __m256 *sumlx, __m256 *suml2) {
    const __m256 zero = _mm256_setzero_ps(), lo = _mm256_set1_ps(-32.0f), hi = _mm256_set1_ps(31.0f);
    __m256 a[2], b[2];
    for (int i = 0; i < 16; i++)
        for (int v = 0; v < 2; v++) {
            __m256 l = VCLAMP(_mm256_round_ps(_mm256_mul_ps(x[i][v], is[v]), RNE), lo, hi);
            lv[i][v] = l;
            __m256 p = _mm256_mul_ps(wx[i][v], l), q = _mm256_mul_ps(_mm256_mul_ps(w[i][v], l), l);
            a[v] = i ? _mm256_add_ps(a[v], p) : p;
            b[v] = i ? _mm256_add_ps(b[v], q) : q;
        }
    for (int v = 0; v < 2; v++) {
        sumlx[v] = _mm256_add_ps(a[v], zero);
        suml2[v] = _mm256_add_ps(b[v], zero);
    }
}

QAVX2 static int q6_pass_avx2(const float *src, uint16_t *d, int8_t *sc, uint8_t *levels) {
    const __m256 zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f), nmax = _mm256_set1_ps(32.0f);
    const __m256 eps = _mm256_set1_ps(GROUP_MAX_EPS);
    __m256 x[16][2], w[16][2], wx[16][2], lv[16][2], bl[16][2];
    __m256 amax[2], vmax[2], is[2], scale[2], best[2], sumlx[2], suml2[2], tiny[2];
    load_lanes(src, 16, 2, &x[0][0]);
    for (int v = 0; v < 2; v++) {
        amax[v] = _mm256_andnot_ps(sign, x[0][v]);
        vmax[v] = x[0][v];
        for (int i = 1; i < 16; i++) {
            __m256 a = _mm256_andnot_ps(sign, x[i][v]), gt = _mm256_cmp_ps(a, amax[v], _CMP_GT_OQ);
            amax[v] = VBLEND(amax[v], a, gt);
            vmax[v] = VBLEND(vmax[v], x[i][v], gt);
        }
        for (int i = 0; i < 16; i++) {
            w[i][v] = _mm256_mul_ps(x[i][v], x[i][v]);
            wx[i][v] = _mm256_mul_ps(w[i][v], x[i][v]);
        }
        is[v] = _mm256_div_ps(_mm256_set1_ps(-32.0f), vmax[v]);
    }
    q6_sums_avx2((const __m256 (*)[2])x, (const __m256 (*)[2])w, (const __m256 (*)[2])wx, is, bl, sumlx, suml2);
    for (int v = 0; v < 2; v++) {
        scale[v] = VBLEND(zero, _mm256_div_ps(sumlx[v], suml2[v]), _mm256_cmp_ps(suml2[v], zero, _CMP_NEQ_UQ));
        best[v] = _mm256_mul_ps(scale[v], sumlx[v]);
    }
    for (int step = -9; step <= 9; step++) {
        if (step == 0)
            continue;
        float num = 0.1f * (float)step;
        num = -(32.0f + num);
        for (int v = 0; v < 2; v++)
            is[v] = _mm256_div_ps(_mm256_set1_ps(num), vmax[v]);
        q6_sums_avx2((const __m256 (*)[2])x, (const __m256 (*)[2])w, (const __m256 (*)[2])wx, is, lv, sumlx, suml2);
        __m256 better[2];
        int any = 0;
        for (int v = 0; v < 2; v++) {
            better[v] = _mm256_and_ps(_mm256_cmp_ps(suml2[v], zero, _CMP_GT_OQ),
                                      _mm256_cmp_ps(_mm256_mul_ps(sumlx[v], sumlx[v]), _mm256_mul_ps(best[v], suml2[v]),
                                                    _CMP_GT_OQ));
            scale[v] = VBLEND(scale[v], _mm256_div_ps(sumlx[v], suml2[v]), better[v]);
            best[v] = VBLEND(best[v], _mm256_mul_ps(scale[v], sumlx[v]), better[v]);
            any |= _mm256_movemask_ps(better[v]);
        }
        if (any)
            for (int i = 0; i < 16; i++)
                for (int v = 0; v < 2; v++)
                    bl[i][v] = VBLEND(bl[i][v], lv[i][v], better[v]);
    }
    float scs[16] __attribute__((aligned(32))), dq[16] __attribute__((aligned(32)));
    for (int v = 0; v < 2; v++) {
        tiny[v] = _mm256_cmp_ps(amax[v], eps, _CMP_LT_OQ);
        _mm256_store_ps(scs + 8 * v, VBLEND(scale[v], zero, tiny[v]));
    }
    if (!q6_scales(scs, d, sc, dq))
        return 0;
    const __m256 lo = _mm256_set1_ps(-32.0f), hi = _mm256_set1_ps(31.0f);
    for (int v = 0; v < 2; v++) {
        const __m256 vdq = _mm256_load_ps(dq + 8 * v), keep = _mm256_cmp_ps(vdq, zero, _CMP_EQ_OQ);
        __m256 q[16];
        for (int i = 0; i < 16; i++) {
            __m256 l = _mm256_add_ps(VCLAMP(_mm256_round_ps(_mm256_div_ps(x[i][v], vdq), RNE), lo, hi), nmax);
            __m256 k = VBLEND(_mm256_add_ps(bl[i][v], nmax), zero, tiny[v]);
            q[i] = VBLEND(l, k, keep);
        }
        store_levels(q, 16, levels + 128 * v, 16);
    }
    return 1;
}
/* -- the 32-value blocks, 32 values per 4 instructions */

/* 32 floats to bytes as NumPy casts them (to int32, keep the low byte): the mask makes the
 * saturating packs exact, the permute undoes their per-128-bit-lane order. */
QAVX2 static inline __m256i low_bytes32(const __m256 *v) {
    const __m256i m = _mm256_set1_epi32(0xff);
    __m256i a = _mm256_and_si256(_mm256_cvttps_epi32(v[0]), m), b = _mm256_and_si256(_mm256_cvttps_epi32(v[1]), m);
    __m256i c = _mm256_and_si256(_mm256_cvttps_epi32(v[2]), m), d = _mm256_and_si256(_mm256_cvttps_epi32(v[3]), m);
    __m256i r = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
    return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QAVX2 static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

QAVX2 static inline float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

/* Bit i set where x[i] == value (any zero equals any zero). */
QAVX2 static inline uint32_t eq_mask32(const __m256 *v, float value) {
    const __m256 t = _mm256_set1_ps(value);
    uint32_t m = 0;
    for (int k = 0; k < 4; k++)
        m |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v[k], t, _CMP_EQ_OQ)) << (8 * k);
    return m;
}

QAVX2 static inline void load32(const float *x, __m256 *v) {
    for (int k = 0; k < 4; k++)
        v[k] = _mm256_loadu_ps(x + 8 * k);
}

/* signed_absmax: the first value of largest magnitude, +0 for an all-zero block. */
QAVX2 static inline float signed_absmax_avx2(const float *x, const __m256 *v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a[4];
    for (int k = 0; k < 4; k++)
        a[k] = _mm256_andnot_ps(sign, v[k]);
    float amax = hmax8(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
    return amax == 0.0f ? 0.0f : x[__builtin_ctz(eq_mask32(a, amax))];
}

/* min_max: ggml's scan keeps the first of equal values, which only shows for zeros. */
QAVX2 static inline void min_max_avx2(const float *x, const __m256 *v, float *mn, float *mx) {
    float lo = hmin8(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
    float hi = hmax8(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
    if (lo == 0.0f || hi == 0.0f) {
        float z = x[__builtin_ctz(eq_mask32(v, 0.0f))];
        lo = lo == 0.0f ? z : lo;
        hi = hi == 0.0f ? z : hi;
    }
    *mn = lo;
    *mx = hi;
}

QAVX2 static void q8_0_avx2(const float *x, uint8_t *y, int64_t nb) {
    const __m256 sign = _mm256_set1_ps(-0.0f), two = _mm256_set1_ps(2.0f);
    for (int64_t b = 0; b < nb; b++, x += QK, y += 34) {
        __m256 v[4], r[4];
        load32(x, v);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        float d = hmax8(m) / 127.0f;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        const __m256 vid = _mm256_set1_ps(id);
        for (int k = 0; k < 4; k++) {  /* round_away */
            __m256 p = _mm256_mul_ps(v[k], vid), a = _mm256_andnot_ps(sign, p);
            __m256 f = _mm256_floor_ps(a);
            __m256 t = _mm256_add_ps(f, _mm256_floor_ps(_mm256_mul_ps(two, _mm256_sub_ps(a, f))));
            r[k] = _mm256_or_ps(t, _mm256_and_ps(p, sign));
        }
        put16(y, f32_to_f16(d));
        _mm256_storeu_si256((__m256i *)(y + 2), low_bytes32(r));
    }
}

/* q[i] | q[i + 16] << 4 for 16 bytes, the q below 32 (the high byte's fifth bit is masked off). */
QAVX2 static inline __m128i nibbles(__m256i q) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    return _mm_or_si128(_mm_and_si128(lo, _mm_set1_epi8(0x0f)),
                        _mm_and_si128(_mm_slli_epi16(hi, 4), _mm_set1_epi8((char)0xf0)));
}

QAVX2 static inline void q_0_avx2(const float *x, uint8_t *y, int64_t nb, int bits) {
    const int ts = bits == 4 ? 18 : 22;
    const float off = bits == 4 ? 8.5f : 16.5f, div = bits == 4 ? -8.0f : -16.0f;
    const __m256i top = _mm256_set1_epi8(bits == 4 ? 15 : 31);
    for (int64_t b = 0; b < nb; b++, x += QK, y += ts) {
        __m256 v[4], r[4];
        load32(x, v);
        float d = signed_absmax_avx2(x, v) / div;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        const __m256 vid = _mm256_set1_ps(id), voff = _mm256_set1_ps(off);
        for (int k = 0; k < 4; k++)
            r[k] = _mm256_add_ps(_mm256_mul_ps(v[k], vid), voff);
        __m256i q = _mm256_min_epu8(low_bytes32(r), top);
        put16(y, f32_to_f16(d));
        if (bits == 5) {
            uint32_t qh = (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(q, _mm256_set1_epi8(15)));
            memcpy(y + 2, &qh, 4);  /* little-endian, as packbits(bitorder="little") */
        }
        _mm_storeu_si128((__m128i *)(y + ts - 16), nibbles(q));
    }
}

QAVX2 static inline void q_1_avx2(const float *x, uint8_t *y, int64_t nb, int bits) {
    const int ts = bits == 4 ? 20 : 24;
    const float div = bits == 4 ? 15.0f : 31.0f;
    const __m256i top = _mm256_set1_epi8(bits == 4 ? 15 : 31);
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int64_t b = 0; b < nb; b++, x += QK, y += ts) {
        __m256 v[4], r[4];
        load32(x, v);
        float mn, mx;
        min_max_avx2(x, v, &mn, &mx);
        float d = (mx - mn) / div;
        float id = d == 0.0f ? 0.0f : 1.0f / d;
        const __m256 vid = _mm256_set1_ps(id), vmn = _mm256_set1_ps(mn);
        for (int k = 0; k < 4; k++)
            r[k] = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], vmn), vid), half);
        __m256i q = _mm256_min_epu8(low_bytes32(r), top);
        put16(y, f32_to_f16(d));
        put16(y + 2, f32_to_f16(mn));
        if (bits == 5) {
            uint32_t qh = (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(q, _mm256_set1_epi8(15)));
            memcpy(y + 4, &qh, 4);
        }
        _mm_storeu_si128((__m128i *)(y + ts - 16), nibbles(q));
    }
}

QAVX2 static void q4_0_avx2(const float *x, uint8_t *y, int64_t nb) { q_0_avx2(x, y, nb, 4); }
QAVX2 static void q5_0_avx2(const float *x, uint8_t *y, int64_t nb) { q_0_avx2(x, y, nb, 5); }
QAVX2 static void q4_1_avx2(const float *x, uint8_t *y, int64_t nb) { q_1_avx2(x, y, nb, 4); }
QAVX2 static void q5_1_avx2(const float *x, uint8_t *y, int64_t nb) { q_1_avx2(x, y, nb, 5); }
#endif

/* -- which version runs (mtp_quantize_simd) */

typedef void (*quant_fn)(const float *x, uint8_t *y, int64_t nblocks);

static k4_pass_fn k4_pass = k4_pass_lanes;
static q6_pass_fn q6_pass = q6_pass_lanes;
static quant_fn q8_0 = q8_0_c, q4_0 = q4_0_c, q5_0 = q5_0_c, q4_1 = q4_1_c, q5_1 = q5_1_c;
static int quant_simd = -1;

/* The best available at most `level` (0 portable, 1 AVX2); returns what was chosen. */
int mtp_quantize_simd(int level) {
    int avx2 = 0;
#if defined(MTP_X86)
    __builtin_cpu_init();
    avx2 = level >= 1 && __builtin_cpu_supports("avx2");
    k4_pass = avx2 ? k4_pass_avx2 : k4_pass_lanes;
    q6_pass = avx2 ? q6_pass_avx2 : q6_pass_lanes;
    q8_0 = avx2 ? q8_0_avx2 : q8_0_c;
    q4_0 = avx2 ? q4_0_avx2 : q4_0_c;
    q5_0 = avx2 ? q5_0_avx2 : q5_0_c;
    q4_1 = avx2 ? q4_1_avx2 : q4_1_c;
    q5_1 = avx2 ? q5_1_avx2 : q5_1_c;
#else
    (void)level;
#endif
    quant_simd = avx2;
    return avx2;
}

/* -- block layouts */

/* The input of the pass over super-blocks [b0, b0 + nsb): in place, or a short tail padded with
 * zeros (whose results are dropped). */
static inline const float *pass_input(const float *src, int64_t b0, int64_t nb, int64_t nsb, float *pad) {
    if (nb - b0 >= nsb)
        return src + b0 * QK_K;
    memset(pad, 0, (size_t)nsb * QK_K * sizeof(float));
    memcpy(pad, src + b0 * QK_K, (size_t)(nb - b0) * QK_K * sizeof(float));
    return pad;
}

/* The quants of one super-block after its d, dmin and scales (Q4_K: 4-bit; Q5_K: 4 bits + a high bit). */
static void pack_q4_k(const uint8_t *lv, uint8_t *o) {
    for (int g = 0; g < 4; g++)  /* 64-value groups: the low nibbles the first 32, the high the next */
        for (int i = 0; i < 32; i++)
            o[32 * g + i] = (uint8_t)(lv[64 * g + i] | lv[64 * g + 32 + i] << 4);
}

static void pack_q5_k(const uint8_t *lv, uint8_t *o) {
    for (int i = 0; i < 32; i++) {  /* the fifth bit of sub-block j is bit j of qh */
        uint8_t h = 0;
        for (int j = 0; j < 8; j++)
            h |= (uint8_t)((lv[32 * j + i] >> 4) << j);
        o[i] = h;
    }
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < 32; i++)
            o[32 + 32 * g + i] = (uint8_t)((lv[64 * g + i] & 0xf) | (lv[64 * g + 32 + i] & 0xf) << 4);
}

/* Q4_K and Q5_K: the scale search over NSB4 super-blocks at a time, then each one's bytes. */
static void k4_blocks(const float *x, uint8_t *y, int64_t nb, int nmax, float rmin, int nstep, int block_bytes,
                      void (*pack)(const uint8_t *lv, uint8_t *o)) {
    float pad[NSB4 * QK_K];
    for (int64_t b0 = 0; b0 < nb; b0 += NSB4) {
        uint16_t d[NSB4], dmin[NSB4];
        uint8_t scales[NSB4][12], lv[NSB4][QK_K];
        k4_pass(pass_input(x, b0, nb, NSB4, pad), nmax, rmin, nstep, d, dmin, scales, lv);
        for (int64_t s = 0; s < NSB4 && b0 + s < nb; s++) {
            uint8_t *o = y + (b0 + s) * block_bytes;
            put16(o, d[s]);
            put16(o + 2, dmin[s]);
            memcpy(o + 4, scales[s], 12);
            pack(lv[s], o + 16);
        }
    }
}

static void q4_k(const float *x, uint8_t *y, int64_t nb) { k4_blocks(x, y, nb, 15, -1.0f, 20, 144, pack_q4_k); }

static void q5_k(const float *x, uint8_t *y, int64_t nb) { k4_blocks(x, y, nb, 31, -0.5f, 15, 176, pack_q5_k); }

static void q6_k(const float *x, uint8_t *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += QK_K, y += 210) {
        uint16_t d;
        int8_t sc[16];
        uint8_t q[QK_K];
        if (!q6_pass(x, &d, sc, q)) {
            memset(y, 0, 210);
            continue;
        }
        for (int h = 0; h < 2; h++) {  /* ql: low nibbles of quarters 0|2, 1|3; qh: the 2 high bits */
            const uint8_t *qq = q + 128 * h;
            for (int i = 0; i < 32; i++) {
                y[64 * h + i] = (uint8_t)((qq[i] & 0xf) | (qq[64 + i] & 0xf) << 4);
                y[64 * h + 32 + i] = (uint8_t)((qq[32 + i] & 0xf) | (qq[96 + i] & 0xf) << 4);
                y[128 + 32 * h + i] = (uint8_t)((qq[i] >> 4) | (qq[32 + i] >> 4) << 2 | (qq[64 + i] >> 4) << 4 |
                                                (qq[96 + i] >> 4) << 6);
            }
        }
        memcpy(y + 192, sc, 16);
        put16(y + 208, d);
    }
}

/* ---- dispatch and threads */

typedef struct {
    quant_fn fn;
    int64_t block, type_size;
} quant_type;

static int quant_lookup(int type, quant_type *q) {
    switch (type) {
    case T_BF16: *q = (quant_type){q_bf16, 1, 2}; return 0;
    case T_Q8_0: *q = (quant_type){q8_0, QK, 34}; return 0;
    case T_Q4_0: *q = (quant_type){q4_0, QK, 18}; return 0;
    case T_Q4_1: *q = (quant_type){q4_1, QK, 20}; return 0;
    case T_Q5_0: *q = (quant_type){q5_0, QK, 22}; return 0;
    case T_Q5_1: *q = (quant_type){q5_1, QK, 24}; return 0;
    case T_Q4_K: *q = (quant_type){q4_k, QK_K, 144}; return 0;
    case T_Q5_K: *q = (quant_type){q5_k, QK_K, 176}; return 0;
    case T_Q6_K: *q = (quant_type){q6_k, QK_K, 210}; return 0;
    default: return -1;
    }
}

#define CHUNK_VALUES 65536  /* values per unit of work handed to a thread */
#define MAX_THREADS 256

typedef struct {
    quant_type q;
    const float *src;
    uint8_t *dst;
    int64_t nblocks, chunk;
    atomic_llong next;
} quant_job;

static void *quant_worker(void *arg) {
    quant_job *j = arg;
    for (;;) {
        int64_t start = (int64_t)atomic_fetch_add(&j->next, 1) * j->chunk;
        if (start >= j->nblocks)
            return NULL;
        int64_t n = j->nblocks - start < j->chunk ? j->nblocks - start : j->chunk;
        j->q.fn(j->src + start * j->q.block, j->dst + start * j->q.type_size, n);
    }
}

static pthread_once_t quant_init = PTHREAD_ONCE_INIT;
static void quant_default(void) {
    if (quant_simd < 0)  /* unless mtp_quantize_simd chose already */
        mtp_quantize_simd(99);
}

/* 1 if `type` can be quantized here. */
int mtp_quantize_supported(int type) {
    quant_type q;
    return quant_lookup(type, &q) == 0;
}

/* n float32 values (whole blocks of `type`) into dst (n / block * type_size bytes), on up to
 * n_threads threads (the caller's included). 0, or -1 for an unsupported type, -2 for a partial block. */
int mtp_quantize(int type, const float *src, void *dst, int64_t n, int n_threads) {
    quant_job j;
    pthread_once(&quant_init, quant_default);
    if (quant_lookup(type, &j.q) != 0)
        return -1;
    if (n < 0 || n % j.q.block != 0)
        return -2;
    j.src = src;
    j.dst = dst;
    j.nblocks = n / j.q.block;
    j.chunk = CHUNK_VALUES / j.q.block;
    atomic_init(&j.next, 0);
    int64_t chunks = (j.nblocks + j.chunk - 1) / j.chunk;
    int nth = n_threads < 1 ? 1 : n_threads > MAX_THREADS ? MAX_THREADS : n_threads;
    if (nth > chunks)
        nth = chunks < 1 ? 1 : (int)chunks;
    pthread_t th[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < nth; t++, started++)
        if (pthread_create(&th[started], NULL, quant_worker, &j) != 0)
            break;  /* fewer threads: the others take the chunks */
    quant_worker(&j);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    return 0;
}
